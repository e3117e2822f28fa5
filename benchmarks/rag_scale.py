"""rag.search at scale: 100k chunks of one tenant among 10 tenants, over NATS against the same
SQL run directly; the keyword leg bounded against unbounded; and the HNSW leg's recall@10
against exact search on the same data.

    python -m benchmarks.rag_scale                       # ~15-20 min on 2 busy cores
    python -m benchmarks.rag_scale --chunks 100000 --other-chunks 10000 --queries 200

Data: CISI's titles and abstract sentences (all ~8.5k distinct ones, or the first `--texts`),
embedded once through gateway.embed; chunk i of a tenant is text i mod n with that text's
vector plus Gaussian noise (sigma 0.02 per dimension, cosine ~0.93 to the original),
normalised, so neighbourhoods are those of real MiniLM vectors (each text ~12 times among
100k chunks). The measured tenant holds `--chunks`, nine others `--other-chunks` each. Rows are
bulk-loaded (COPY) and the HNSW index built afterwards with the worker's DDL (search_sql).

Per query (CISI's queries and sentences, `--queries` of them, one at a time after a warm-up):
- over NATS: `rag.search` (hybrid, top_k 10, skip_cache) — the worker embeds the query through
  the gateway, runs the statement, fuses;
- direct: `gateway.embed` of the query over NATS, then the same statement (search_sql, the
  worker's default settings) from an asyncpg pool in this process: what the component adds is
  the difference.
Keyword leg alone (CISI's queries): p50 with the default bound (AIFLEET_RAG_KEYWORD_CANDIDATES)
and unbounded (every chunk holding a lexeme of the query scored, as before), and the share of
the bounded top 10 in the unbounded top 10.
Recall: the vector leg alone (LIMIT 10, iterative scan) at the default ef_search and at 100
against the same query with index scans disabled (exact), with the tenant filter, mean
|top10 ∩ exact10| / 10, for CISI's queries and for stored sentences used as queries.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import cisi
from benchmarks.rag import DATASET, with_fleet, write_report
from workers.rag.citations import split_sentences

RESULTS = Path(__file__).resolve().parent / "results" / "rag_scale.json"
TENANT = "scale"
DIMS = 384
MODEL = "all-minilm-l6-v2"


def texts_of(collection: cisi.Collection) -> list[str]:
    seen: dict[str, None] = {}
    for title, text in collection.documents.values():
        for s in split_sentences(text):
            if len(s.text) > 30:
                seen.setdefault(s.text, None)
        if title:
            seen.setdefault(title, None)
    return list(seen)


async def load(pool: Any, tenant: str, texts: list[str], base: np.ndarray, count: int) -> None:
    rng = np.random.default_rng(abs(hash(tenant)) % 2**32)
    docs = (count + 9) // 10
    await pool.executemany(
        "INSERT INTO rag.documents (tenant, id, title, content, content_hash, status,"
        " chunk_size, chunk_overlap, chunk_count, embedding_model, embedding_dims)"
        " VALUES ($1, $2, $2, '', '', 'ready', 1000, 200, 10, 'all-minilm-l6-v2', 384)",
        [(tenant, f"d{d}") for d in range(docs)],
    )
    step = 20_000
    for first in range(0, count, step):
        rows = []
        for i in range(first, min(first + step, count)):
            j = i % len(texts)
            v = base[j] + rng.normal(0, 0.02, DIMS).astype(np.float32)
            v /= np.linalg.norm(v)
            rows.append((tenant, f"d{i // 10}", i % 10, texts[j], v.tolist()))
        async with pool.acquire() as conn:
            await conn.execute(
                "CREATE TEMP TABLE IF NOT EXISTS stage (tenant text, document_id text,"
                " ordinal int, text text, embedding float4[]); TRUNCATE stage"
            )
            await conn.copy_records_to_table("stage", records=rows)
            await conn.execute(
                "INSERT INTO rag.chunks (tenant, document_id, ordinal, version, text, start_char,"
                " end_char, tokens, source, metadata, embedding, embedding_model, embedding_dims,"
                " tsv) SELECT tenant, document_id, ordinal, 1, text, 0, length(text), 0, '',"
                " '{}', embedding::public.vector, 'all-minilm-l6-v2', 384,"
                " setweight(to_tsvector('english', document_id), 'A')"
                " || setweight(to_tsvector('english', text), 'B') FROM stage"
            )
    await pool.execute(
        "INSERT INTO rag.lexemes (tenant, lexeme, chunks) SELECT $1, u.lexeme, count(*)"
        " FROM rag.chunks c, unnest(c.tsv) u WHERE c.tenant = $1 GROUP BY u.lexeme",
        tenant,
    )
    await pool.execute(
        "INSERT INTO rag.corpora (tenant, version, chunks, lexemes) SELECT $1, 1, count(*),"
        " sum(length(tsv)) FROM rag.chunks WHERE tenant = $1",
        tenant,
    )


def percentiles(seconds: list[float]) -> dict[str, float]:
    ms = sorted(s * 1000 for s in seconds)
    return {
        "p50_ms": round(statistics.median(ms), 2),
        "p95_ms": round(ms[int(len(ms) * 0.95) - 1], 2),
        "n": len(ms),
    }


def p50_ms(seconds: list[float]) -> float:
    return round(statistics.median(seconds) * 1000, 2)


async def keyword_leg(pool: Any, queries: list[str], bound: int) -> tuple[float, list[list[int]]]:
    """p50 of the keyword leg alone with at most `bound` chunks scored, and its top 10s."""
    from workers.rag import search_sql
    from workers.rag.search_sql import VectorSql

    statement = search_sql.search_statement(
        VectorSql(DIMS), vector=False, keyword=True, filters="TRUE", embeddings=False
    )
    times, tops = [], []
    for q in queries:
        started = time.perf_counter()
        rows = await pool.fetch(statement, TENANT, MODEL, None, q, "english", 50, False, bound)
        times.append(time.perf_counter() - started)
        tops.append([r["id"] for r in sorted(rows, key=lambda r: r["keyword_rank"])][:10])
    return p50_ms(times), tops


async def recall(
    pool: Any, vectors: list[list[float]], exact: list[set[int]], ef_search: int
) -> tuple[float, float]:
    """Mean recall@10 of the vector leg at `ef_search`, and its p50 ms."""
    from workers.rag import search_sql
    from workers.rag.search_sql import VectorSql

    statement = search_sql.search_statement(
        VectorSql(DIMS), vector=True, keyword=False, filters="TRUE", embeddings=False
    )
    overlap, times = [], []
    for vector, expected in zip(vectors, exact, strict=True):
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "SET LOCAL hnsw.iterative_scan = relaxed_order;"
                f" SET LOCAL hnsw.ef_search = {int(ef_search)}"
            )
            started = time.perf_counter()
            rows = await conn.fetch(statement, *_vector_params(vector))
            times.append(time.perf_counter() - started)
        overlap.append(len({r["id"] for r in rows} & expected) / max(1, len(expected)))
    return round(float(np.mean(overlap)), 4), p50_ms(times)


def _vector_params(vector: list[float]) -> tuple[Any, ...]:
    return (TENANT, MODEL, vector, "", "english", 10, False, 10)


async def exact_top10(pool: Any, vectors: list[list[float]]) -> list[set[int]]:
    from workers.rag import search_sql
    from workers.rag.search_sql import VectorSql

    # Another statement text: a prepared statement's cached generic plan is kept across SET
    # changes, so the exact one must not share the approximate one's plan on a connection.
    statement = "/* exact */" + search_sql.search_statement(
        VectorSql(DIMS), vector=True, keyword=False, filters="TRUE", embeddings=False
    )
    out = []
    for vector in vectors:
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "SET LOCAL enable_indexscan = off; SET LOCAL enable_bitmapscan = off"
            )
            out.append({r["id"] for r in await conn.fetch(statement, *_vector_params(vector))})
    return out


async def measure(nats_url: str, dsn: str, args: Any) -> dict[str, Any]:
    import asyncpg
    import nats

    from schemas.v1.gateway_pb2 import EmbedRequest
    from schemas.v1.gateway_rpc import GatewayService
    from schemas.v1.rag_pb2 import SearchRequest
    from schemas.v1.rag_rpc import RagService
    from workers.rag import search_sql
    from workers.rag.search_sql import VectorSql
    from workers.rag.settings import RagSettings
    from workers.runtime.client import Client

    settings = RagSettings()
    collection = cisi.load(args.dataset)
    texts = texts_of(collection)[: args.texts or None]
    nc = await nats.connect(nats_url)
    client = Client(nc, timeout=300.0)
    pool = await asyncpg.create_pool(dsn, min_size=2, max_size=4)
    v = VectorSql(DIMS)
    vectors: list[list[float]] = []
    for i in range(0, len(texts), 64):
        reply = await client.call_rpc(
            TENANT, GatewayService.Embed, EmbedRequest(texts=texts[i : i + 64])
        )
        vectors += [list(e.values) for e in reply.embeddings]
    base = np.asarray(vectors, dtype=np.float32)
    started = time.perf_counter()
    await pool.execute(f"DROP INDEX IF EXISTS rag.{v.index_name}")
    await load(pool, TENANT, texts, base, args.chunks)
    for t in range(9):
        await load(pool, f"other{t}", texts, base, args.other_chunks)
    loaded = time.perf_counter() - started
    started = time.perf_counter()
    async with pool.acquire() as conn:  # what ensure_vector_index runs, with room to build
        await conn.execute("SET maintenance_work_mem = '1GB'")
        await conn.execute(v.index_ddl().replace(" CONCURRENTLY", ""))
    built = time.perf_counter() - started
    await pool.execute("ANALYZE rag.chunks")

    queries = (list(collection.queries.values()) + texts[::37])[: args.queries]
    nats_times: list[float] = []
    direct_times: list[float] = []

    async def search_over_nats(q: str) -> None:
        await client.call_rpc(
            TENANT, RagService.Search, SearchRequest(query_text=q, top_k=10, skip_cache=True)
        )

    async def search_direct(q: str) -> None:
        reply = await client.call_rpc(TENANT, GatewayService.Embed, EmbedRequest(texts=[q]))
        await search_sql.search(
            pool, TENANT, "english", vector_sql=v, model=MODEL,
            query_vector=list(reply.embeddings[0].values), query_text=q, as_written=False,
            candidates=settings.candidates, filters={}, vector_leg=True, keyword_leg=True,
            embeddings=False, ef_search=settings.hnsw_ef_search,
            keyword_candidates=settings.keyword_candidates,
        )  # fmt: skip

    for round_ in range(2):  # the first round warms caches and is not counted
        for i, q in enumerate(queries):
            # Alternate which goes first: the second of a pair finds the pages the first read
            # in shared buffers, which at 100k chunks is worth several milliseconds.
            pair = [(search_over_nats, nats_times), (search_direct, direct_times)]
            for run, times in pair if i % 2 == 0 else pair[::-1]:
                started = time.perf_counter()
                await run(q)
                if round_:
                    times.append(time.perf_counter() - started)

    questions = list(collection.queries.values())
    bounded_p50, bounded = await keyword_leg(pool, questions, settings.keyword_candidates)
    unbounded_p50, unbounded = await keyword_leg(pool, questions[: args.unbounded], 10**9)
    agreement = [
        len(set(b) & set(u)) / max(1, len(u)) for b, u in zip(bounded, unbounded, strict=False)
    ]
    probes = {"cisi queries": questions, "stored sentences": texts[::67][:100]}
    recalls: dict[str, Any] = {}
    for name, probe in probes.items():
        vectors = []
        for i in range(0, len(probe), 64):
            reply = await client.call_rpc(
                TENANT, GatewayService.Embed, EmbedRequest(texts=probe[i : i + 64])
            )
            vectors += [list(e.values) for e in reply.embeddings]
        exact = await exact_top10(pool, vectors)
        for ef in sorted({100, 200, settings.hnsw_ef_search}):
            got, ms = await recall(pool, vectors, exact, ef)
            recalls[f"{name}, ef_search {ef}"] = {"recall@10": got, "p50_ms": ms, "n": len(probe)}
    over_nats, direct = percentiles(nats_times), percentiles(direct_times)
    await pool.close()
    await nc.close()
    return {
        "chunks": {"tenant": args.chunks, "others": 9 * args.other_chunks},
        "load_s": round(loaded, 1),
        "hnsw_build_s": round(built, 1),
        "rag.search over NATS": over_nats,
        "embed + same SQL, direct": direct,
        "added_p50_ms": round(over_nats["p50_ms"] - direct["p50_ms"], 2),
        "keyword leg": {
            "bound": settings.keyword_candidates,
            "bounded_p50_ms": bounded_p50,
            "unbounded_p50_ms": unbounded_p50,
            "top10_agreement": round(float(np.mean(agreement)), 3),
            "n": len(questions),
            "n_unbounded": len(unbounded),
        },
        "hnsw": {
            "m": search_sql.HNSW_M,
            "ef_construction": search_sql.HNSW_EF_CONSTRUCTION,
            **recalls,
        },
    }


def main(argv: list[str] | None = None) -> None:

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", type=Path, default=DATASET, help="the CISI directory")
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--other-chunks", type=int, default=10_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--texts", type=int, default=0, help="distinct texts embedded (0: all)")
    parser.add_argument(
        "--unbounded", type=int, default=30, help="queries of the unbounded keyword leg"
    )
    args = parser.parse_args(argv)
    result = with_fleet(lambda nats_url, dsn: measure(nats_url, dsn, args))
    write_report(RESULTS, "benchmarks.rag_scale", result)


if __name__ == "__main__":
    main()
