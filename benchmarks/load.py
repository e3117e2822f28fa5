"""The load generator: a fixed number of requests in flight for a fixed time, in its own process.

    python -m benchmarks.load echo  --nats-url URL --concurrency 64 --warmup 1 --duration 4 \
        --watch server=PID --watch nats=PID
    python -m benchmarks.load cache --nats-url URL ...        # cache.get through NATS
    python -m benchmarks.load redis --redis-url URL ...       # redis-py GET, same key and value
    python -m benchmarks.load redis-worker --redis-url URL    # the same with the worker's options
    python -m benchmarks.load cache-setup --nats-url URL      # stores the key the ones above read

`--concurrency` coroutines each send a request, await its reply and send the next. Requests
completed during the warm-up are not counted; the measured window is timed, and the CPU time
(user + system) of every `--watch`ed process, of this one and of the whole machine is read at
its two ends. Prints one JSON object on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import msgpack
import psutil

from benchmarks.common import (
    CACHE_GET_BODY,
    CACHE_GET_SUBJECT,
    CACHE_KEY,
    CACHE_SET_BODY,
    CACHE_SET_SUBJECT,
    CACHE_VALUE,
    ECHO_BODY,
    ECHO_FIELDS,
    ECHO_SUBJECT,
    MSGPACK_HEADERS,
    TENANT,
    run_async,
)

ERROR_HEADER = "Nats-Service-Error-Code"
Call = Callable[[], Awaitable[bool]]  # one request; True when the reply is an error


def percentile(ordered: list[int], q: float) -> float:
    """Nearest-rank percentile of sorted nanosecond values, in microseconds."""
    if not ordered:
        return 0.0
    index = min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))
    return ordered[index] / 1000


def cpu_seconds(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return float(times.user + times.system)


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine spent not idle (all cores, all processes)."""
    times = psutil.cpu_times()
    return float(sum(times) - times.idle - getattr(times, "iowait", 0.0))


async def drive(
    call: Call, concurrency: int, warmup: float, duration: float, watch: dict[str, int]
) -> dict[str, Any]:
    procs = {name: psutil.Process(pid) for name, pid in watch.items()}
    procs["client"] = psutil.Process()
    latencies: list[int] = []
    errors = 0
    measuring = False
    running = True

    async def loop() -> None:
        nonlocal errors
        record = latencies.append
        clock = time.perf_counter_ns
        while running:
            started = clock()
            try:
                failed = await call()
            except Exception:
                failed = True
            if measuring:
                record(clock() - started)
                if failed:
                    errors += 1

    tasks = [asyncio.create_task(loop()) for _ in range(concurrency)]
    await asyncio.sleep(warmup)
    cpu_before = {name: cpu_seconds(p) for name, p in procs.items()}
    machine_before = machine_busy_seconds()
    measuring = True
    window_start = time.perf_counter()
    await asyncio.sleep(duration)
    measuring = False
    window = time.perf_counter() - window_start
    cpu_after = {name: cpu_seconds(p) for name, p in procs.items()}
    machine = machine_busy_seconds() - machine_before
    running = False
    await asyncio.gather(*tasks)

    done = len(latencies)
    latencies.sort()
    cpu = {name: cpu_after[name] - cpu_before[name] for name in procs}
    return {
        "concurrency": concurrency,
        "requests": done,
        "errors": errors,
        "seconds": window,
        "throughput": done / window if window else 0.0,
        "p50_us": percentile(latencies, 0.50),
        "p99_us": percentile(latencies, 0.99),
        "cpu_us_per_request": {
            name: (seconds * 1e6 / done if done else 0.0) for name, seconds in cpu.items()
        },
        "cpu_cores_busy": {name: seconds / window for name, seconds in cpu.items()},
        # Everything else the machine ran meanwhile (other users' work): the noise gauge.
        "other_cores_busy": max(0.0, machine - sum(cpu.values())) / window,
    }


# -- targets ------------------------------------------------------------------------------------


