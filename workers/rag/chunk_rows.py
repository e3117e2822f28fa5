"""Chunk rows and the corpus statistics BM25 reads (rag.corpora, rag.lexemes), kept in step.

A document's chunks are inserted or deleted together with the lexeme counts and corpus totals
they change, so the keyword leg's idf and average length always describe the committed chunks.
Every write changes the statistics in one pass: the net change of each lexeme in sorted order,
then the corpus row (its totals and its version, what the results cache keys on). Concurrent
writes of one tenant so lock shared rows in one order and cannot deadlock; a write that
decremented some lexemes and then incremented others could (tests/integration/test_rag_store).
Writers lock their document row before this pass.

Adding chunks is one statement (`added`: the chunks, their lexemes, the corpus row), which a new
document's create extends with its row and its event: a create is one round trip with no
transaction around it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import asyncpg

from workers.rag.records import EmbeddedChunks, NewDocument


@dataclass(frozen=True)
class Counted:
    """Statistics of some chunks (or a change of them: counts may be negative): their lexemes
    (sorted) with the number of those chunks holding each, the chunks' count and the sum of
    their tsvector lengths."""

    lexemes: list[str]
    holding: list[int]
    chunks: int
    length: int

    def minus(self, other: Counted) -> Counted:
        net = dict(zip(self.lexemes, self.holding, strict=True))
        for lexeme, n in zip(other.lexemes, other.holding, strict=True):
            net[lexeme] = net.get(lexeme, 0) - n
        changed = sorted(k for k, v in net.items() if v)
        return Counted(
            changed,
            [net[k] for k in changed],
            self.chunks - other.chunks,
            self.length - other.length,
        )


NOTHING = Counted([], [], 0, 0)

# Statistics of the rows of `{rows}` (a FROM item with a `tsv` column).
_COUNT = (
    "SELECT count(*) AS chunks, coalesce(sum(length(tsv)), 0) AS length,"
    " ARRAY(SELECT lexeme FROM ({lexemes}) l) AS lexemes, ARRAY(SELECT n FROM ({lexemes}) l)"
    " AS holding FROM {rows}"
)
_LEXEMES = "SELECT u.lexeme, count(*) AS n FROM {rows}, unnest(tsv) u GROUP BY 1 ORDER BY 1"
_DOCUMENT_CHUNKS = "(SELECT tsv FROM rag.chunks WHERE tenant = $1 AND document_id = $2) c"


def _counted(row: asyncpg.Record) -> Counted:
    return Counted(list(row["lexemes"]), list(row["holding"]), row["chunks"], row["length"])


def _statistics(tenant: str, added: str, change: Counted, first: int) -> tuple[str, list[Any]]:
    """CTEs `lexeme` (the net change of each lexeme, sorted; RETURNING lexeme, chunks) and
    `corpus` (RETURNING version) for the chunks of the CTE `added` (a `tsv` column; "" for
    none) plus `change`; parameters numbered from `first`."""
    p = [f"${first + i}" for i in range(5)]
    plus = added_chunks = added_length = ""
    if added:  # a CTE's name
        plus = f"SELECT u.lexeme, count(*) AS n FROM {added}, unnest(tsv) u GROUP BY 1 UNION ALL "  # noqa: S608
        added_chunks = f"(SELECT count(*) FROM {added}) + "  # noqa: S608
        added_length = f"(SELECT coalesce(sum(length(tsv)), 0) FROM {added}) + "  # noqa: S608
    sql = (
        "lexeme AS (INSERT INTO rag.lexemes (tenant, lexeme, chunks)"  # noqa: S608 (parameter numbers and CTE names)
        f" SELECT {p[0]}, lexeme, sum(n) FROM ({plus}SELECT r.lexeme, r.n FROM"
        f" unnest({p[1]}::text[], {p[2]}::bigint[]) AS r(lexeme, n)) d GROUP BY lexeme"
        " HAVING sum(n) <> 0 ORDER BY lexeme"
        " ON CONFLICT (tenant, lexeme) DO UPDATE SET chunks = rag.lexemes.chunks + EXCLUDED.chunks"
        " RETURNING lexeme, chunks),"
        # The sub-select on `lexeme` runs it to its end before the corpus row is locked.
        " corpus AS (INSERT INTO rag.corpora (tenant, version, chunks, lexemes)"
        f" SELECT {p[0]}, 1, {added_chunks}{p[3]}, {added_length}{p[4]}"
        " WHERE (SELECT count(*) FROM lexeme) >= 0"
        " ON CONFLICT (tenant) DO UPDATE SET chunks = rag.corpora.chunks + EXCLUDED.chunks,"
        " lexemes = rag.corpora.lexemes + EXCLUDED.lexemes, version = rag.corpora.version + 1"
        " RETURNING version)"
    )
    return sql, [tenant, change.lexemes, change.holding, change.chunks, change.length]


# What a statement ending in `_statistics` selects: the corpus version, and the lexemes no
# chunk holds any more (deleted by `_forget`: a DELETE beside the upsert in one statement
# would see the rows as they were before it).
_RESULT = (
    "(SELECT version FROM corpus) AS corpus_version,"
    " ARRAY(SELECT lexeme FROM lexeme WHERE chunks <= 0 ORDER BY lexeme) AS emptied"
)


async def _forget(conn: asyncpg.Connection, tenant: str, emptied: list[str]) -> None:
    if emptied:
        await conn.execute(
            "DELETE FROM rag.lexemes WHERE tenant = $1 AND lexeme = ANY($2::text[])"
            " AND chunks <= 0",
            tenant,
            emptied,
        )


@dataclass(frozen=True)
class ChunkRows:
    """A document's new chunks as common table expressions for one statement: `chunk` (the
    rows), `lexeme` and `corpus` (the statistics), numbered from the caller's first
    parameter; the statement selects `RESULT`."""

    sql: str
    args: list[Any]

    RESULT = _RESULT


def added(
    tenant: str,
    doc: NewDocument,
    version: int,
    embedded: EmbeddedChunks,
    ts_config: str,
    *,
    removed: Counted = NOTHING,
    first: int = 1,
) -> ChunkRows:
    """The chunks' columns go as arrays (one parameter each, whatever the chunk count), the
    vectors as one flat float4[] sliced per chunk; `removed`: the statistics of the chunks
    they replace (already deleted)."""
    chunks = embedded.chunks
    flat = embedded.vectors.ravel()
    if flat.size != len(chunks) * embedded.dims:
        raise ValueError(f"{flat.size} vector values for {len(chunks)} chunks of {embedded.dims}")
    p = [f"${first + i}" for i in range(15)]
    dims = p[7]
    statistics, statistics_args = _statistics(tenant, "chunk", NOTHING.minus(removed), first + 15)
    sql = (
        "chunk AS (INSERT INTO rag.chunks (tenant, document_id, ordinal, version, text,"  # noqa: S608 (parameter numbers only)
        " start_char, end_char, tokens, source, metadata, embedding, embedding_model,"
        f" embedding_dims, tsv) SELECT {p[0]}, {p[1]}, c.ordinal, {p[2]}, c.text, c.start_char,"
        f" c.end_char, c.tokens, {p[3]}, {p[4]}::jsonb,"
        f" ({p[5]}::float4[])[(c.n - 1) * {dims} + 1 : c.n * {dims}]::public.vector,"
        f" {p[6]}, {dims}, setweight(to_tsvector({p[8]}::regconfig, {p[9]}), 'A')"
        f" || setweight(to_tsvector({p[8]}::regconfig, c.text), 'B')"
        f" FROM unnest({p[10]}::int[], {p[11]}::text[], {p[12]}::int[], {p[13]}::int[],"
        f" {p[14]}::int[]) WITH ORDINALITY AS c(ordinal, text, start_char, end_char, tokens, n)"
        f" RETURNING tsv), {statistics}"
    )
    args = [
        tenant,
        doc.id,
        version,
        doc.source,
        json.dumps(doc.metadata),
        flat.tolist(),
        embedded.model,
        embedded.dims,
        ts_config,
        doc.title,
        [c.ordinal for c in chunks],
        [c.text for c in chunks],
        [c.start for c in chunks],
        [c.end for c in chunks],
        [c.tokens for c in chunks],
        *statistics_args,
    ]
    return ChunkRows(sql, args)


async def finish(conn: asyncpg.Connection, tenant: str, row: Any) -> int:
    """After a statement that selected `ChunkRows.RESULT` (in the transaction that made it):
    deletes the lexemes left at zero, returns the corpus version."""
    await _forget(conn, tenant, list(row["emptied"]))
    version: int = row["corpus_version"]
    return version


async def insert_chunks(
    conn: asyncpg.Connection,
    tenant: str,
    doc: NewDocument,
    version: int,
    embedded: EmbeddedChunks,
    ts_config: str,
    *,
    removed: Counted = NOTHING,
) -> int:
    """Insert the chunks, with their statistics less `removed`'s; returns the corpus version."""
    rows = added(tenant, doc, version, embedded, ts_config, removed=removed)
    row = await conn.fetchrow(f"WITH {rows.sql} SELECT {ChunkRows.RESULT}", *rows.args)
    return await finish(conn, tenant, row)


