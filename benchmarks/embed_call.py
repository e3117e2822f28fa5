"""What one `gateway.embed` call costs beyond the model: worker CPU and wall time per call over
NATS against the same local model embedding the same texts in this process.

    python -m benchmarks.embed_call             # ~1 min; prints JSON
    python -m benchmarks.embed_call --calls 500

The fleet of benchmarks/rag.py (embedded NATS, PostgreSQL, Valkey; one worker process running
rag, gateway and cache). One call at a time, two rounds of: one short text ("hi"), then eight.
The in-process side loads `MiniLM` here (onnxruntime's default threads, as the worker) and
embeds the same texts the same number of times. CPU is user + system of the worker process
(psutil, all threads) and of this process for the in-process side.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import psutil

from benchmarks.rag import TENANT, with_fleet

SHAPES = {"1 text": ["hi"], "8 texts": ["hi"] * 8}


def worker_process() -> psutil.Process:
    """The fleet's worker: the child of this process running benchmarks.rag serve."""
    for process in psutil.Process().children():
        cmdline = process.cmdline()
        if "benchmarks.rag" in cmdline and "serve" in cmdline:
            return process
    raise RuntimeError("the worker process was not found")


async def measure(nats_url: str, calls: int) -> dict[str, Any]:
    import nats

    from schemas.v1.gateway_pb2 import EmbedRequest
    from schemas.v1.gateway_rpc import GatewayService
    from workers.gateway.embedding import MiniLM
    from workers.runtime.client import Client

    nc = await nats.connect(nats_url)
    client = Client(nc, timeout=60.0)
    worker = worker_process()
    out: dict[str, Any] = {"calls": calls}
    for _ in range(2):
        for shape, texts in SHAPES.items():
            request = EmbedRequest(texts=texts)
            for _ in range(20):
                await client.call_rpc(TENANT, GatewayService.Embed, request)
            cpu, started = sum(worker.cpu_times()[:2]), time.perf_counter()
            for _ in range(calls):
                await client.call_rpc(TENANT, GatewayService.Embed, request)
            out.setdefault(f"nats {shape}", []).append(per_call(cpu, started, calls, worker))
    await nc.close()
    model = MiniLM.load()
    me = psutil.Process()
    for _ in range(2):
        for shape, texts in SHAPES.items():
            for _ in range(20):
                model.embed(texts)
            cpu, started = sum(me.cpu_times()[:2]), time.perf_counter()
            for _ in range(calls):
                model.embed(texts)
            out.setdefault(f"in process {shape}", []).append(per_call(cpu, started, calls, me))
    return out


def per_call(cpu: float, started: float, calls: int, process: psutil.Process) -> dict[str, float]:
    return {
        "cpu_ms": round((sum(process.cpu_times()[:2]) - cpu) / calls * 1000, 2),
        "wall_ms": round((time.perf_counter() - started) / calls * 1000, 2),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=200, help="calls per shape and round")
    args = parser.parse_args(argv)
    result = with_fleet(lambda nats_url, _dsn: measure(nats_url, args.calls))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
