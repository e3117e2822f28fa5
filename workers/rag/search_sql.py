"""The hybrid search statement: both legs, their ranks and the candidates' rows, in ONE query.

One statement means one snapshot: a search running while a document's chunks are replaced sees
the old chunks or the new ones in both legs, never the old in one leg and the new in the other.

- Vector leg: `ORDER BY embedding::vector(D) <=> q LIMIT k` over the HNSW expression index of
  dimension D, with the tenant, the model and every metadata filter in its WHERE, so with
  `hnsw.iterative_scan` (set by the caller) the index scan keeps going until k rows pass them.
  relaxed_order may return rows slightly out of order, so the rank is recomputed from the
  distance afterwards (as pgvector's documentation advises).
- Keyword leg: the GIN index on `tsv`, over a bounded candidate set. A question written
  without operators matches chunks holding any of its lexemes (websearch_to_tsquery ANDs them,
  which on a natural-language question matches almost nothing); a query using websearch syntax
  (quotes, `-word`) is matched by `websearch_to_tsquery` as written. Ranked by BM25 over the
  query's lexemes (see _TERMS): ts_rank alone has no idf and ranks long questions poorly
  (measured on CISI: nDCG@10 0.21-0.23 with ts_rank/ts_rank_cd, 0.32 with this; bm25s 0.35).
  Scoring every chunk holding any lexeme of a question is what made the leg slow (at 100k
  chunks a CISI question matches ~25k of them: ~0.9 s). So the GIN scan matches only the
  question's rarest lexemes, rarest first, as long as the chunks holding them (the document
  frequencies in rag.lexemes) add up to at most $8, at least the rarest one; at most $8 chunks
  are scored (when even the rarest lexeme is in more, $8 of them in index order). A chunk
  holding only common lexemes of the question has a low BM25 score anyway (idf); every
  candidate is still scored with all of the question's lexemes.

Parameters: $1 tenant, $2 embedding model, $3 query vector (float4[]), $4 query text,
$5 text-search configuration, $6 candidates per leg, $7 take the websearch query as written,
$8 chunks the keyword leg scores at most; metadata filter parameters from $9 on.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from workers.rag.filters import compile_filters
from workers.rag.records import Hit
from workers.runtime.postgres import lock_key, session_lock

FIRST_FILTER_PARAM = 9
# Chunks the keyword leg scores at most (see above); AIFLEET_RAG_KEYWORD_CANDIDATES.
KEYWORD_CANDIDATES = 1000
# pgvector's HNSW limits: vector up to 2,000 dimensions, halfvec up to 4,000.
MAX_VECTOR_INDEX_DIMS = 2000
MAX_HALFVEC_INDEX_DIMS = 4000
MAX_DIMS = 16000
# Replicas starting together build the vector index once.
VECTOR_INDEX_LOCK = lock_key("aifleet.rag.vector_index")
# HNSW build parameters. Measured on 100k MiniLM chunks of one tenant among 190k (benchmarks/
# rag_scale.py, iterative scan): m 16 / ef_construction 64 (pgvector's defaults) gave recall@10
# 0.967 at ef_search 100, 0.988 at 200; ef_construction 200 gives 0.992 and 0.9995, for a build
# ~3x as long. An existing index keeps the parameters it was built with (REINDEX to change).
HNSW_M = 16
HNSW_EF_CONSTRUCTION = 200


@dataclass(frozen=True)
class VectorSql:
    """How vectors of one dimension are compared and indexed."""

    dims: int

    @property
    def kind(self) -> str:
        return "vector" if self.dims <= MAX_VECTOR_INDEX_DIMS else "halfvec"

    @property
    def indexed(self) -> bool:
        return self.dims <= MAX_HALFVEC_INDEX_DIMS

    def column(self, alias: str = "c") -> str:
        if not self.indexed:
            return f"{alias}.embedding"
        return f"({alias}.embedding::public.{self.kind}({self.dims}))"

    def value(self, param: str) -> str:
        if not self.indexed:
            return f"({param}::float4[]::public.vector)"
        return f"({param}::float4[]::public.{self.kind}({self.dims}))"

    @property
    def index_name(self) -> str:
        return f"chunks_embedding_{self.kind}_{self.dims}"

    def index_ddl(self) -> str:
        """The HNSW cosine index over this dimension's rows (partial on the dimension)."""
        expression = f"(embedding::public.{self.kind}({self.dims}))"
        return (
            f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {self.index_name} ON rag.chunks"
            f" USING hnsw ({expression} public.{self.kind}_cosine_ops)"
            f" WITH (m = {HNSW_M}, ef_construction = {HNSW_EF_CONSTRUCTION})"
            f" WHERE embedding_dims = {self.dims}"
        )


