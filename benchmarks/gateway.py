"""The LLM gateway: what it adds to a litellm call, cache hits, local embeddings, cold start.

    python -m benchmarks.gateway            # ~3 min; prints a summary, writes results/gateway.json
    python -m benchmarks.gateway --quick    # ~45 s

An embedded nats-server (the repository's config: JetStream fsyncs every event before its ack)
and Valkey, the fake OpenAI server in a process of its own (tests/support/fake_openai.py), and
the worker as `aifleet worker gateway cache` (uvloop), its model list pointing at the fake and
its exact cache off (AIFLEET_GATEWAY_CACHE_TTL_SECONDS=0). This process is the load, on uvloop
too; everything shares the machine's cores, so the CPU each process spends per request is
reported beside the times.

1. Provider path, the same chat request (system + user message, ~40 words; the fake echoes the
   user message), p50/p99 at 1 in flight and req/s at 64 in flight, contenders alternating:
   - `litellm`: litellm.acompletion(model="openai/primary", api_base=fake) in this process;
   - `router`: the gateway's own ModelRouter (a litellm Router built from the same YAML, the
     deployment priced in litellm_params as a self-hosted model is) in this process, timeout
     30 s; `router_unpriced`: the same without prices; `router_per_request_timeout`: the
     timeout the gateway passes, what is left of the caller's deadline (a new float each call);
   - `gateway`: `generate` over NATS (msgpack).
   Streaming at 1 in flight, the router's stream against `generate_stream` over NATS: time to
   the first chunk with text and to the last, with the fake sending every chunk at once and
   with 5 ms between chunks.
2. Cache hits: `generate_cached` = the same request asking for the exact cache (cache.ttl_seconds
   set: the path of a worker whose default TTL is on), so every request after the first is a
   hit; `cache_get` = a bare `cache.get` over NATS. Pieces of the gateway's own work, timed alone
   from this process: the admit Lua script on Valkey, a JetStream publish of an event, the
   msgpack codec of a request and its reply.
3. Embeddings (all-minilm-l6-v2, local ONNX), texts/s at batch 1 and 64: `embed` over NATS, the
   same ModelRouter in this process, and the model alone (benchmarks.embedding's passes).
4. Cold start: `aifleet worker gateway` alone (no model list: the offline models) until it
   answers `list_models`; RSS after a second idle, and after its first local embedding (the
   model loads on first use). The long-running worker is stopped first (same queue group).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import gc
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgpack
import psutil
from nats.aio.client import Client as NATS
from nats.errors import NoRespondersError

from benchmarks.common import (
    CACHE_GET_BODY,
    CACHE_GET_SUBJECT,
    CACHE_SET_BODY,
    CACHE_SET_SUBJECT,
    MSGPACK_HEADERS,
    TENANT,
    run_async,
)
from benchmarks.embedding import sentences, texts_per_second, threaded_per_second
from schemas.v1.common_pb2 import ChatMessage
from schemas.v1.gateway_pb2 import GenerateRequest
from subjects import HEADER_ERROR_CODE, event_subject, request_subject

if TYPE_CHECKING:  # litellm's import (~2 s) waits until the worker is starting
    from tests.support.fake_openai import FakeOpenAIProcess
    from workers.gateway.router import ModelRouter

REPO = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results" / "gateway.json"
AIFLEET = Path(sys.executable).parent / "aifleet"
IN_FLIGHT = 64
PRICES = {"input_cost_per_token": 1e-6, "output_cost_per_token": 2e-6}
MESSAGES = [
    {"role": "system", "content": "You are a careful support engineer. Answer briefly."},
    {
        "role": "user",
        "content": "How do I rotate the API key of a tenant without downtime for its workers, "
        "and which of the fleet's components must be restarted afterwards?",
    },
]
GENERATE = msgpack.packb({"messages": MESSAGES})
GENERATE_CACHED = msgpack.packb({"messages": MESSAGES, "cache": {"ttl_seconds": 3600}})

Call = Callable[[], Awaitable[object]]


def chat_request() -> GenerateRequest:
    return GenerateRequest(
        messages=[ChatMessage(role=m["role"], content=m["content"]) for m in MESSAGES]
    )


# -- timing -------------------------------------------------------------------------------------


def summary(times: list[float], errors: int, elapsed: float | None = None) -> dict[str, Any]:
    times = sorted(times)
    out: dict[str, Any] = {"requests": len(times), "errors": errors}
    if elapsed is not None:
        out["per_second"] = round(len(times) / elapsed, 1)
    if times:
        out["p50_ms"] = round(times[len(times) // 2] * 1000, 2)
        out["p99_ms"] = round(times[int(len(times) * 0.99)] * 1000, 2)
    return out


async def timed(call: Call, times: list[float]) -> bool:
    """Run one call, adding its duration to `times`; False if it failed."""
    started = time.perf_counter()
    try:
        await call()
    except Exception:
        return False
    times.append(time.perf_counter() - started)
    return True


async def one_at_a_time(call: Call, count: int) -> dict[str, Any]:
    times: list[float] = []
    failed = sum([not await timed(call, times) for _ in range(count)])
    return summary(times, failed)


async def lanes(call: Call, in_flight: int, seconds: float) -> tuple[dict[str, Any], int]:
    """`in_flight` callers in a loop for `seconds`; the summary and the number of calls."""
    times: list[float] = []
    failed = 0
    deadline = time.perf_counter() + seconds

    async def lane() -> None:
        nonlocal failed
        while time.perf_counter() < deadline:
            ok = await timed(call, times)  # awaited first: `x += await` would race
            failed += not ok

    started = time.perf_counter()
    await asyncio.gather(*(lane() for _ in range(in_flight)))
    return summary(times, failed, time.perf_counter() - started), len(times) + failed


class Cpu:
    """User + system CPU of the processes taking part, to divide by the requests served."""

    def __init__(self, processes: dict[str, psutil.Process | list[psutil.Process]]) -> None:
        self.processes = {n: p if isinstance(p, list) else [p] for n, p in processes.items()}

    def now(self) -> dict[str, float]:
        """Each name's CPU seconds so far (a list of processes counts as one)."""
        return {
            name: sum(sum(p.cpu_times()[:2]) for p in group)
            for name, group in self.processes.items()
        }

    async def per_request(self, work: Awaitable[tuple[dict[str, Any], int]]) -> dict[str, Any]:
        before = self.now()
        result, calls = await work
        after = self.now()
        result["cpu_us_per_request"] = {
            name: round((after[name] - before[name]) / max(calls, 1) * 1e6)
            for name in self.processes
        }
        return result