async def nats_target(
    nats_url: str, subject: str, body: bytes, check: Callable[[Any], bool]
) -> tuple[Call, Callable[[], Awaitable[None]]]:
    import nats

    nc = await nats.connect(nats_url, name="bench:load")
    for attempt in range(3):
        try:
            first = await nc.request(subject, body, timeout=5, headers=MSGPACK_HEADERS)
            break
        except nats.errors.TimeoutError:
            sys.stderr.write(f"{subject}: no reply in 5 s (attempt {attempt + 1})\n")
    else:
        raise SystemExit(f"no reply from {subject} in 3 attempts")
    if (first.headers or {}).get(ERROR_HEADER) or not check(msgpack.unpackb(first.data)):
        raise SystemExit(f"unexpected reply from {subject}: {first.headers} {first.data[:200]!r}")
    request = nc.request

    async def call() -> bool:
        msg = await request(subject, body, timeout=10, headers=MSGPACK_HEADERS)
        headers = msg.headers
        return headers is not None and ERROR_HEADER in headers

    return call, nc.close


def echo_ok(reply: Any) -> bool:
    # The raw baseline returns the request as is; the others add the tenant.
    return (
        isinstance(reply, dict)
        and reply.get("text") == ECHO_FIELDS["text"]
        and reply.get("number") == ECHO_FIELDS["number"]
        and reply.get("tenant", TENANT) == TENANT
    )


def cache_ok(reply: Any) -> bool:
    return (
        isinstance(reply, dict) and reply.get("found") is True and reply.get("raw") == CACHE_VALUE
    )


async def redis_target(
    redis_url: str, *, worker_options: bool
) -> tuple[Call, Callable[[], Awaitable[None]]]:
    import redis.asyncio

    from subjects import cache_key_prefix

    if worker_options:
        # What workers.runtime.resources configures: timeouts, one retry of a broken
        # connection, health checks.
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        client = redis.asyncio.Redis.from_url(
            redis_url,
            socket_connect_timeout=2.0,
            socket_timeout=2.0,
            retry=Retry(
                NoBackoff(), retries=1, supported_errors=(redis.exceptions.ConnectionError,)
            ),
            health_check_interval=30,
        )
    else:
        client = redis.asyncio.Redis.from_url(redis_url)
    key = cache_key_prefix(TENANT) + CACHE_KEY
    stored = await client.get(key)
    if not isinstance(stored, bytes) or not stored.endswith(CACHE_VALUE):
        raise SystemExit(f"{key} is not in the cache: run cache-setup first")
    get = client.get

    async def call() -> bool:
        return await get(key) is None

    return call, client.aclose


async def cache_setup(nats_url: str) -> dict[str, Any]:
    import nats

    nc = await nats.connect(nats_url, name="bench:setup")
    try:
        msg = await nc.request(
            CACHE_SET_SUBJECT, CACHE_SET_BODY, timeout=10, headers=MSGPACK_HEADERS
        )
    finally:
        await nc.close()
    reply = msgpack.unpackb(msg.data)
    if (msg.headers or {}).get(ERROR_HEADER) or reply.get("stored") is not True:
        raise SystemExit(f"cache.set failed: {msg.headers} {reply}")
    return {"stored": True}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.target == "cache-setup":
        return await cache_setup(args.nats_url)
    if args.target == "echo":
        call, close = await nats_target(args.nats_url, ECHO_SUBJECT, ECHO_BODY, echo_ok)
    elif args.target == "cache":
        call, close = await nats_target(args.nats_url, CACHE_GET_SUBJECT, CACHE_GET_BODY, cache_ok)
    else:
        call, close = await redis_target(
            args.redis_url, worker_options=args.target == "redis-worker"
        )
    watch = dict(_pair(w) for w in args.watch)
    try:
        return await drive(call, args.concurrency, args.warmup, args.duration, watch)
    finally:
        await close()


def _pair(text: str) -> tuple[str, int]:
    name, _, pid = text.partition("=")
    return name, int(pid)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("target", choices=("echo", "cache", "redis", "redis-worker", "cache-setup"))
    parser.add_argument("--nats-url")
    parser.add_argument("--redis-url")
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--duration", type=float, default=4.0)
    parser.add_argument("--watch", action="append", default=[], metavar="NAME=PID")
    args = parser.parse_args(argv)
    result = run_async(run(args))
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
