"""The LLMOps component: ingest rate from a backlog versus raw JetStream fetch, query latency.

    python -m benchmarks.llmops                      # writes benchmarks/results/llmops.json
    python -m benchmarks.llmops --events 20000 --rows 200000 --other-rows 20000   # shorter
    python -m benchmarks.llmops --concurrency 512 --job-batch 256   # the worker's AIFLEET_*

Starts an embedded nats-server and PostgreSQL.

1. Publishes `--events` `gateway.llm_operation` events (one tenant, distinct Nats-Msg-Ids) to
   AI_EVENTS before any consumer exists: a backlog.
2. Raw baseline: a durable pull consumer on the same subjects fetched by this process in
   batches of 256, each message acked (no decode, no database).
3. Ingest: the llmops worker in its own process (on uvloop, like `aifleet worker llmops`;
   `--concurrency` and `--job-batch` set its in-flight limit and fetch size, default the
   runtime's) creates its consumer and drains the same backlog into PostgreSQL; timed from its
   `ready` line until the table holds every event.
4. Hot rollup rows: `--calls` direct `log_operation` calls of one tenant, one model and one
   hour, `--in-flight` at a time: every insert adds to the same rollup and spend rows.
5. Latency: `--rows` operations of one tenant spread over 30 days, and `--other-rows` for each
   of 9 other tenants, generated in SQL with the rollup triggers off, then rolled up in one
   pass (`llmops.refresh_rollups`, what the migration does for rows stored before rollups
   existed; timed); then `metrics` and `cost_analysis` over NATS, one request at a time
   (1 warm-up, `--repeats` timed).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import run_async
from subjects import event_subject, filter_subject

REPO = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results" / "llmops.json"
TENANT = "bench"
SUBJECT = event_subject(TENANT, "gateway", "llm_operation")
FILTER = filter_subject("evt", component="gateway", name="llm_operation")

GENERATE = """
INSERT INTO llmops.operations (tenant, id, occurred_at, operation_type, model, provider,
    prompt_tokens, completion_tokens, total_tokens, cost_usd, latency_ms, ttft_ms, status,
    user_id, agent_id)
SELECT $1, 'g' || g, $3::timestamptz - (g::bigint * 2592000 / $2) * interval '1 second',
    (ARRAY['chat', 'embedding', 'completion'])[1 + g % 3], 'model-' || (g % 8), 'p',
    g % 1000, g % 500, g % 1000 + g % 500, (g % 1000) / 100000.0,
    ((g::bigint * 7919) % 5000)::float8,
    CASE WHEN g % 4 = 0 THEN NULL ELSE (g % 300)::float8 END,
    CASE WHEN g % 10 = 0 THEN 'error' ELSE 'success' END, 'user-' || (g % 50), 'agent-' || (g % 20)
FROM generate_series(1, $2) AS g
"""


async def serve(nats_url: str, database_url: str, tuning: dict[str, int]) -> None:
    from benchmarks.servers import ready, until_sigterm
    from workers.llmops import service as llmops
    from workers.runtime.config import Settings
    from workers.runtime.worker import Worker

    settings = Settings.model_validate(
        {"nats_url": nats_url, "database_url": database_url, "log_level": "WARNING", **tuning}
    )
    worker = Worker([llmops.component], settings)
    await worker.start()
    ready()
    await until_sigterm()
    await worker.stop()


async def publish_backlog(nats_url: str, count: int) -> dict[str, Any]:
    import nats

    from schemas.v1.llmops_pb2 import LlmOperationEvent
    from subjects.streams import provision_streams

    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    await provision_streams(js)
    now = dt.datetime.now(dt.UTC)
    started = time.perf_counter()
    for i in range(count):
        event = LlmOperationEvent(
            operation_type="chat",
            model=f"model-{i % 8}",
            provider="p",
            prompt_tokens=i % 1000,
            completion_tokens=i % 500,
            cost_usd=(i % 1000) / 100000,
            latency_ms=float(i % 5000),
            status="error" if i % 10 == 0 else "success",
            user_id=f"user-{i % 50}",
            agent_id=f"agent-{i % 20}",
        )
        event.occurred_at.FromDatetime(now - dt.timedelta(seconds=i % 86_400))
        headers = {
            "Content-Type": "application/protobuf",
            "Aifleet-Type": LlmOperationEvent.DESCRIPTOR.full_name,
            "Nats-Msg-Id": f"bench-{i}",
        }
        await js.publish_async(SUBJECT, event.SerializeToString(), headers=headers)
        if i % 5000 == 4999:
            await js.publish_async_completed()
    await js.publish_async_completed()
    elapsed = time.perf_counter() - started
    await nc.close()
    return {"events": count, "seconds": round(elapsed, 2), "per_second": round(count / elapsed)}


async def raw_fetch(nats_url: str, count: int) -> dict[str, Any]:
    """Fetch and ack the backlog through a pull consumer of our own: the transport's ceiling."""
    import nats
    from nats.js.api import AckPolicy, ConsumerConfig
    from nats.js.errors import FetchTimeoutError

    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    await js.add_consumer(
        "AI_EVENTS",
        ConsumerConfig(
            durable_name="bench-raw", filter_subject=FILTER, ack_policy=AckPolicy.EXPLICIT
        ),
    )
    psub = await js.pull_subscribe_bind(durable="bench-raw", stream="AI_EVENTS")
    got = 0
    started = time.perf_counter()
    while got < count:
        try:
            msgs = await psub.fetch(256, timeout=2.0)
        except FetchTimeoutError:
            break
        for msg in msgs:
            await msg.ack()
        got += len(msgs)
    elapsed = time.perf_counter() - started
    await nc.close()
    return {"events": got, "seconds": round(elapsed, 2), "per_second": round(got / elapsed)}


