"""Chunk rows and the corpus statistics BM25 reads (rag.corpora, rag.lexemes), kept in step.

Called inside the store's transactions: a document's chunks are inserted or deleted together
with the lexeme counts and corpus totals they change, so the keyword leg's idf and average
length always describe the committed chunks. `bump` moves the tenant's corpus version (what the
results cache keys on).
"""

from __future__ import annotations

import json

import asyncpg

from workers.rag.records import EmbeddedChunks, NewDocument


async def bump(conn: asyncpg.Connection, tenant: str) -> int:
    version: int = await conn.fetchval(
        "INSERT INTO rag.corpora (tenant, version) VALUES ($1, 1) ON CONFLICT (tenant)"
        " DO UPDATE SET version = rag.corpora.version + 1 RETURNING version",
        tenant,
    )
    return version


# The lexeme statistics of one document's stored chunks, added (sign 1) after its chunks were
# inserted or removed (sign -1) before they are deleted; lexemes in sorted order, so concurrent
# ingests of one tenant lock shared rows in one order.
_DOCUMENT_LEXEMES = """
    SELECT u.lexeme, count(*) AS n FROM rag.chunks c, unnest(c.tsv) u
    WHERE c.tenant = $1 AND c.document_id = $2 GROUP BY u.lexeme ORDER BY u.lexeme
"""


async def count_lexemes(conn: asyncpg.Connection, tenant: str, document_id: str, sign: int) -> None:
    if sign > 0:
        await conn.execute(
            "INSERT INTO rag.lexemes (tenant, lexeme, chunks)"  # noqa: S608
            f" SELECT $1, lexeme, n FROM ({_DOCUMENT_LEXEMES}) d"
            " ON CONFLICT (tenant, lexeme) DO UPDATE SET chunks = rag.lexemes.chunks"
            " + EXCLUDED.chunks",
            tenant,
            document_id,
        )
    else:
        # Lexemes no chunk holds any more are deleted by a second statement: a DELETE beside
        # the UPDATE in one statement sees the rows as they were before it and removes none.
        emptied = await conn.fetchval(
            "WITH d AS MATERIALIZED (" + _DOCUMENT_LEXEMES + "),"  # noqa: S608
            " changed AS (UPDATE rag.lexemes l SET chunks = l.chunks - d.n FROM d"
            " WHERE l.tenant = $1 AND l.lexeme = d.lexeme RETURNING l.lexeme, l.chunks)"
            " SELECT array_agg(lexeme ORDER BY lexeme) FROM changed WHERE chunks <= 0",
            tenant,
            document_id,
        )
        if emptied:
            await conn.execute(
                "DELETE FROM rag.lexemes WHERE tenant = $1 AND lexeme = ANY($2::text[])"
                " AND chunks <= 0",
                tenant,
                emptied,
            )
    await conn.execute(
        "INSERT INTO rag.corpora (tenant, version, chunks, lexemes)"
        " SELECT $1, 0, $3 * count(*), $3 * coalesce(sum(length(tsv)), 0) FROM rag.chunks"
        " WHERE tenant = $1 AND document_id = $2"
        " ON CONFLICT (tenant) DO UPDATE SET chunks = rag.corpora.chunks + EXCLUDED.chunks,"
        " lexemes = rag.corpora.lexemes + EXCLUDED.lexemes",
        tenant,
        document_id,
        sign,
    )


async def delete_chunks(conn: asyncpg.Connection, tenant: str, document_id: str) -> int:
    await count_lexemes(conn, tenant, document_id, -1)
    deleted: int = await conn.fetchval(
        "WITH gone AS (DELETE FROM rag.chunks WHERE tenant = $1 AND document_id = $2"
        " RETURNING 1) SELECT count(*) FROM gone",
        tenant,
        document_id,
    )
    return deleted


async def insert_chunks(
    conn: asyncpg.Connection,
    tenant: str,
    doc: NewDocument,
    version: int,
    embedded: EmbeddedChunks,
    ts_config: str,
) -> None:
    await conn.executemany(
        "INSERT INTO rag.chunks (tenant, document_id, ordinal, version, text, start_char,"
        " end_char, tokens, source, metadata, embedding, embedding_model, embedding_dims, tsv)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10::jsonb, $11::float4[]::public.vector,"
        " $12, $13, setweight(to_tsvector($14::regconfig, $15), 'A')"
        " || setweight(to_tsvector($14::regconfig, $5), 'B'))",
        [
            (
                tenant,
                doc.id,
                c.ordinal,
                version,
                c.text,
                c.start,
                c.end,
                c.tokens,
                doc.source,
                json.dumps(doc.metadata),
                list(vector),
                embedded.model,
                embedded.dims,
                ts_config,
                doc.title,
            )
            for c, vector in zip(embedded.chunks, embedded.vectors, strict=True)
        ],
    )
    await count_lexemes(conn, tenant, doc.id, 1)
