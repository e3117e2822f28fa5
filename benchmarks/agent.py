"""The agent component: what one chat turn adds to the model call it makes, and many sessions.

    python -m benchmarks.agent            # ~2 min; prints a summary, writes results/agent.json
    python -m benchmarks.agent --quick    # ~1 min

Embedded nats-server (the repository's config), PostgreSQL and Valkey; the fake OpenAI server
in a process of its own answering every request after a fixed delay; one worker process
`aifleet worker agent gateway prompt cache` (uvloop), its model list pointing at the fake and
the gateway's exact cache off; or, `--processes each`, one worker process per component, as
the fleet is deployed (the agent's turn then does not share an event loop with the gateway's
work after its reply). This process is the load; "worker" CPU is all worker processes'.

1. Overhead per turn, 1 in flight, contenders alternating, fake latency 20 ms:
   - `gateway`: `gateway.generate` over NATS with the messages a chat turn sends (the agent's
     system prompt and the user message), what a client would do without the agent;
   - `agent`: `agent.chat` in a new session (so the model gets exactly those messages): agent
     and permission lookup (prompt.build_context over NATS only when the messages might not
     fit), the same gateway.generate, then the run and its step stored with their events
     (outbox) and the session's messages in one statement.
   First in blocks (`--rounds N` of 150 each), for the worker's CPU per call; then `--pairs`
   of one direct call and one turn alternating call by call, so the machine's load changes
   hit both alike, each call `--gap-ms` after the previous reply (a turn's events are
   published after its reply; back to back, the next call would wait for them). The overhead
   is the interleaved p50s' difference (the median of the pairs' differences next to it);
   the blocks' estimate (the best agent round's p50 minus the best gateway round's) is kept
   as `overhead_best_rounds_ms`.
2. 200 concurrent sessions against a 200 ms fake: 200 callers, each chatting in its own
   session turn after turn for a fixed time: turns/s against the ideal (200 / 0.2 s = 1000/s)
   and p50/p99 per turn; the same 200 callers on `gateway.generate` directly as the baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import msgpack
import psutil
import yaml
from nats.aio.client import Client as NATS

from benchmarks.common import MSGPACK_HEADERS, TENANT, run_async
from benchmarks.gateway import Call, Cpu, lanes, one_at_a_time, over_nats, spawn, stop, timed
from subjects import HEADER_ERROR_CODE, request_subject

REPO = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results" / "agent.json"
SYSTEM = "You are a careful support engineer. Answer briefly."
QUESTION = (
    "How do I rotate the API key of a tenant without downtime for its workers, and which of "
    "the fleet's components must be restarted afterwards?"
)
AGENT = "bench-agent"
SESSIONS = 200
SLOW_PROVIDER = 0.2


def agent_chat(nc: NATS, session: str | None) -> Call:
    """One chat turn (msgpack); a new session each time when `session` is None."""
    subject = request_subject(TENANT, "agent", "chat")

    async def call() -> bytes:
        body = {"agent_id": AGENT, "message": QUESTION, "session_id": session or uuid.uuid4().hex}
        msg = await nc.request(subject, msgpack.packb(body), timeout=120, headers=MSGPACK_HEADERS)
        if (msg.headers or {}).get(HEADER_ERROR_CODE):
            raise RuntimeError(f"chat: {msg.headers} {msg.data[:200]!r}")
        return msg.data

    return call


async def counted(block: Awaitable[dict[str, Any]], count: int) -> tuple[dict[str, Any], int]:
    """A block of `count` one-at-a-time calls with its count, for the CPU it cost per call."""
    return await block, count


async def interleaved(direct: Call, chat: Call, pairs: int, gap: float) -> dict[str, Any]:
    """`pairs` direct calls and chat turns alternating one by one (which goes first swaps each
    pair), so a change in the machine's load hits both alike: their p50s, the difference, and
    the median of the pairs' differences. Each call starts `gap` seconds after the previous
    reply, when what a worker does after replying (publishing events) is done, so neither
    contender's call pays for the other's."""
    times: dict[str, list[float]] = {"gateway": [], "agent": []}
    differences: list[float] = []
    for i in range(pairs):
        order = [("gateway", direct), ("agent", chat)]
        for name, call in order if i % 2 == 0 else order[::-1]:
            await asyncio.sleep(gap)
            if not await timed(call, times[name]):
                raise RuntimeError(f"{name} call failed")
        differences.append(times["agent"][-1] - times["gateway"][-1])
    p50 = {name: statistics.median(t) * 1000 for name, t in times.items()}
    return {
        "pairs": pairs,
        "gateway_p50_ms": round(p50["gateway"], 2),
        "agent_p50_ms": round(p50["agent"], 2),
        "overhead_p50_ms": round(p50["agent"] - p50["gateway"], 2),
        "median_pair_difference_ms": round(statistics.median(differences) * 1000, 2),
    }


def round_robin(calls: list[Call]) -> Call:
    """One call that is each of `calls` in turn: each of the 200 callers is one session."""
    turn = iter(range(10**12))

    async def call() -> object:
        return await calls[next(turn) % len(calls)]()

    return call


async def until_ready(nc: NATS, timeout: float = 180) -> None:
    """Until the agent answers (migrations done, the gateway's Router built), creating the
    benchmark agent on the way."""
    body = msgpack.packb(
        {"agent_id": AGENT, "agent": {"name": "Bench", "model": "bench", "system_prompt": SYSTEM}}
    )
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        try:
            msg = await nc.request(
                request_subject(TENANT, "agent", "create_agent"),
                body,
                timeout=10,
                headers=MSGPACK_HEADERS,
            )
            code = (msg.headers or {}).get(HEADER_ERROR_CODE)
            if code in (None, "409"):
                await agent_chat(nc, None)()  # the gateway is up too
                return
        except Exception:
            pass
        await asyncio.sleep(0.2)
    raise RuntimeError("the agent worker did not answer in time")


async def measure(
    urls: dict[str, str], fake: Any, tmp: Path, args: argparse.Namespace
) -> dict[str, Any]:
    import nats

    from tests.support.fake_openai import Fault

    config = tmp / "models.yaml"
    model = {"model": "openai/primary", "api_base": fake.base_url, "api_key": "k"}
    config.write_text(
        yaml.safe_dump(
            {
                "model_list": [{"model_name": "bench", "litellm_params": model}],
                "router_settings": {"num_retries": 0},
            }
        )
    )
    env = {
        "NATS_URL": urls["nats"],
        "REDIS_URL": urls["redis"],
        "DATABASE_URL": urls["postgres"],
        "AIFLEET_GATEWAY_CONFIG": str(config),
        "AIFLEET_GATEWAY_CACHE_TTL_SECONDS": "0",
        "AIFLEET_CONCURRENCY": "512",
        "AIFLEET_LOG_LEVEL": "WARNING",
    }
    components = ["agent", "gateway", "prompt", "cache"]
    groups = [components] if args.processes == "one" else [[c] for c in components]
    workers = [spawn(g, env, tmp / f"worker-{'-'.join(g)}.log") for g in groups]
    nc = await nats.connect(urls["nats"])
    try:
        fake.fault("*", Fault(delay=0.02, times=None))
        await until_ready(nc)
        cpu = Cpu({"load": psutil.Process(), "worker": [psutil.Process(w.pid) for w in workers]})
        direct = over_nats(
            nc,
            "generate",
            msgpack.packb(
                {
                    "model": "bench",
                    "messages": [
                        {"role": "system", "content": SYSTEM},
                        {"role": "user", "content": QUESTION},
                    ],
                }
            ),
        )
        turn: dict[str, Any] = {"provider_latency_ms": 20}
        for warm in (direct, agent_chat(nc, None)):
            await one_at_a_time(warm, 10)
        for _ in range(args.rounds):
            for name, call in (("gateway", direct), ("agent", agent_chat(nc, None))):
                block = counted(one_at_a_time(call, args.requests), args.requests)
                turn.setdefault(name, []).append(await cpu.per_request(block))
        p50 = {n: min(r["p50_ms"] for r in turn[n]) for n in ("gateway", "agent")}
        turn["overhead_best_rounds_ms"] = round(p50["agent"] - p50["gateway"], 2)
        turn["interleaved"] = await interleaved(
            direct, agent_chat(nc, None), args.pairs, args.gap_ms / 1000
        )
        turn["overhead_p50_ms"] = turn["interleaved"]["overhead_p50_ms"]

        fake.reset()
        fake.fault("*", Fault(delay=SLOW_PROVIDER, times=None))
        sessions = [uuid.uuid4().hex for _ in range(SESSIONS)]
        concurrent: dict[str, Any] = {
            "sessions": SESSIONS,
            "provider_latency_ms": SLOW_PROVIDER * 1000,
            "ideal_turns_per_second": SESSIONS / SLOW_PROVIDER,
        }
        contenders: dict[str, list[Call]] = {
            "gateway": [direct] * SESSIONS,
            "agent": [agent_chat(nc, session) for session in sessions],
        }
        for name, calls in contenders.items():
            result = await cpu.per_request(lanes(round_robin(calls), SESSIONS, args.seconds))
            result["vs_ideal"] = round(result.get("per_second", 0) / (SESSIONS / SLOW_PROVIDER), 3)
            concurrent[name] = result
        return {
            "worker_processes": args.processes,
            "turn_overhead": turn,
            "concurrent_sessions": concurrent,
        }
    finally:
        await nc.close()
        for worker in workers:
            stop(worker)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="one short round")
    parser.add_argument("--rounds", type=int, help="rounds of part 1 (default 1 quick, else 2)")
    parser.add_argument(
        "--processes",
        choices=["one", "each"],
        default="one",
        help="one worker process for all four components, or one per component",
    )
    parser.add_argument("--pairs", type=int, help="interleaved pairs of part 1 (60 quick, 300)")
    parser.add_argument(
        "--gap-ms", type=float, default=10.0, help="pause before each interleaved call"
    )
    args = parser.parse_args(argv)
    rounds, args.requests, args.seconds = (1, 60, 8.0) if args.quick else (2, 150, 20.0)
    args.rounds = args.rounds or rounds
    args.pairs = args.pairs or (60 if args.quick else 300)

    from aifleet.embedded import EmbeddedNats, EmbeddedPostgres, EmbeddedValkey
    from tests.support.fake_openai import FakeOpenAIProcess

    load_before = os.getloadavg()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="aifleet-bench-agent-") as tmp:
        servers = [
            EmbeddedNats(Path(tmp) / "nats", config=REPO / "nats-server.conf"),
            EmbeddedValkey(Path(tmp) / "valkey"),
            EmbeddedPostgres(Path(tmp) / "pg"),
        ]
        fake = FakeOpenAIProcess()
        for server in servers:
            server.start()
        fake.start()
        try:
            nats_server, valkey, postgres = servers
            assert isinstance(nats_server, EmbeddedNats)
            assert isinstance(valkey, EmbeddedValkey)
            assert isinstance(postgres, EmbeddedPostgres)
            urls = {"nats": nats_server.url, "redis": valkey.url, "postgres": postgres.dsn}
            figures = run_async(measure(urls, fake, Path(tmp), args))
        finally:
            fake.stop()
            for server in reversed(servers):
                server.stop()
    report = {
        "command": "python -m benchmarks.agent " + " ".join(sys.argv[1:]),
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