async def wait_rows(dsn: str, tenant: str, count: int, timeout: float) -> float:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            found = await conn.fetchval(
                "SELECT count(*) FROM llmops.operations WHERE tenant = $1", tenant
            )
            if found >= count:
                return time.perf_counter()
            await asyncio.sleep(0.2)
    finally:
        await conn.close()
    raise TimeoutError(f"fewer than {count} rows after {timeout:g}s")


async def hot_rows(nats_url: str, calls: int, in_flight: int) -> dict[str, Any]:
    """Direct log_operation calls that all add to one tenant's same rollup and spend rows."""
    import nats

    from schemas.v1.llmops_pb2 import LlmOperationEvent, LogOperationResponse
    from workers.runtime.client import Client

    nc = await nats.connect(nats_url)
    client = Client(nc, timeout=60.0)
    moment = dt.datetime.now(dt.UTC).replace(minute=30, second=0, microsecond=0)
    times: list[float] = []
    pending = iter(range(calls))

    async def caller() -> None:
        for i in pending:
            event = LlmOperationEvent(
                id=f"hot-{i}",
                operation_type="chat",
                model="model-hot",
                cost_usd=0.0001,
                latency_ms=float(100 + i % 900),
                status="success",
            )
            event.occurred_at.FromDatetime(moment)
            started = time.perf_counter()
            await client.call("hot", "llmops", "log_operation", event, LogOperationResponse)
            times.append((time.perf_counter() - started) * 1000)

    started = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(in_flight)))
    elapsed = time.perf_counter() - started
    await nc.close()
    times.sort()
    return {
        "calls": calls,
        "in_flight": in_flight,
        "per_second": round(calls / elapsed),
        "p50_ms": round(statistics.median(times), 1),
        "p99_ms": round(times[int(len(times) * 0.99)], 1),
    }


async def generate_rows(dsn: str, rows: int, other_rows: int) -> dict[str, Any]:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        now = dt.datetime.now(dt.UTC)
        started = time.perf_counter()
        await conn.execute("ALTER TABLE llmops.operations DISABLE TRIGGER USER")
        await conn.execute(GENERATE, "big", rows, now)
        for i in range(9):
            await conn.execute(GENERATE, f"other{i}", other_rows, now)
        await conn.execute("ALTER TABLE llmops.operations ENABLE TRIGGER USER")
        loaded = time.perf_counter()
        await conn.execute("SELECT llmops.refresh_rollups(NULL)")
        rolled = time.perf_counter()
        await conn.execute("ANALYZE")
        total = await conn.fetchval("SELECT count(*) FROM llmops.operations")
        return {
            "rows_total": total,
            "load_seconds": round(loaded - started, 1),
            "rollup_seconds": round(rolled - loaded, 1),
        }
    finally:
        await conn.close()


