"""The prompt component: render throughput over NATS versus in process, build_context latency.

    python -m benchmarks.prompt                 # ~1 min; prints JSON, writes results/prompt.json
    python -m benchmarks.prompt --seconds 3     # shorter passes

Starts an embedded nats-server and PostgreSQL, and the prompt worker in its own process (on
uvloop, like `aifleet worker prompt`). The load generator is this process, on uvloop too; on a
2-core machine the two share the cores, so the NATS figures include the client's cost.

1. `render` over NATS of a cached template (a chat template of two messages, three variables,
   ~400 bytes rendered; msgpack; 64 requests in flight), against rendering the same compiled
   template in process (`CompiledTemplate.render`, what the worker does per request). Each
   NATS render also resolves the version in PostgreSQL (one indexed single-row query), because
   the cache holds only immutable (tenant, name, version) entries.
2. `build_context` for 200 messages (100 turns of ~60-token questions and ~120-token answers,
   `gpt-4o`, exact o200k_base counts), one request at a time: over NATS, and the function in
   process. Two budgets: 4,000 tokens (most turns dropped) and 100,000 (all kept).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import msgpack

from benchmarks.common import TENANT, run_async
from subjects import request_subject

REPO = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results" / "prompt.json"
HEADERS = {"Content-Type": "application/msgpack"}
IN_FLIGHT = 64

TEMPLATE: dict[str, Any] = {
    "name": "bench.answer",
    "messages": [
        {
            "role": "system",
            "content": "You are {{ persona }}. Answer in {{language}}, in at most three sentences,"
            " citing the documents you used. Never invent facts; say so when unsure.",
        },
        {
            "role": "user",
            "content": "Question: {{ question }}\nAnswer as {{persona}} would, in {{language}}.",
        },
    ],
    "config": {"model": "gpt-4o-mini", "temperature": 0.2},
}
VARIABLES = {
    "persona": "a careful support engineer",
    "language": "English",
    "question": "How do I rotate the API key of a tenant without downtime for its workers?",
}


def conversation(turns: int = 100) -> list[dict[str, str]]:
    question = "How does the fleet keep a request's deadline when it calls another component? "
    answer = (
        "The worker forwards the remaining time in the Aifleet-Timeout-Ms header, so the callee "
        "gives up when the caller does; the trace context travels with it. "
    )
    messages = []
    for i in range(turns):
        messages.append({"role": "user", "content": f"({i}) " + question * 4})
        messages.append({"role": "assistant", "content": f"({i}) " + answer * 4})
    return messages


# -- the worker process ---------------------------------------------------------------------


async def serve(nats_url: str, database_url: str) -> None:
    from benchmarks.servers import ready, until_sigterm
    from workers.prompt import service as prompt
    from workers.runtime.config import Settings
    from workers.runtime.worker import Worker

    settings = Settings.model_validate(
        {"nats_url": nats_url, "database_url": database_url, "log_level": "WARNING"}
    )
    worker = Worker([prompt.component], settings)
    await worker.start()
    ready()
    await until_sigterm()
    await worker.stop()


# -- measurements ---------------------------------------------------------------------------


async def render_over_nats(nats_url: str, seconds: float) -> dict[str, Any]:
    import nats

    nc = await nats.connect(nats_url)
    subject = request_subject(TENANT, "prompt", "render")
    body = msgpack.packb({"name": TEMPLATE["name"], "variables": VARIABLES})
    latencies: list[float] = []
    errors = 0

    async def one() -> None:
        nonlocal errors
        started = time.perf_counter()
        msg = await nc.request(subject, body, timeout=10, headers=HEADERS)
        latencies.append(time.perf_counter() - started)
        if msg.headers and msg.headers.get("Nats-Service-Error-Code"):
            errors += 1

    for _ in range(200):  # warm: the worker's cache, the pool's connections
        await one()
    latencies.clear()
    deadline = time.perf_counter() + seconds
    started = time.perf_counter()

    async def lane() -> None:
        while time.perf_counter() < deadline:
            await one()

    await asyncio.gather(*(lane() for _ in range(IN_FLIGHT)))
    elapsed = time.perf_counter() - started
    await nc.close()
    latencies.sort()
    return {
        "requests": len(latencies),
        "errors": errors,
        "per_second": round(len(latencies) / elapsed),
        "p50_ms": round(latencies[len(latencies) // 2] * 1000, 2),
        "p99_ms": round(latencies[int(len(latencies) * 0.99)] * 1000, 2),
    }


def render_in_process(seconds: float) -> dict[str, Any]:
    from workers.prompt.render import compile_template

    template = compile_template(None, [(m["role"], "", m["content"]) for m in TEMPLATE["messages"]])
    n = 0
    started = time.perf_counter()
    deadline = started + seconds
    while time.perf_counter() < deadline:
        for _ in range(1000):
            template.render(VARIABLES, max_bytes=1 << 20)
        n += 1000
    elapsed = time.perf_counter() - started
    return {"renders": n, "per_second": round(n / elapsed), "us_each": round(elapsed / n * 1e6, 2)}


async def context_over_nats(nats_url: str, budget: int, repeats: int) -> dict[str, Any]:
    import nats

    nc = await nats.connect(nats_url, max_reconnect_attempts=0)
    subject = request_subject(TENANT, "prompt", "build_context")
    request = {
        "model": "gpt-4o",
        "budget_tokens": budget,
        "system_prompt": "You answer questions about the fleet.",
        "messages": conversation(),
    }
    body = msgpack.packb(request)
    times = []
    reply: dict[str, Any] = {}
    for i in range(repeats + 5):
        started = time.perf_counter()
        msg = await nc.request(subject, body, timeout=30, headers=HEADERS)
        if i >= 5:
            times.append(time.perf_counter() - started)
        reply = msgpack.unpackb(msg.data)
    await nc.close()
    return {
        "budget_tokens": budget,
        "request_bytes": len(body),
        "kept_messages": len(reply["messages"]),
        "total_tokens": reply["total_tokens"],
        "p50_ms": round(statistics.median(times) * 1000, 2),
        "p99_ms": round(sorted(times)[int(len(times) * 0.99)] * 1000, 2),
    }


def context_in_process(budget: int, repeats: int) -> dict[str, Any]:
    from schemas.v1.common_pb2 import ChatMessage
    from schemas.v1.prompt_pb2 import BuildContextRequest
    from workers.prompt import tokens
    from workers.prompt.context import build_context

    req = BuildContextRequest(
        model="gpt-4o",
        budget_tokens=budget,
        system_prompt="You answer questions about the fleet.",
        messages=[ChatMessage(role=m["role"], content=m["content"]) for m in conversation()],
    )
    counter = tokens.counter_for("gpt-4o", approx_factor=1.3)

    async def timed() -> list[float]:
        times = []
        for i in range(repeats + 5):
            started = time.perf_counter()
            await build_context(req, counter)
            if i >= 5:
                times.append(time.perf_counter() - started)
        return times

    times = run_async(timed())
    return {"budget_tokens": budget, "p50_ms": round(statistics.median(times) * 1000, 2)}


async def setup_template(nats_url: str) -> None:
    import nats

    nc = await nats.connect(nats_url)
    body = msgpack.packb(TEMPLATE)
    msg = await nc.request(
        request_subject(TENANT, "prompt", "create_template"), body, timeout=10, headers=HEADERS
    )
    assert not (msg.headers or {}).get("Nats-Service-Error-Code"), msg.data
    await nc.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("mode", nargs="?", default="bench", choices=["bench", "serve"])
    parser.add_argument("--nats-url")
    parser.add_argument("--database-url")
    parser.add_argument("--seconds", type=float, default=8.0, help="length of each render pass")
    parser.add_argument("--passes", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=50, help="build_context requests")
    args = parser.parse_args(argv)
    if args.mode == "serve":
        run_async(serve(args.nats_url, args.database_url))
        return

    from aifleet.embedded import EmbeddedNats, EmbeddedPostgres

    with tempfile.TemporaryDirectory(prefix="aifleet-bench-prompt-") as tmp:
        nats_server = EmbeddedNats(Path(tmp) / "nats", config=REPO / "nats-server.conf")
        postgres = EmbeddedPostgres(Path(tmp) / "pg")
        nats_server.start()
        postgres.start()
        worker = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "benchmarks.prompt",
                "serve",
                "--nats-url",
                nats_server.url,
                "--database-url",
                postgres.dsn,
            ],
            cwd=REPO,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert worker.stdout is not None
            for line in worker.stdout:  # log lines may come first
                if line.strip() == "ready":
                    break
            else:
                raise RuntimeError("the prompt worker exited before it was ready")
            run_async(setup_template(nats_server.url))
            nats_passes = [
                run_async(render_over_nats(nats_server.url, args.seconds))
                for _ in range(args.passes)
            ]
            local_passes = [render_in_process(args.seconds) for _ in range(args.passes)]
            over_nats = max(nats_passes, key=lambda r: r["per_second"])
            in_process = max(local_passes, key=lambda r: r["per_second"])
            contexts = {
                str(budget): {
                    "nats": run_async(context_over_nats(nats_server.url, budget, args.repeats)),
                    "in_process": context_in_process(budget, args.repeats),
                }
                for budget in (4_000, 100_000)
            }
        finally:
            worker.terminate()
            worker.wait(30)
            postgres.stop()
            nats_server.stop()

    report = {
        "command": "python -m benchmarks.prompt " + " ".join(sys.argv[1:]),
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "render": {
            "nats": over_nats,
            "nats_passes": [p["per_second"] for p in nats_passes],
            "in_process": in_process,
            "in_process_passes": [p["per_second"] for p in local_passes],
            "in_process_per_nats": round(in_process["per_second"] / over_nats["per_second"], 1),
        },
        "build_context_200_messages": contexts,
    }
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