def _vector_leg(v: VectorSql, filters: str) -> str:
    return f"""
    SELECT id, row_number() OVER (ORDER BY dist, id) AS r FROM (
        SELECT c.id, {v.column()} <=> {v.value("$3")} AS dist
        FROM rag.chunks c
        WHERE c.tenant = $1 AND c.embedding_dims = {v.dims} AND c.embedding_model = $2
          AND ({filters})
        ORDER BY {v.column()} <=> {v.value("$3")}
        LIMIT $6
    ) nearest"""  # noqa: S608 (trusted fragments; values are parameters)


# BM25 (k1 = 1.2, b = 0.75) over PostgreSQL's full-text vectors. idf from rag.lexemes (chunks
# per lexeme) and rag.corpora (N, average length); the term frequency is ts_rank_cd of the one
# lexeme (the sum of its occurrences' weights: 1 in the text, 2.5 in the title, weights B and A
# of {0.1, 0.2, 0.4, 1.0} divided by 0.4); the length is the chunk's count of lexemes.
K1, B = 1.2, 0.75
_TERMS = """
    stats AS (SELECT chunks::float8 AS n, greatest(lexemes::float8 / greatest(chunks, 1), 1.0)
              AS avgdl FROM rag.corpora WHERE tenant = $1),
    terms AS MATERIALIZED (
        SELECT l.lexeme, quote_literal(l.lexeme)::tsquery AS tq, l.chunks AS df,
               ln(1 + (st.n - l.chunks + 0.5) / (l.chunks + 0.5)) AS idf, st.avgdl
        FROM (SELECT DISTINCT lexeme FROM unnest(to_tsvector($5::regconfig, $4))) q
        JOIN rag.lexemes l ON l.tenant = $1 AND l.lexeme = q.lexeme
        CROSS JOIN stats st),
    rarest AS MATERIALIZED (
        SELECT lexeme, sum(df) OVER (ORDER BY df, lexeme) AS reach,
               row_number() OVER (ORDER BY df, lexeme) AS nth
        FROM terms),
    matching AS MATERIALIZED (
        SELECT CASE WHEN $7 THEN websearch_to_tsquery($5::regconfig, $4)
               ELSE (SELECT string_agg(quote_literal(lexeme), ' | ')::tsquery FROM rarest
                     WHERE reach <= $8 OR nth = 1)
               END AS query)"""


def _keyword_leg(filters: str) -> str:
    return f"""
    SELECT id, row_number() OVER (ORDER BY score DESC, id) AS r FROM (
        SELECT c.id, s.score
        FROM (
            SELECT c.id, c.tsv FROM rag.chunks c
            WHERE c.tenant = $1 AND c.tsv @@ (SELECT query FROM matching) AND ({filters})
            LIMIT $8
        ) c CROSS JOIN LATERAL (
            SELECT sum(t.idf * f.tf * {K1 + 1}
                       / (f.tf + {K1} * (1 - {B} + {B} * length(c.tsv) / t.avgdl))) AS score
            FROM terms t CROSS JOIN LATERAL (SELECT ts_rank_cd(c.tsv, t.tq, 0) / 0.4 AS tf) f
        ) s
        ORDER BY s.score DESC, c.id
        LIMIT $6
    ) matched"""  # noqa: S608


