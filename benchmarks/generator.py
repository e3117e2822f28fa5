"""The generator: what drafting an agent adds to the model call it makes, on the offline model.

    python -m benchmarks.generator          # ~1.5 min; writes results/generator.json
    python -m benchmarks.generator --quick    # one short round

Embedded nats-server (the repository's config), PostgreSQL and Valkey; one worker process
`aifleet worker generator agent gateway prompt cache` (uvloop) with no model list, so the
gateway answers with its offline model (structured output: the schema's smallest instance).
This process is the load. One request in flight, contenders alternating by round:

- `gateway`: `gateway.generate` over NATS with exactly the request the generator sends (its
  system and user messages, the agent definition schema as the json_schema response format,
  the gateway's response cache skipped): what a client would do without the generator;
- `generator`: `generator.generate_agent` (cache off): the definition schema and the model
  and tool catalog from the agent component and the gateway over NATS, the same
  gateway.generate, the reply checked (refusal rules, JSON Schema, bounds, fleet), the draft
  stored in PostgreSQL;
- `generator_cached`: the same with `cache_enabled` and an identical request (a cache hit:
  cache.get, the checks again, the draft stored; no model call).

The overhead is the difference of the p50s; CPU per request is the worker's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import msgpack
import psutil
from google.protobuf import json_format
from nats.aio.client import Client as NATS

from benchmarks.common import MSGPACK_HEADERS, TENANT, run_async
from benchmarks.gateway import Call, Cpu, one_at_a_time, over_nats, spawn, stop
from subjects import HEADER_ERROR_CODE, request_subject
from workers.generator import drafting

REPO = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results" / "generator.json"
PROMPT = (
    "A support agent for our billing questions: polite, brief, asks for the invoice number "
    "before anything else, and never promises refunds."
)


def generate_agent(nc: NATS, cached: bool) -> Call:
    subject = request_subject(TENANT, "generator", "generate_agent")
    body = msgpack.packb({"prompt": PROMPT, "cache_enabled": cached})

    async def call() -> bytes:
        msg = await nc.request(subject, body, timeout=60, headers=MSGPACK_HEADERS)
        if (msg.headers or {}).get(HEADER_ERROR_CODE):
            raise RuntimeError(f"generate_agent: {msg.headers} {msg.data[:200]!r}")
        return msg.data

    return call


async def call_json(nc: NATS, component: str, op: str, body: dict[str, Any]) -> dict[str, Any]:
    msg = await nc.request(
        request_subject(TENANT, component, op), json.dumps(body).encode(), timeout=30
    )
    if (msg.headers or {}).get(HEADER_ERROR_CODE):
        raise RuntimeError(f"{component}.{op}: {msg.headers} {msg.data[:200]!r}")
    reply: dict[str, Any] = json.loads(msg.data)
    return reply


async def until_ready(nc: NATS, timeout: float = 180) -> None:
    """Until the generator drafts (migrations done, the gateway's Router built)."""
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        try:
            await generate_agent(nc, cached=False)()
            return
        except Exception:
            await asyncio.sleep(0.2)
    raise RuntimeError("the generator worker did not answer in time")


async def direct_request(nc: NATS) -> bytes:
    """The gateway request the generator makes for PROMPT, built the same way."""
    schemas = await call_json(nc, "agent", "definition_schemas", {})
    models = await call_json(nc, "gateway", "list_models", {})
    known = drafting.Catalog(
        models=[m["name"] for m in models.get("models", []) if m.get("mode") == "chat"], tools={}
    )
    messages = drafting.messages("agent", PROMPT, {}, known)
    fmt = {"name": "AgentDefinition", "schema": schemas["agent_definition"], "strict": False}
    packed: bytes = msgpack.packb(
        {
            "messages": [json_format.MessageToDict(m) for m in messages],
            "max_tokens": 4096,
            "temperature": 0.2,
            "cache": {"skip": True},
            "response_format": {"type": "json_schema", "json_schema": fmt},
        }
    )
    return packed


async def measure(urls: dict[str, str], tmp: Path, args: argparse.Namespace) -> dict[str, Any]:
    import nats

    env = {
        "NATS_URL": urls["nats"],
        "REDIS_URL": urls["redis"],
        "DATABASE_URL": urls["postgres"],
        "AIFLEET_GATEWAY_CACHE_TTL_SECONDS": "0",
        "AIFLEET_LOG_LEVEL": "WARNING",
    }
    worker = spawn(["generator", "agent", "gateway", "prompt", "cache"], env, tmp / "worker.log")
    nc = await nats.connect(urls["nats"])
    try:
        await until_ready(nc)
        cpu = Cpu({"worker": psutil.Process(worker.pid)})
        contenders = {
            "gateway": over_nats(nc, "generate", await direct_request(nc)),
            "generator": generate_agent(nc, cached=False),
            "generator_cached": generate_agent(nc, cached=True),
        }
        for call in contenders.values():
            await one_at_a_time(call, 10)
        rounds: dict[str, list[dict[str, Any]]] = {}
        for _ in range(args.rounds):
            for name, call in contenders.items():

                async def work(call: Call = call) -> tuple[dict[str, Any], int]:
                    return await one_at_a_time(call, args.requests), args.requests

                rounds.setdefault(name, []).append(await cpu.per_request(work()))
        best = {n: min(r["p50_ms"] for r in rs) for n, rs in rounds.items()}
        return {
            "rounds": rounds,
            "p50_ms": best,
            "overhead_p50_ms": round(best["generator"] - best["gateway"], 2),
            "cached_vs_gateway": round(best["generator_cached"] / best["gateway"], 2),
            "generator_vs_gateway": round(best["generator"] / best["gateway"], 2),
        }
    finally:
        await nc.close()
        stop(worker)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="one short round")
    args = parser.parse_args(argv)
    args.rounds, args.requests = (1, 40) if args.quick else (3, 100)

    from aifleet.embedded import EmbeddedNats, EmbeddedPostgres, EmbeddedValkey

    load_before = os.getloadavg()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="aifleet-bench-generator-") as tmp:
        nats_server = EmbeddedNats(Path(tmp) / "nats", config=REPO / "nats-server.conf")
        valkey = EmbeddedValkey(Path(tmp) / "valkey")
        postgres = EmbeddedPostgres(Path(tmp) / "pg")
        servers = [nats_server, valkey, postgres]
        for server in servers:
            server.start()
        try:
            urls = {"nats": nats_server.url, "redis": valkey.url, "postgres": postgres.dsn}
            figures = run_async(measure(urls, Path(tmp), args))
        finally:
            for server in reversed(servers):
                server.stop()
    report = {
        "command": "python -m benchmarks.generator " + " ".join(sys.argv[1:]),
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "load_average_before": [round(x, 2) for x in load_before],
            "load_average_after": [round(x, 2) for x in os.getloadavg()],
        },
        "seconds": round(time.perf_counter() - started, 1),
        **figures,
    }
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