async def query_latency(nats_url: str, repeats: int) -> dict[str, Any]:
    import nats

    from schemas.v1.llmops_pb2 import (
        CostAnalysisRequest,
        CostAnalysisResponse,
        MetricsRequest,
        MetricsResponse,
    )
    from workers.runtime.client import Client

    nc = await nats.connect(nats_url)
    client = Client(nc, timeout=120.0)
    now = dt.datetime.now(dt.UTC)

    def ts(moment: dt.datetime) -> Any:
        from google.protobuf.timestamp_pb2 import Timestamp

        out = Timestamp()
        out.FromDatetime(moment)
        return out

    month = {"since": ts(now - dt.timedelta(days=31)), "until": ts(now + dt.timedelta(hours=1))}
    cases: dict[str, tuple[str, Any, Any]] = {
        "metrics, 30 days (all rows)": ("metrics", MetricsRequest(**month), MetricsResponse),
        "metrics, last 24 h": ("metrics", MetricsRequest(), MetricsResponse),
        "metrics, 30 days, one model": (
            "metrics",
            MetricsRequest(**month, model="model-3"),
            MetricsResponse,
        ),
        "metrics, 30 days, one agent (raw rows)": (
            "metrics",
            MetricsRequest(**month, agent_id="agent-7"),
            MetricsResponse,
        ),
        "cost_analysis, 30 days, day buckets": (
            "cost_analysis",
            CostAnalysisRequest(**month, bucket="day"),
            CostAnalysisResponse,
        ),
        "cost_analysis, 7 days, hour buckets": (
            "cost_analysis",
            CostAnalysisRequest(since=ts(now - dt.timedelta(days=7)), until=ts(now), bucket="hour"),
            CostAnalysisResponse,
        ),
    }
    out: dict[str, Any] = {}
    for name, (op, request, response) in cases.items():
        reply = await client.call("big", "llmops", op, request, response)  # warm-up
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            await client.call("big", "llmops", op, request, response)
            times.append((time.perf_counter() - started) * 1000)
        counted = reply.total.operations if op == "metrics" else len(reply.trend)
        out[name] = {
            "p50_ms": round(statistics.median(times), 1),
            "max_ms": round(max(times), 1),
            "operations" if op == "metrics" else "buckets": counted,
        }
    await nc.close()
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("mode", nargs="?", default="bench", choices=["bench", "serve"])
    parser.add_argument("--nats-url")
    parser.add_argument("--database-url")
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--other-rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--in-flight", type=int, default=64)
    parser.add_argument("--concurrency", type=int)
    parser.add_argument("--job-batch", type=int)
    args = parser.parse_args(argv)
    tuning = {
        name: value
        for name, value in (("concurrency", args.concurrency), ("job_batch", args.job_batch))
        if value is not None
    }
    if args.mode == "serve":
        run_async(serve(args.nats_url, args.database_url, tuning))
        return

    from aifleet.embedded import EmbeddedNats, EmbeddedPostgres

    with tempfile.TemporaryDirectory(prefix="aifleet-bench-llmops-") as tmp:
        nats_server = EmbeddedNats(Path(tmp) / "nats", config=REPO / "nats-server.conf")
        postgres = EmbeddedPostgres(Path(tmp) / "pg")
        nats_server.start()
        postgres.start()
        worker: subprocess.Popen[str] | None = None
        try:
            published = run_async(publish_backlog(nats_server.url, args.events))
            raw = run_async(raw_fetch(nats_server.url, args.events))
            worker = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "benchmarks.llmops",
                    "serve",
                    "--nats-url",
                    nats_server.url,
                    "--database-url",
                    postgres.dsn,
                    *(f"--{name.replace('_', '-')}={value}" for name, value in tuning.items()),
                ],
                cwd=REPO,
                stdout=subprocess.PIPE,
                text=True,
            )
            assert worker.stdout is not None
            for line in worker.stdout:
                if line.strip() == "ready":
                    break
            else:
                raise RuntimeError("the llmops worker exited before it was ready")
            started = time.perf_counter()
            done = run_async(wait_rows(postgres.dsn, TENANT, args.events, 3600))
            ingest = {
                "events": args.events,
                "seconds": round(done - started, 2),
                "per_second": round(args.events / (done - started)),
            }
            hot = run_async(hot_rows(nats_server.url, args.calls, args.in_flight))
            loaded = run_async(generate_rows(postgres.dsn, args.rows, args.other_rows))
            latency = run_async(query_latency(nats_server.url, args.repeats))
        finally:
            if worker is not None:
                worker.terminate()
                worker.wait(30)
            postgres.stop()
            nats_server.stop()

    report = {
        "command": "python -m benchmarks.llmops " + " ".join(sys.argv[1:]),
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "load_average": os.getloadavg(),
        "publish_backlog": published,
        "raw_fetch_ack": raw,
        "ingest": ingest,
        "ingest_worker_settings": tuning or "runtime defaults",
        "ingest_per_raw_fetch": round(ingest["per_second"] / raw["per_second"], 3),
        "log_operation_hot_rows": hot,
        "latency_rows": {"big_tenant": args.rows, "each_of_9_others": args.other_rows, **loaded},
        "latency": latency,
    }
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json_dump(report))
    print(json_dump(report))


def json_dump(value: Any) -> str:
    import json

    return json.dumps(value, indent=2)


if __name__ == "__main__":
    main()