def search_statement(
    v: VectorSql, *, vector: bool, keyword: bool, filters: str, embeddings: bool
) -> str:
    """The statement for the legs asked for; `embeddings` also returns each row's vector."""
    if not (vector or keyword):
        raise ValueError("a search needs at least one leg")
    ctes = []
    if vector:
        ctes.append(f"vec AS MATERIALIZED ({_vector_leg(v, filters)})")
    if keyword:
        ctes.append(_TERMS.strip())
        ctes.append(f"kw AS MATERIALIZED ({_keyword_leg(filters)})")
    # Declares every parameter's type, whichever legs use it (an untyped unused parameter is
    # an error); a CTE nobody reads is not evaluated.
    ctes.append("params AS (SELECT $2::text, $4::text, $5::text, $6::int, $7::bool, $8::int)")
    if vector and keyword:
        legs = "SELECT id FROM vec UNION SELECT id FROM kw"
    else:
        legs = "SELECT id FROM vec" if vector else "SELECT id FROM kw"
    similarity = (
        f"CASE WHEN c.embedding_dims = {v.dims} AND $3::float4[] IS NOT NULL"
        f" THEN 1 - ({v.column()} <=> {v.value('$3')}) END"
    )
    vector_rank = "vec.r" if vector else "NULL::bigint"
    keyword_rank = "kw.r" if keyword else "NULL::bigint"
    joins = ""
    if vector:
        joins += " LEFT JOIN vec ON vec.id = c.id"
    if keyword:
        joins += " LEFT JOIN kw ON kw.id = c.id"
    extra = ", c.embedding::float4[] AS embedding" if embeddings else ""
    return f"""
WITH {", ".join(ctes)},
ids AS ({legs})
SELECT c.id, c.document_id, c.ordinal, c.text, c.start_char, c.end_char, c.version, c.source,
       c.metadata, d.title, {vector_rank} AS vector_rank, {keyword_rank} AS keyword_rank,
       {similarity} AS similarity,
       (SELECT version FROM rag.corpora WHERE tenant = $1) AS corpus_version{extra}
FROM ids
JOIN rag.chunks c ON c.id = ids.id AND c.tenant = $1
JOIN rag.documents d ON d.tenant = c.tenant AND d.id = c.document_id{joins}
"""  # noqa: S608


# -- search -------------------------------------------------------------------------------


async def search(
    pool: asyncpg.Pool,
    tenant: str,
    ts_config: str,
    *,
    vector_sql: VectorSql,
    model: str,
    query_vector: Sequence[float] | None,
    query_text: str,
    as_written: bool,
    candidates: int,
    filters: dict[str, Any],
    vector_leg: bool,
    keyword_leg: bool,
    embeddings: bool,
    ef_search: int,
    keyword_candidates: int = KEYWORD_CANDIDATES,
) -> tuple[list[Hit], int]:
    """Candidates of both legs with their ranks, and the corpus version they were read at."""
    compiled = compile_filters(filters, column="c.metadata", first_param=FIRST_FILTER_PARAM)
    sql = search_statement(
        vector_sql,
        vector=vector_leg,
        keyword=keyword_leg,
        filters=compiled.sql,
        embeddings=embeddings,
    )
    async with pool.acquire() as conn, conn.transaction(readonly=True):
        await conn.execute(
            "SET LOCAL hnsw.iterative_scan = relaxed_order;"
            f" SET LOCAL hnsw.ef_search = {int(ef_search)}"
        )
        rows = await conn.fetch(
            sql,
            tenant,
            model,
            list(query_vector) if query_vector is not None else None,
            query_text,
            ts_config,
            candidates,
            as_written,
            keyword_candidates,
            *compiled.params,
        )
    version = (
        int(rows[0]["corpus_version"] or 0)
        if rows
        else int(
            await pool.fetchval("SELECT version FROM rag.corpora WHERE tenant = $1", tenant) or 0
        )
    )
    return [
        Hit(
            id=r["id"],
            document_id=r["document_id"],
            ordinal=r["ordinal"],
            text=r["text"],
            start=r["start_char"],
            end=r["end_char"],
            version=r["version"],
            source=r["source"],
            metadata=json.loads(r["metadata"]),
            title=r["title"],
            vector_rank=r["vector_rank"],
            keyword_rank=r["keyword_rank"],
            similarity=r["similarity"],
            embedding=list(r["embedding"]) if embeddings else None,
        )
        for r in rows
    ], version


async def ensure_vector_index(pool: asyncpg.Pool, v: VectorSql) -> bool:
    """Create the HNSW index for dimension `v.dims` if missing (CONCURRENTLY: writes go on
    while it builds); an invalid leftover of an interrupted build is dropped and rebuilt.
    Returns False when the dimension is too large for any pgvector index (exact search)."""
    if not v.indexed:
        return False
    # Replicas starting together: one builds, the others wait and find it valid.
    async with pool.acquire() as conn, session_lock(conn, VECTOR_INDEX_LOCK):
        await _build_index(conn, v)
    return True


async def _build_index(conn: asyncpg.Connection, v: VectorSql) -> None:
    valid = await conn.fetchval(
        "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
        " JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = 'rag' AND c.relname = $1",
        v.index_name,
    )
    if valid is False:
        await conn.execute(f"DROP INDEX CONCURRENTLY IF EXISTS rag.{v.index_name}")
    if valid is not True:
        await conn.execute(v.index_ddl())