def processes(worker: subprocess.Popen[bytes]) -> dict[str, psutil.Process]:
    """This process (the load), the worker, and the servers among this process's children."""
    found = {"load": psutil.Process(), "worker": psutil.Process(worker.pid)}
    needles = {"fake_openai": "provider", "nats-server": "nats", "valkey-server": "valkey"}
    for child in psutil.Process().children(recursive=True):
        line = " ".join(child.cmdline())
        found |= {name: child for needle, name in needles.items() if needle in line}
    return found


# -- the worker ---------------------------------------------------------------------------------


def spawn(components: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """`aifleet worker COMPONENTS` with the fleet's variables: what an operator runs."""
    with log.open("ab") as out:
        return subprocess.Popen(
            [str(AIFLEET), "worker", *components],
            cwd=REPO,
            env={**os.environ, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
        )


async def until_answers(nc: NATS, worker: subprocess.Popen[bytes], timeout: float = 90) -> float:
    """Seconds from now until the gateway answers `list_models` (the Router is built then)."""
    subject = request_subject(TENANT, "gateway", "list_models")
    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        if worker.poll() is not None:
            raise RuntimeError(f"the gateway worker exited with {worker.returncode}")
        try:
            msg = await nc.request(subject, b"", timeout=5, headers=MSGPACK_HEADERS)
        except NoRespondersError:
            await asyncio.sleep(0.01)
            continue
        if not (msg.headers or {}).get(HEADER_ERROR_CODE):
            return time.perf_counter() - started
    raise RuntimeError("the gateway worker did not answer in time")


def stop(worker: subprocess.Popen[bytes]) -> None:
    worker.terminate()
    try:
        worker.wait(30)
    except subprocess.TimeoutExpired:
        worker.kill()
        worker.wait()


def over_nats(nc: NATS, op: str, body: bytes, subject: str = "") -> Call:
    """One msgpack request; raises on an error reply."""
    subject = subject or request_subject(TENANT, "gateway", op)

    async def call() -> bytes:
        msg = await nc.request(subject, body, timeout=60, headers=MSGPACK_HEADERS)
        if (msg.headers or {}).get(HEADER_ERROR_CODE):
            raise RuntimeError(f"{op}: {msg.headers}")
        return msg.data

    return call


# -- 1 and 2: generate ---------------------------------------------------------------------------


def direct_calls(
    base_url: str, config: Path, unpriced: Path
) -> tuple[dict[str, Call], ModelRouter]:
    """The in-process contenders, and the gateway's ModelRouter (for streaming)."""
    import litellm

    from workers.gateway.chat import chat_params
    from workers.gateway.config import GatewaySettings, load_config
    from workers.gateway.router import ModelRouter

    router = ModelRouter(load_config(GatewaySettings(config=config)))
    bare = ModelRouter(load_config(GatewaySettings(config=unpriced)))
    params = chat_params(chat_request())

    async def plain() -> object:
        return await litellm.acompletion(
            model="openai/primary", api_base=base_url, api_key="k", messages=MESSAGES
        )

    async def routed() -> object:
        return await router.complete("chat", params, 30.0)

    async def routed_unpriced() -> object:
        return await bare.complete("chat", params, 30.0)

    async def deadline() -> object:
        """The timeout as the gateway passes it: what is left of the caller's 30 s."""
        arrived = time.monotonic()
        return await router.complete("chat", params, arrived + 30.0 - time.monotonic() - 0.1)

    calls: dict[str, Call] = {
        "litellm": plain,
        "router_unpriced": routed_unpriced,
        "router": routed,
        "router_per_request_timeout": deadline,
    }
    return calls, router


async def first_and_last(chunks: Any, has_text: Callable[[Any], bool]) -> tuple[float, float]:
    """Seconds to the first chunk with text and to the end of the stream."""
    started = time.perf_counter()
    first = 0.0
    async for chunk in await chunks:
        if not first and has_text(chunk):
            first = time.perf_counter() - started
    return first, time.perf_counter() - started


async def streaming(
    nc: NATS, router: ModelRouter, fake: FakeOpenAIProcess, counts: tuple[int, int]
) -> dict[str, Any]:
    """Streams at 1 in flight: `burst` as the fake sends them (every chunk at once), `paced`
    with 5 ms between chunks (a fast model); the gateway's chunks go out as the loop gets them."""
    from schemas.codec import MSGPACK_CODEC
    from schemas.v1.gateway_pb2 import GenerateChunk
    from tests.support.fake_openai import Fault
    from workers.gateway.chat import chat_params
    from workers.runtime.client import Client

    client = Client(nc, codec=MSGPACK_CODEC, timeout=60)
    request = chat_request()
    params = chat_params(request)

    async def gateway_stream() -> Any:
        return client.stream(TENANT, "gateway", "generate_stream", request, GenerateChunk)

    def text(part: Any) -> bool:
        return bool(part.choices and part.choices[0].delta.content)

    contenders: dict[str, tuple[Callable[[], Awaitable[Any]], Callable[[Any], bool]]] = {
        "router": (lambda: router.stream("chat", params, 30.0), text),
        "gateway": (gateway_stream, lambda chunk: bool(chunk.delta)),
    }
    out: dict[str, Any] = {}
    for pace, count in zip(("burst", "paced_5ms"), counts, strict=True):
        if pace != "burst":
            fake.fault("primary", Fault(chunk_delay=0.005, times=None))
        figures: dict[str, Any] = {}
        for name, (open_stream, has_text) in contenders.items():
            for _ in range(5):  # warm
                await first_and_last(open_stream(), has_text)
            runs = [await first_and_last(open_stream(), has_text) for _ in range(count)]
            firsts = sorted(r[0] for r in runs)
            figures[name] = {
                "streams": count,
                "first_chunk_p50_ms": round(statistics.median(firsts) * 1000, 2),
                "first_chunk_p99_ms": round(firsts[int(count * 0.99)] * 1000, 2),
                "last_chunk_p50_ms": round(statistics.median(r[1] for r in runs) * 1000, 2),
            }
        fake.reset()
        figures["first_chunk_added_p50_ms"] = round(
            figures["gateway"]["first_chunk_p50_ms"] - figures["router"]["first_chunk_p50_ms"], 2
        )
        out[pace] = figures
    return out


async def pieces(nc: NATS, redis_url: str, reply: bytes, count: int) -> dict[str, Any]:
    """The gateway's own steps around the provider call, each alone at 1 in flight."""
    import redis.asyncio

    from schemas.codec import MSGPACK_CODEC
    from schemas.v1.gateway_pb2 import GenerateResponse
    from workers.gateway.config import TenantLimits
    from workers.gateway.limits import TenantQuota

    client = redis.asyncio.from_url(redis_url)
    quota = TenantQuota(client)
    js = nc.jetstream()
    event = bytes(400)  # about an llm_operation event

    async def admit() -> None:
        await quota.admit(TENANT, TenantLimits())

    async def publish() -> None:
        await js.publish(
            event_subject(TENANT, "bench", "probe"),
            event,
            headers={"Nats-Msg-Id": uuid.uuid4().hex},
        )

    for call in (admit, publish):
        for _ in range(20):
            await call()
    out: dict[str, Any] = {
        "admit_lua": await one_at_a_time(admit, count),
        "jetstream_publish": await one_at_a_time(publish, count),
    }
    await client.aclose()
    response = MSGPACK_CODEC.decode(GenerateResponse, reply)
    started = time.perf_counter()
    for _ in range(1000):
        MSGPACK_CODEC.decode(GenerateRequest, GENERATE)
        MSGPACK_CODEC.encode(response)
    out["codec_request_and_reply_us"] = round((time.perf_counter() - started) * 1000, 1)
    return out


async def generate(calls: dict[str, Call], cpu: Cpu, args: Any) -> dict[str, Any]:
    """p50/p99 at 1 in flight with the contenders taking turns request by request (a change of
    load on the machine hits them all alike), then each at 64 in flight; round after round."""
    for call in calls.values():
        for _ in range(30):  # warm: connections, the cache entry
            await call()
    times: dict[str, list[float]] = {name: [] for name in calls}
    failed = dict.fromkeys(calls, 0)
    loaded: dict[str, list[dict[str, Any]]] = {name: [] for name in calls}
    for _ in range(args.rounds):
        for _ in range(args.requests // args.rounds):
            for name, call in calls.items():
                failed[name] += not await timed(call, times[name])
        for name, call in calls.items():
            loaded[name].append(await cpu.per_request(lanes(call, IN_FLIGHT, args.seconds)))
    out: dict[str, Any] = {}
    for name in calls:
        single, runs = summary(times[name], failed[name]), loaded[name]
        cpu_us = {
            process: round(statistics.median(r["cpu_us_per_request"][process] for r in runs))
            for process in cpu.processes
        }
        out[name] = {
            "p50_ms": single["p50_ms"],
            "p99_ms": single["p99_ms"],
            "one_in_flight": single,
            "per_second": round(statistics.median(r["per_second"] for r in runs), 1),
            "cpu_us_per_request": cpu_us | {"total": sum(cpu_us.values())},
            f"rounds_{IN_FLIGHT}_in_flight": runs,
        }
    return out


# -- 3: embeddings -------------------------------------------------------------------------------


async def embeddings(nc: NATS, router: ModelRouter, seconds: float) -> dict[str, Any]:
    """texts/s of `embed` over NATS, of the same ModelRouter in this process (litellm's share),
    and of the model alone (benchmarks.embedding's passes), at batch 1 and 64, alternating."""
    texts = sentences(640)
    cursor = iter(range(10**9))
    model = await asyncio.to_thread(router.local_embedder)

    def batch(size: int) -> list[str]:
        i = next(cursor) % (len(texts) - size)
        return texts[i : i + size]

    def embed_batch(size: int) -> object:
        return model.embed(batch(size))

    async def nats_embed(size: int) -> int:
        body = msgpack.packb({"texts": batch(size)})
        msg = await nc.request(
            request_subject(TENANT, "gateway", "embed"), body, 60, headers=MSGPACK_HEADERS
        )
        if (msg.headers or {}).get(HEADER_ERROR_CODE):
            raise RuntimeError(f"embed: {msg.headers}")
        return len(msgpack.unpackb(msg.data)["embeddings"])

    async def router_embed(size: int) -> int:
        return len((await router.embed("all-minilm-l6-v2", batch(size), None, 30.0)).data)

    async def rate(embed: Callable[[int], Awaitable[int]], size: int, in_flight: int = 1) -> float:
        await embed(size)
        done = 0
        deadline = time.perf_counter() + seconds

        async def lane() -> None:
            nonlocal done
            while time.perf_counter() < deadline:
                texts_done = await embed(size)  # awaited first: `x += await` would race
                done += texts_done

        started = time.perf_counter()
        await asyncio.gather(*(lane() for _ in range(in_flight)))
        return round(done / (time.perf_counter() - started), 1)

    figures: dict[str, dict[str, float]] = {"nats": {}, "router_in_process": {}, "model": {}}
    for size in (1, 64):
        key = f"batch{size}_texts_per_s"
        figures["model"][key] = round(
            texts_per_second(functools.partial(embed_batch, size), size, seconds), 1
        )
        figures["nats"][key] = await rate(nats_embed, size)
        figures["router_in_process"][key] = await rate(router_embed, size)
    figures["model"]["batch1_to_thread_texts_per_s"] = round(
        await threaded_per_second(model, texts, seconds), 1
    )
    figures["nats"][f"batch1_{IN_FLIGHT}_in_flight_texts_per_s"] = await rate(
        nats_embed, 1, IN_FLIGHT
    )
    started = time.perf_counter()
    for _ in range(20):
        model.count_tokens(texts[:64])
    return figures | {
        "nats_per_model": {
            key: round(figures["nats"][key] / figures["model"][key], 2)
            for key in ("batch1_texts_per_s", "batch64_texts_per_s")
        },
        "count_tokens_batch64_ms": round((time.perf_counter() - started) / 20 * 1000, 2),
    }


# -- 4: cold start -------------------------------------------------------------------------------


async def cold_starts(nc: NATS, env: dict[str, str], log: Path, runs: int) -> dict[str, Any]:
    embed = over_nats(nc, "embed", msgpack.packb({"texts": ["How do I rotate a key?"]}))
    results = []
    for _ in range(runs):
        worker = spawn(["gateway"], env, log)
        try:
            ready_s = await until_answers(nc, worker)
            await asyncio.sleep(1.0)
            rss_idle = psutil.Process(worker.pid).memory_info().rss
            started = time.perf_counter()
            await embed()
            first_embed_s = time.perf_counter() - started
            rss_embedded = psutil.Process(worker.pid).memory_info().rss
        finally:
            stop(worker)
        results.append((ready_s, rss_idle / 2**20, rss_embedded / 2**20, first_embed_s))
    return {
        "runs": runs,
        "ready_s": round(statistics.median(r[0] for r in results), 2),
        "ready_s_each": [round(r[0], 2) for r in results],
        "rss_idle_mb": round(statistics.median(r[1] for r in results), 1),
        "rss_after_first_embed_mb": round(statistics.median(r[2] for r in results), 1),
        "first_embed_ms": round(statistics.median(r[3] for r in results) * 1000),
    }


# -- the run -------------------------------------------------------------------------------------


def summarize(
    results: dict[str, Any], stream: dict[str, Any], embedded: dict[str, Any], cold: dict[str, Any]
) -> dict[str, Any]:
    """The headline figures and the ratios against same-run baselines."""
    gateway, cached = results["gateway"], results["generate_cached"]

    def against(base: dict[str, Any], subject: dict[str, Any]) -> dict[str, float]:
        return {
            "added_p50_ms": round(subject["p50_ms"] - base["p50_ms"], 2),
            "added_p99_ms": round(subject["p99_ms"] - base["p99_ms"], 2),
            "throughput_ratio": round(subject["per_second"] / base["per_second"], 2),
        }

    return {
        "p50_ms": {name: r["p50_ms"] for name, r in results.items()},
        "p99_ms": {name: r["p99_ms"] for name, r in results.items()},
        f"per_second_{IN_FLIGHT}_in_flight": {name: r["per_second"] for name, r in results.items()},
        f"cpu_us_per_request_{IN_FLIGHT}_in_flight": {
            name: r["cpu_us_per_request"]["total"] for name, r in results.items()
        },
        "gateway_vs_router": against(results["router"], gateway),
        "gateway_vs_litellm": against(results["litellm"], gateway),
        "cache_hit_vs_gateway": against(gateway, cached),
        "stream_first_chunk_added_p50_ms": {
            pace: figures["first_chunk_added_p50_ms"] for pace, figures in stream.items()
        },
        "embed_nats_per_model": embedded["nats_per_model"],
        "cold_start_ready_s": cold["ready_s"],
        "cold_start_rss_idle_mb": cold["rss_idle_mb"],
        "cold_start_rss_after_first_embed_mb": cold["rss_after_first_embed_mb"],
    }


async def measure(
    urls: dict[str, str], fake: FakeOpenAIProcess, tmp: Path, args: Any
) -> dict[str, Any]:
    import nats

    from tests.support.gateway import deployment, model_list

    base_url = fake.base_url

    config, unpriced = (
        model_list(
            tmp / name,
            [deployment("chat", "primary", base_url, **prices)],
            aifleet={"default_model": "chat"},
        )
        for name, prices in (("models.yaml", PRICES), ("unpriced.yaml", {}))
    )
    env = {"NATS_URL": urls["nats"], "REDIS_URL": urls["redis"]}
    gateway_env = env | {
        "AIFLEET_GATEWAY_CONFIG": str(config),
        "AIFLEET_GATEWAY_CACHE_TTL_SECONDS": "0",
    }
    nc = await nats.connect(urls["nats"])
    log = tmp / "worker.log"
    worker = spawn(["gateway", "cache"], gateway_env, log)
    try:
        ready_s = await until_answers(nc, worker)
        rss_ready = psutil.Process(worker.pid).memory_info().rss / 2**20
        direct, router = await asyncio.to_thread(direct_calls, base_url, config, unpriced)
        # What the worker does once started: litellm's import is never rescanned by the
        # collector. Its aiohttp sessions left unclosed are counted in the worker's log instead.
        gc.freeze()
        logging.getLogger("asyncio").setLevel(logging.CRITICAL)
        await over_nats(nc, "set", CACHE_SET_BODY, CACHE_SET_SUBJECT)()
        calls = direct | {
            "gateway": over_nats(nc, "generate", GENERATE),
            "generate_cached": over_nats(nc, "generate", GENERATE_CACHED),
            "cache_get": over_nats(nc, "get", CACHE_GET_BODY, CACHE_GET_SUBJECT),
        }
        reply = await calls["gateway"]()
        if not isinstance(reply, bytes) or b"echo: How do I rotate" not in reply:
            raise RuntimeError(f"the gateway did not answer through the fake: {reply!r}")
        await calls["generate_cached"]()  # stores the entry every later request hits
        results = await generate(calls, Cpu(processes(worker)), args)
        cached = msgpack.unpackb(await calls["generate_cached"]())
        if cached.get("cache", {}).get("kind") != "exact":
            raise RuntimeError(f"generate_cached was not served from the cache: {cached}")
        stream = await streaming(nc, router, fake, args.streams)
        parts = await pieces(nc, urls["redis"], reply, args.requests)
        embedded = await embeddings(nc, router, args.seconds / 2)
        worker_rss = psutil.Process(worker.pid).memory_info().rss / 2**20
        provider_port = int(base_url.rsplit(":", 1)[1].split("/")[0])
        sockets = [
            c
            for c in psutil.Process(worker.pid).net_connections("tcp")
            if c.raddr and c.raddr.port == provider_port
        ]
    finally:
        stop(worker)
    cold = await cold_starts(nc, env, log, args.cold_starts)
    await nc.close()
    log_lines = log.read_text().splitlines()
    return {
        "summary": summarize(results, stream, embedded, cold),
        "generate": results,
        "streaming": stream,
        "gateway_pieces": parts,
        "embedding": embedded,
        "worker": {
            "ready_s": round(ready_s, 2),
            "rss_ready_mb": round(rss_ready, 1),
            "rss_at_end_mb": round(worker_rss, 1),
            "tcp_connections_to_provider_at_end": len(sockets),
            "unclosed_aiohttp_sessions_logged": sum(
                "Unclosed client session" in x for x in log_lines
            ),
            "log_lines": len(log_lines),
        },
        "cold_start": cold,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="one short round, ~45 s")
    args = parser.parse_args(argv)
    args.rounds, args.seconds, args.requests, args.streams, args.cold_starts = (
        (1, 1.5, 50, (20, 6), 2) if args.quick else (2, 3.5, 300, (100, 30), 5)
    )

    from aifleet.embedded import EmbeddedNats, EmbeddedValkey
    from tests.support.fake_openai import FakeOpenAIProcess

    load_before = os.getloadavg()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="aifleet-bench-gateway-") as tmp:
        nats_server = EmbeddedNats(Path(tmp) / "nats", config=REPO / "nats-server.conf")
        valkey = EmbeddedValkey(Path(tmp) / "valkey")
        fake = FakeOpenAIProcess()
        nats_server.start()
        valkey.start()
        fake.start()
        try:
            urls = {"nats": nats_server.url, "redis": valkey.url}
            figures = run_async(measure(urls, fake, Path(tmp), args))
        finally:
            fake.stop()
            valkey.stop()
            nats_server.stop()
    report = {
        "command": "python -m benchmarks.gateway " + " ".join(sys.argv[1:]),
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
    print(
        json.dumps({k: report[k] for k in ("command", "machine", "seconds", "summary")}, indent=1)
    )


if __name__ == "__main__":
    main()