async def delete_chunks(conn: asyncpg.Connection, tenant: str, document_id: str) -> Counted:
    """Delete the document's chunks (its row locked by the caller); returns their statistics,
    which the caller takes off with `change` or `insert_chunks` in the same transaction."""
    row = await conn.fetchrow(
        "WITH gone AS (DELETE FROM rag.chunks WHERE tenant = $1 AND document_id = $2"  # noqa: S608
        " RETURNING tsv) " + _COUNT.format(rows="gone", lexemes=_LEXEMES.format(rows="gone")),
        tenant,
        document_id,
    )
    return _counted(row)


async def change(conn: asyncpg.Connection, tenant: str, delta: Counted) -> int:
    """The statistics pass alone (a delete's, a retitling's); returns the corpus version.
    `NOTHING` only moves the version."""
    statistics, args = _statistics(tenant, "", delta, 1)
    row = await conn.fetchrow(f"WITH {statistics} SELECT {_RESULT}", *args)
    return await finish(conn, tenant, row)


async def counted(conn: asyncpg.Connection, tenant: str, document_id: str) -> Counted:
    """Statistics of the document's stored chunks."""
    row = await conn.fetchrow(
        _COUNT.format(rows=_DOCUMENT_CHUNKS, lexemes=_LEXEMES.format(rows=_DOCUMENT_CHUNKS)),
        tenant,
        document_id,
    )
    return _counted(row)


async def retitle(conn: asyncpg.Connection, tenant: str, doc: NewDocument, ts_config: str) -> int:
    """Copy the document's title, source and metadata to its chunks (filters read them there;
    the title is in their tsvector) and change the statistics by the difference; returns the
    corpus version. The document's row is locked by the caller."""
    before = await counted(conn, tenant, doc.id)
    row = await conn.fetchrow(
        "WITH retitled AS (UPDATE rag.chunks SET source = $3, metadata = $4::jsonb,"  # noqa: S608
        " tsv = setweight(to_tsvector($5::regconfig, $6), 'A')"
        " || setweight(to_tsvector($5::regconfig, text), 'B')"
        " WHERE tenant = $1 AND document_id = $2 RETURNING tsv) "
        + _COUNT.format(rows="retitled", lexemes=_LEXEMES.format(rows="retitled")),
        tenant,
        doc.id,
        doc.source,
        json.dumps(doc.metadata),
        ts_config,
        doc.title,
    )
    return await change(conn, tenant, _counted(row).minus(before))
