"""The offline embedding model (all-MiniLM-L6-v2 int8 ONNX): load cost, memory, throughput.

    python -m benchmarks.embedding            # ~30 s; prints JSON, writes results/embedding.json
    python -m benchmarks.embedding --quick    # ~8 s

In process, no NATS: what one gateway worker pays per request before any messaging.

1. Load: reading and sha256-checking model.onnx (23 MB) and tokenizer.json, building the
   onnxruntime session. The first load also imports onnxruntime and tokenizers; the figure
   reported is the median of the loads after it. RSS is measured around the first load.
2. Throughput in texts/s for sentences of 10-30 words (~26 word pieces): one text per call
   (how a chat request embeds its query), through `asyncio.to_thread` too (how the gateway
   calls it), and 64 texts per call (a batch of short chunks); then 64 documents of ten such
   sentences, truncated at 256 tokens. RSS is what each step added, the arena keeping its peak.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psutil

from benchmarks.common import run_async
from workers.gateway.embedding import (
    MODEL_SHA256,
    TOKENIZER_FILE,
    TOKENIZER_SHA256,
    MiniLM,
    model_file,
    read_verified,
)

RESULTS = Path(__file__).resolve().parent / "results" / "embedding.json"

WORDS = (
    "the worker restarts after a deploy and the request times out while the gateway retries "
    "with another provider so the customer sees a slower answer but no error invoice march "
    "tenant budget limit token usage billing report monthly cache hit rate latency database "
    "index query password reset account email address support ticket priority queue backlog "
    "stream consumer acknowledges message redelivered twice because deadline expired during "
    "embedding document chunk search ranking relevant results summary translation spanish"
)


def sentences(count: int, seed: int = 7) -> list[str]:
    """Reproducible sentences of 10 to 30 ordinary words."""
    rng = random.Random(seed)
    words = WORDS.split()
    return [
        " ".join(rng.choice(words) for _ in range(rng.randint(10, 30))).capitalize() + "."
        for _ in range(count)
    ]


def texts_per_second(call: Callable[[], object], texts_per_call: int, seconds: float) -> float:
    """Calls `call` for about `seconds` (after one warm-up call) and counts texts."""
    call()
    calls = 0
    start = time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        call()
        calls += 1
    return calls * texts_per_call / elapsed


async def threaded_per_second(model: MiniLM, texts: list[str], seconds: float) -> float:
    """One text per call through asyncio.to_thread, one call in flight at a time."""
    await asyncio.to_thread(model.embed, texts[:1])
    calls = 0
    start = time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        await asyncio.to_thread(model.embed, texts[calls % len(texts) : calls % len(texts) + 1])
        calls += 1
    return calls / elapsed


def verify_ms(repeats: int) -> float:
    """Median time to read and sha256-check both files (the integrity part of a load)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        read_verified(model_file(), MODEL_SHA256)
        read_verified(TOKENIZER_FILE, TOKENIZER_SHA256)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


async def run(quick: bool) -> dict[str, float]:
    """Load figures, RSS and texts/s at batch 1 and 64; `quick` shortens every pass."""
    seconds = 1.0 if quick else 5.0
    process = psutil.Process()
    rss_before = process.memory_info().rss

    start = time.perf_counter()
    model = MiniLM.load()
    first_load = time.perf_counter() - start
    rss_loaded = process.memory_info().rss

    texts = sentences(640)
    documents = [f"{i}: " + " ".join(texts[i * 10 : i * 10 + 10]) for i in range(64)]
    cursor = iter(range(10**9))

    def one() -> object:
        i = next(cursor) % len(texts)
        return model.embed(texts[i : i + 1])

    def batch() -> object:
        i = next(cursor) % 10 * 64
        return model.embed(texts[i : i + 64])

    batch1 = texts_per_second(one, 1, seconds)
    batch1_thread = await threaded_per_second(model, texts, seconds)
    batch64 = texts_per_second(batch, 64, seconds)
    rss_short = process.memory_info().rss
    long64 = texts_per_second(lambda: model.embed(documents), 64, seconds)
    rss_long = process.memory_info().rss

    loads = []
    for _ in range(3 if quick else 7):
        start = time.perf_counter()
        MiniLM.load()
        loads.append(time.perf_counter() - start)
    return {
        "first_load_ms": round(first_load * 1000, 1),
        "load_ms": round(statistics.median(loads) * 1000, 1),
        "verify_sha256_ms": round(verify_ms(5), 1),
        "rss_added_by_load_mb": round((rss_loaded - rss_before) / 2**20, 1),
        "rss_added_by_batch64_mb": round((rss_short - rss_loaded) / 2**20, 1),
        "rss_added_by_batch64_256_tokens_mb": round((rss_long - rss_loaded) / 2**20, 1),
        "tokens_per_text_mean": round(statistics.mean(model.count_tokens(texts)), 1),
        "batch1_texts_per_s": round(batch1, 1),
        "batch1_to_thread_texts_per_s": round(batch1_thread, 1),
        "batch64_texts_per_s": round(batch64, 1),
        "batch64_256_tokens_texts_per_s": round(long64, 1),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="1-second passes")
    args = parser.parse_args(argv)
    load_before = os.getloadavg()[0]
    figures = run_async(run(args.quick))
    report = {
        "command": "python -m benchmarks.embedding " + " ".join(sys.argv[1:]),
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            # Other processes share the cores: texts/s only compare at a similar load.
            "load_average_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        },
        "embedding": figures,
    }
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
