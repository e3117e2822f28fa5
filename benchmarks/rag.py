"""The RAG component on CISI: retrieval quality against BM25 and dense search, and ingest
throughput against raw gateway.embed, all in one run.

    python -m benchmarks.rag                                # ~10-20 min on 2 busy cores
    python -m benchmarks.rag --dataset ../shared/datasets/cisi --concurrency 4

Starts an embedded nats-server, PostgreSQL and Valkey, and one worker process running rag,
gateway (offline: the local all-MiniLM-L6-v2) and cache, as `aifleet up` does. Then:

1. Ingest: every CISI document (title + "\\n\\n" + abstract as content, title as title, default
   chunking: 1,000 characters, overlap 200, at most 256 tokens) through `rag.create_document`,
   `--concurrency` requests in flight. Baseline: the same chunk texts (read back from the
   database) sent to `gateway.embed` in batches of 64 (what the component sends), same
   concurrency. The documents are split into `--slices` interleaved slices, each ingested and
   then embedded raw right after, so both see the same machine. Reported: chunks/s of each
   and their ratio (sums over the slices), and each phase's CPU per chunk by process (the
   worker's event loop and its other threads, PostgreSQL, nats-server, Valkey, this client).
2. Quality: every judged query through `rag.search` (top_k 100, distinct_documents, no cache) in
   hybrid, vector and keyword mode; next to bm25s (English stopwords, no stemming, title +
   abstract) and dense exact cosine over the same model's vectors of title + abstract (via
   gateway.embed, truncated at 256 tokens) and their RRF (k = 60) — the figures the collection's
   README quotes. nDCG@10 and recall@100, binary relevance.

Prints JSON and writes benchmarks/results/rag.json. Not part of `make test`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from benchmarks import cisi
from benchmarks.common import run_async
from workers.rag.fusion import reciprocal_rank_fusion

REPO = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results" / "rag.json"
DATASET = Path(os.environ.get("AIFLEET_BENCH_CISI", REPO.parent / "shared" / "datasets" / "cisi"))
TENANT = "cisi"
BATCH = 64


async def serve(nats_url: str, database_url: str, redis_url: str) -> None:
    from benchmarks.servers import ready, until_sigterm
    from workers.cache import service as cache
    from workers.gateway import service as gateway
    from workers.rag import service as rag
    from workers.runtime.config import Settings
    from workers.runtime.worker import Worker

    settings = Settings.model_validate(
        {
            "nats_url": nats_url,
            "database_url": database_url,
            "redis_url": redis_url,
            "log_level": "WARNING",
            "request_timeout": 120,
        }
    )
    worker = Worker([rag.component, gateway.component, cache.component], settings)
    await worker.start()
    ready()
    await until_sigterm()
    await worker.stop()


def start_worker(nats_url: str, database_url: str, redis_url: str) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", "benchmarks.rag", "serve", "--nats-url", nats_url]
    cmd += ["--database-url", database_url, "--redis-url", redis_url]
    worker = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert worker.stdout is not None
    for line in worker.stdout:
        if line.strip() == "ready":
            return worker
    raise RuntimeError("the worker exited before it was ready")


def cpu_by_process() -> dict[str, float]:
    """CPU seconds (user + system) used so far by the fleet's processes, by kind: the worker's
    event loop and its other threads (the model's runs), PostgreSQL (postmaster and backends),
    nats-server, Valkey, and this client."""
    me = os.getpid()
    used: defaultdict[str, float] = defaultdict(float)
    for process in psutil.process_iter(["name", "cmdline", "cpu_times"]):
        info = process.info
        name, cmdline, times = info["name"] or "", info["cmdline"] or [], info["cpu_times"]
        if times is None:
            continue
        if process.pid == me:
            kind = "client"
        elif "benchmarks.rag" in cmdline and "serve" in cmdline:
            # Its event loop (the main thread) apart from the model's and other threads.
            loop = next((t for t in process.threads() if t.id == process.pid), None)
            on_loop = loop.user_time + loop.system_time if loop is not None else 0.0
            used["worker loop"] += on_loop
            used["worker threads"] += times.user + times.system - on_loop
            continue
        elif name.startswith("postgres"):
            kind = "postgres"
        elif name.startswith("nats-server"):
            kind = "nats-server"
        elif name.startswith(("valkey", "redis")):
            kind = "valkey"
        else:
            continue
        used[kind] += times.user + times.system
    return used


def add_cpu_since(total: defaultdict[str, float], before: dict[str, float]) -> None:
    """Add to `total` the CPU each kind of process used since `before` was taken."""
    for kind, seconds in cpu_by_process().items():
        total[kind] += seconds - before.get(kind, 0.0)


async def bounded(concurrency: int, jobs: list[Any]) -> list[Any]:
    gate = asyncio.Semaphore(concurrency)

    async def one(job: Any) -> Any:
        async with gate:
            return await job

    return await asyncio.gather(*(one(j) for j in jobs))


async def measure(
    nats_url: str, database_url: str, collection: cisi.Collection, args: Any
) -> dict[str, Any]:
    import asyncpg
    import nats

    from schemas.v1.gateway_pb2 import EmbedRequest
    from schemas.v1.gateway_rpc import GatewayService
    from schemas.v1.rag_pb2 import CreateDocumentRequest, SearchRequest
    from schemas.v1.rag_rpc import RagService
    from workers.runtime.client import Client

    nc = await nats.connect(nats_url)
    client = Client(nc, timeout=300.0)
    pool = await asyncpg.create_pool(database_url)
    out: dict[str, Any] = {}

    # 1. ingest through rag.create_document and raw gateway.embed of the same chunks, slice by
    # slice: each slice's two phases run back to back, so a change in the machine's other load
    # hits both (one phase of ~5 minutes after the other did not).
    await client.call_rpc(TENANT, GatewayService.Embed, EmbedRequest(texts=["warm up"]))
    ids = sorted(collection.documents, key=int)
    ingest_s = embed_s = 0.0
    chunks = 0
    cpu: dict[str, defaultdict[str, float]] = {
        "create_document": defaultdict(float),
        "raw_embed": defaultdict(float),
    }
    slices = [ids[i :: args.slices] for i in range(args.slices)]
    for part in slices:
        before = cpu_by_process()
        started = time.perf_counter()
        await bounded(
            args.concurrency,
            [
                client.call_rpc(
                    TENANT,
                    RagService.CreateDocument,
                    CreateDocumentRequest(
                        document_id=i,
                        title=collection.documents[i][0] or i,
                        content=f"{collection.documents[i][0]}\n\n{collection.documents[i][1]}".strip(),
                    ),
                )
                for i in part
            ],
        )
        ingest_s += time.perf_counter() - started
        add_cpu_since(cpu["create_document"], before)
        texts = [
            r["text"]
            for r in await pool.fetch(
                "SELECT text FROM rag.chunks WHERE tenant = $1 AND document_id = ANY($2::text[])"
                " ORDER BY document_id, ordinal",
                TENANT,
                part,
            )
        ]
        chunks += len(texts)
        before = cpu_by_process()
        started = time.perf_counter()
        await bounded(
            args.concurrency,
            [
                client.call_rpc(
                    TENANT, GatewayService.Embed, EmbedRequest(texts=texts[i : i + BATCH])
                )
                for i in range(0, len(texts), BATCH)
            ],
        )
        embed_s += time.perf_counter() - started
        add_cpu_since(cpu["raw_embed"], before)
    out["ingest"] = {
        "documents": len(ids),
        "chunks": chunks,
        "slices": args.slices,
        "create_document_chunks_per_s": round(chunks / ingest_s, 1),
        "raw_embed_chunks_per_s": round(chunks / embed_s, 1),
        "ratio": round(embed_s / ingest_s, 3),
        "concurrency": args.concurrency,
        "cpu_ms_per_chunk": {
            phase: {kind: round(seconds / chunks * 1000, 2) for kind, seconds in used.items()}
            for phase, used in cpu.items()
        },
    }

    # 2. quality: rag.search in three modes, then the baselines
    qids = sorted(collection.queries, key=int)
    runs: dict[str, dict[str, list[str]]] = {}
    for mode in ("hybrid", "vector", "keyword"):
        runs[f"rag.search {mode}"] = {}
        for q in qids:
            reply = await client.call_rpc(
                TENANT,
                RagService.Search,
                SearchRequest(
                    query_text=collection.queries[q],
                    top_k=100,
                    mode=mode,
                    distinct_documents=True,
                    skip_cache=True,
                ),
            )
            runs[f"rag.search {mode}"][q] = [r.document_id for r in reply.results]
    doc_texts = [
        f"{collection.documents[i][0]}\n\n{collection.documents[i][1]}".strip() for i in ids
    ]
    doc_vectors = []
    for i in range(0, len(doc_texts), BATCH):
        embedded = await client.call_rpc(
            TENANT, GatewayService.Embed, EmbedRequest(texts=doc_texts[i : i + BATCH])
        )
        doc_vectors += [list(e.values) for e in embedded.embeddings]
    matrix = np.asarray(doc_vectors, dtype=np.float32)
    query_reply = await client.call_rpc(
        TENANT, GatewayService.Embed, EmbedRequest(texts=[collection.queries[q] for q in qids])
    )
    query_matrix = np.asarray([list(e.values) for e in query_reply.embeddings], dtype=np.float32)
    dense = {
        q: [ids[j] for j in np.argsort(-(matrix @ query_matrix[n]), kind="stable")[:100]]
        for n, q in enumerate(qids)
    }
    runs["dense exact (same model)"] = dense
    runs["bm25s"] = bm25_runs(doc_texts, ids, collection, qids)
    runs["RRF(bm25s, dense), k=60"] = {
        q: [f.key for f in reciprocal_rank_fusion({"d": dense[q], "b": runs["bm25s"][q]})][:100]
        for q in qids
    }
    out["quality"] = {
        name: {
            "ndcg@10": round(
                float(np.mean([cisi.ndcg_at(run[q], collection.relevant[q]) for q in qids])), 3
            ),
            "recall@100": round(
                float(np.mean([cisi.recall_at(run[q], collection.relevant[q]) for q in qids])), 3
            ),
        }
        for name, run in runs.items()
    }
    out["queries"] = len(qids)
    await pool.close()
    await nc.close()
    return out


def bm25_runs(
    texts: list[str], ids: list[str], collection: cisi.Collection, qids: list[str]
) -> dict[str, list[str]]:
    import bm25s  # type: ignore[import-untyped]

    retriever = bm25s.BM25()
    retriever.index(bm25s.tokenize(texts, stopwords="en", show_progress=False), show_progress=False)
    tokens = bm25s.tokenize(
        [collection.queries[q] for q in qids], stopwords="en", show_progress=False
    )
    found, _ = retriever.retrieve(tokens, k=100, show_progress=False)
    return {q: [ids[j] for j in found[n]] for n, q in enumerate(qids)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("mode", nargs="?", default="bench", choices=["bench", "serve"])
    parser.add_argument("--nats-url")
    parser.add_argument("--database-url")
    parser.add_argument("--redis-url")
    parser.add_argument("--dataset", type=Path, default=DATASET, help="the CISI directory")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument(
        "--slices", type=int, default=6, help="ingest/embed pairs the documents are split into"
    )
    args = parser.parse_args(argv)
    if args.mode == "serve":
        run_async(serve(args.nats_url, args.database_url, args.redis_url))
        return

    collection = cisi.load(args.dataset)
    result = with_fleet(lambda nats_url, dsn: measure(nats_url, dsn, collection, args))
    write_report(RESULTS, "benchmarks.rag", result)


def with_fleet(
    measure: Callable[[str, str], Coroutine[Any, Any, dict[str, Any]]],
) -> dict[str, Any]:
    """Embedded NATS, PostgreSQL and Valkey, the worker process, then `measure(nats, dsn)`."""
    from aifleet.embedded import EmbeddedNats, EmbeddedPostgres, EmbeddedValkey

    with tempfile.TemporaryDirectory(prefix="aifleet-bench-rag-") as tmp:
        servers: list[Any] = [
            EmbeddedNats(Path(tmp) / "nats", config=REPO / "nats-server.conf"),
            EmbeddedPostgres(Path(tmp) / "pg"),
            EmbeddedValkey(Path(tmp) / "valkey"),
        ]
        for server in servers:
            server.start()
        nats_url, dsn = servers[0].url, servers[1].dsn
        worker = start_worker(nats_url, dsn, servers[2].url)
        try:
            return run_async(measure(nats_url, dsn))
        finally:
            worker.terminate()
            worker.wait(30)
            for server in reversed(servers):
                server.stop()


def write_report(path: Path, module: str, result: dict[str, Any]) -> None:
    report = {
        "command": f"python -m {module} " + " ".join(sys.argv[1:]),
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "load": os.getloadavg(),
        },
        **result,
    }
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
