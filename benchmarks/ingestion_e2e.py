"""A 100-page PDF from upload to searchable on the whole fleet, and where the time goes.

    python -m benchmarks.ingestion_e2e             # ~2 min; writes results/ingestion_e2e.json
    python -m benchmarks.ingestion_e2e --rounds 1

The fleet as `aifleet up` runs it: embedded nats-server, PostgreSQL and Valkey, every component
in this one process, the HTTP bridge on a loopback port (dev mode, rate limit off). Each round
generates a new 100-page PDF (fpdf2, ~1,700 characters per page, a sentence naming the round
and the page on every page, so no two files share bytes), POSTs it as a multipart form to
/api/v1/ingestion/upload and measures, from the start of the POST:

- `ingested`: `get_file` says `ingested` (polled every 50 ms);
- `searchable`: a keyword `rag.search` for the last page's sentence returns a chunk of the
  file (polled every 50 ms, keyword mode so that polling embeds nothing).

Where the time goes is timed inside the fleet, by wrapping the functions doing each stage
(their summed wall time in the round): `fetch` (ingestion copying the object out of the Object
Store), `parse` (the parse sandbox: fork, pypdf, cleaning, structure), `chunk` (RAG's chunker),
`embed` (RAG's embedder: the gateway's offline MiniLM over NATS, batch by batch, with the
progress writes), `insert` (RAG's one transaction writing chunks, vectors and text index).
`other` is the rest of `ingested`: the upload itself, job queueing and delivery, RAG's job,
ingestion's polling of the RAG document. Baselines in the same round, in this process: raw
pypdf (`PdfReader` + `extract_text` of every page) on the same file, and the embedding model
alone (`MiniLM.embed`, RAG's batch size) on the very chunks RAG embedded.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import inspect
import json
import os
import platform
import statistics
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
from pypdf import PdfReader

from aifleet.embedded import EmbeddedNats, EmbeddedPostgres, EmbeddedValkey, free_port
from bridge.config import BridgeSettings
from bridge.server import Embedded
from tests.support import documents
from workers.components import available, load
from workers.gateway.embedding import MiniLM
from workers.ingestion.sandbox import ParseSandbox
from workers.rag.chunking import Chunker
from workers.rag.embedder import Embedder
from workers.rag.settings import RagSettings
from workers.rag.store import RagStore
from workers.runtime.config import Settings
from workers.runtime.files import FileStore
from workers.runtime.worker import Worker

REPO = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results" / "ingestion_e2e.json"
PAGES = 100
POLL = 0.05
STAGES = ("fetch", "parse", "chunk", "embed", "insert")
PARAGRAPH = (
    "The harbour office keeps a daily log of arrivals, departures and the weather at the pier. "
    "Each entry names the vessel, its cargo, the berth it was assigned and the pilot on duty. "
)

# Summed wall seconds per stage since the last reset; the wrappers below add to it.
CLOCK: dict[str, float] = defaultdict(float)


def _timed(cls: type, name: str, stage: str) -> None:
    """Wrap `cls.name` so that its wall time adds to CLOCK[stage]."""
    original: Callable[..., Any] = getattr(cls, name)
    if inspect.iscoroutinefunction(original):

        @functools.wraps(original)
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return await original(*args, **kwargs)
            finally:
                CLOCK[stage] += time.perf_counter() - started

    else:

        @functools.wraps(original)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                CLOCK[stage] += time.perf_counter() - started

    setattr(cls, name, wrapper)


# The texts of the chunks RAG made since the last reset (to embed them again, model alone).
CHUNKS: list[str] = []


def _keep_chunks() -> None:
    original = Chunker.split

    @functools.wraps(original)
    def split(self: Chunker, content: str, **kwargs: Any) -> Any:
        chunks = original(self, content, **kwargs)
        CHUNKS.extend(c.text for c in chunks)
        return chunks

    Chunker.split = split  # type: ignore[method-assign]


def instrument() -> None:
    _keep_chunks()
    _timed(FileStore, "get", "fetch")
    _timed(ParseSandbox, "detect", "parse")
    _timed(ParseSandbox, "process", "parse")
    _timed(Chunker, "split", "chunk")
    _timed(Embedder, "embed", "embed")
    for name in ("create_ready", "finish_processing", "replace"):
        _timed(RagStore, name, "insert")


def marker(round_number: int, page: int) -> str:
    return f"Checkpoint round{round_number}x page{page}y was logged by the harbour clerk."


def make_pdf(round_number: int) -> bytes:
    pages = [
        f"Log page {p}. " + PARAGRAPH * 9 + marker(round_number, p) for p in range(1, PAGES + 1)
    ]
    return documents.pdf(pages, title=f"Harbour log {round_number}")


def raw_pypdf_seconds(path: Path) -> float:
    started = time.perf_counter()
    reader = PdfReader(path)
    assert sum(len(page.extract_text()) for page in reader.pages) > 0
    return time.perf_counter() - started


@contextlib.asynccontextmanager
async def fleet(data: Path) -> AsyncIterator[str]:
    """Servers, every component and the bridge, as `aifleet up` starts them; the bridge URL."""
    servers = {
        "nats_url": EmbeddedNats(data / "nats", config=REPO / "nats-server.conf"),
        "database_url": EmbeddedPostgres(data / "postgres"),
        "redis_url": EmbeddedValkey(data / "valkey", port=free_port()),
    }
    try:
        urls = await asyncio.gather(*(asyncio.to_thread(s.start) for s in servers.values()))
        settings = Settings.model_validate(dict(zip(servers, urls, strict=True)))
        components = [load(name) for name in available()]
        worker = Worker(components, settings)
        await worker.start()
        bridge = Embedded(BridgeSettings(host="127.0.0.1", port=0, auth="off", rate_per_second=0))
        serving = asyncio.create_task(bridge.run(settings.nats_url, [c.name for c in components]))
        try:
            yield bridge.url
        finally:
            bridge.stop()
            await serving
            await worker.stop()
    finally:
        for server in reversed(list(servers.values())):
            await asyncio.to_thread(server.stop)


async def until(check: Callable[[], Any], timeout: float = 300) -> float:
    """Seconds on the monotonic clock when `await check()` first returns true."""
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise TimeoutError("not reached in time")
        await asyncio.sleep(POLL)
    return time.monotonic()


def model_alone_seconds(model: MiniLM, texts: list[str]) -> float:
    """The same chunks through the embedding model in this process, in RAG's batches."""
    started = time.perf_counter()
    for first in range(0, len(texts), RagSettings().embed_batch):
        model.embed(texts[first : first + RagSettings().embed_batch])
    return time.perf_counter() - started


async def one_round(
    client: httpx.AsyncClient, round_number: int, path: Path, model: MiniLM
) -> dict[str, Any]:
    tenant = f"bench{uuid.uuid4().hex[:10]}"
    headers = {"X-Tenant-ID": tenant}
    data = make_pdf(round_number)
    path.write_bytes(data)
    CLOCK.clear()
    CHUNKS.clear()
    started = time.monotonic()
    reply = await client.post(
        "/api/v1/ingestion/upload",
        headers=headers,
        files={"file": ("harbour-log.pdf", data, "application/pdf")},
    )
    uploaded = time.monotonic()
    assert reply.status_code == 201, reply.text
    file_id = reply.json()["file_id"]
    last_page = marker(round_number, PAGES)

    async def searchable() -> bool:
        found = await client.post(
            "/api/v1/rag/search",
            headers=headers,
            json={"query_text": last_page, "mode": "keyword", "top_k": 1, "skip_cache": True},
        )
        results = found.json().get("results", [])
        return bool(results) and results[0]["metadata"].get("file_id") == file_id

    async def ingested() -> bool:
        found = await client.get(f"/api/v1/ingestion/files/{file_id}", headers=headers)
        status = found.json()["file"]["status"]
        assert status != "failed", found.text
        return bool(status == "ingested")

    search_at, ingested_at = await asyncio.gather(until(searchable), until(ingested))
    stages = {stage: round(CLOCK[stage], 3) for stage in STAGES}
    total = ingested_at - started
    return {
        "round": round_number,
        "bytes": len(data),
        "upload_s": round(uploaded - started, 3),
        "searchable_s": round(search_at - started, 3),
        "ingested_s": round(total, 3),
        "stages_s": stages,
        "other_s": round(total - sum(stages.values()), 3),
        "raw_pypdf_s": round(raw_pypdf_seconds(path), 3),
        "chunks": len(CHUNKS),
        "tokens_per_chunk": round(statistics.mean(model.count_tokens(CHUNKS)), 1),
        "embed_model_alone_s": round(model_alone_seconds(model, list(CHUNKS)), 3),
    }


async def main(rounds: int) -> dict[str, Any]:
    instrument()
    with tempfile.TemporaryDirectory(prefix="aifleet-bench-e2e-") as tmp:
        directory = Path(tmp)
        async with fleet(directory) as url, httpx.AsyncClient(base_url=url, timeout=60) as client:
            for _ in range(100):
                if (await client.get("/readyz")).status_code == 200:
                    break
                await asyncio.sleep(0.1)
            model = MiniLM.load()
            # Warm: the forkserver, the ONNX session and the first SQL plans are not measured.
            await one_round(client, 0, directory / "round.pdf", model)
            runs = []
            for number in range(1, rounds + 1):
                run = await one_round(client, number, directory / "round.pdf", model)
                runs.append(run)
                print(json.dumps(run), flush=True)

    def median(get: Callable[[dict[str, Any]], float]) -> float:
        return round(statistics.median(get(r) for r in runs), 3)

    stages = {s: round(statistics.median(r["stages_s"][s] for r in runs), 3) for s in STAGES}
    ingested = median(lambda r: r["ingested_s"])
    return {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_average": [round(x, 2) for x in os.getloadavg()],
        },
        "pages": PAGES,
        "rounds": runs,
        "median_s": {
            "upload": median(lambda r: r["upload_s"]),
            "searchable": median(lambda r: r["searchable_s"]),
            "ingested": ingested,
            **stages,
            "other": median(lambda r: r["other_s"]),
            "raw_pypdf": median(lambda r: r["raw_pypdf_s"]),
            "embed_model_alone": median(lambda r: r["embed_model_alone_s"]),
        },
        "chunks": median(lambda r: r["chunks"]),
        "ratio_embed_to_model_alone": median(
            lambda r: r["stages_s"]["embed"] / r["embed_model_alone_s"]
        ),
        "share_of_ingested": {s: round(stages[s] / ingested, 3) for s in STAGES},
        "ratio_ingested_to_raw_pypdf": median(lambda r: r["ingested_s"] / r["raw_pypdf_s"]),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    result = asyncio.run(main(args.rounds))
    print(json.dumps(result, indent=2))
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
