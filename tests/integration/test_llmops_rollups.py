"""LLMOps rollups and batched ingest: rollups always equal the rows they summarise, metrics over
ranges cut into days, hours and raw edges are exact, percentiles stay within the documented
bound, and a row the database refuses fails alone instead of with its batch."""

from __future__ import annotations

import asyncio
import datetime as dt
import math
import random
import shutil
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from nats.aio.client import Client as NATS

from aifleet.embedded import EmbeddedNats, EmbeddedPostgres
from schemas.codec import PROTOBUF
from schemas.v1.llmops_pb2 import (
    CostAnalysisRequest,
    CostAnalysisResponse,
    LlmOperationEvent,
    LogOperationResponse,
    MetricsRequest,
    MetricsResponse,
)
from subjects import (
    HEADER_CONTENT_TYPE,
    HEADER_DLQ_MSG_ID,
    HEADER_MESSAGE_TYPE,
    HEADER_MSG_ID,
    event_subject,
)
from tests.support.fleet import running_worker
from tests.support.llmops import (
    LlmopsDb,
    consumer_idle,
    dead_letters,
    operation,
    percentile,
    publish_operation,
    timestamp,
)
from tests.support.polling import eventually
from workers.llmops import service as llmops
from workers.llmops.aggregates import PERCENTILE_ERROR, bucket_estimate
from workers.llmops.batch import Batcher
from workers.llmops.service import MIGRATIONS
from workers.llmops.store import SCHEMA, LlmopsStore, Stored
from workers.llmops.validation import operation_of
from workers.runtime.client import Client
from workers.runtime.postgres import migrate
from workers.runtime.worker import Worker

HOUR = dt.timedelta(hours=1)
MINUTE = dt.timedelta(minutes=1)
WITHIN = PERCENTILE_ERROR + 1e-9  # the documented bound, and float rounding
# Midnight five days ago: every range below lies in the past, none is the default range.
BASE = dt.datetime.now(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0) - 5 * 24 * HOUR


@pytest.fixture(scope="module")
async def worker(nats_server: EmbeddedNats, postgres: EmbeddedPostgres) -> AsyncIterator[Worker]:
    # Two deliveries and a short backoff: a refused row reaches the dead letters quickly.
    async with running_worker(
        [llmops.component],
        nats_server.url,
        database_url=postgres.dsn,
        job_max_deliver=2,
        job_backoff=[0.1],
    ) as w:
        yield w


@pytest.fixture(scope="module")
async def db(postgres: EmbeddedPostgres) -> AsyncIterator[LlmopsDb]:
    async with LlmopsDb.connect(postgres.dsn) as found:
        yield found


@pytest.fixture
def tenant() -> str:
    return "r" + uuid.uuid4().hex[:16]


@pytest.fixture
def client(nc: NATS, worker: Worker) -> Client:
    return Client(nc, timeout=30.0)


async def log_all(client: Client, tenant: str, events: list[LlmOperationEvent]) -> list[bool]:
    """Log every event concurrently (so they share batches); whether each was created."""
    replies = await asyncio.gather(
        *(client.call(tenant, "llmops", "log_operation", e, LogOperationResponse) for e in events)
    )
    return [r.created for r in replies]


def varied(rng: random.Random, i: int, moment: dt.datetime, **fields: Any) -> LlmOperationEvent:
    """An operation with every rolled-up field drawn at random."""
    values: dict[str, Any] = {
        "model": rng.choice(["m1", "m2", "m3"]),
        "operation_type": rng.choice(["chat", "embedding"]),
        "prompt_tokens": rng.randint(0, 900),
        "completion_tokens": rng.randint(0, 300),
        "cost_usd": round(rng.uniform(0, 0.02), 7),
        "latency_ms": round(10 ** rng.uniform(-3, 5), 4),
        "status": "error" if rng.random() < 0.2 else "success",
        "cache_hit": rng.random() < 0.3,
        "user_id": rng.choice(["", "u1", "u2"]),
        "agent_id": rng.choice(["", "a1", "a2", "a3"]),
        "occurred_at": moment,
        **fields,
    }
    if i % 3:
        values["time_to_first_token_ms"] = round(10 ** rng.uniform(0, 3), 3)
    return operation(**values)


async def test_rollups_equal_the_rows_after_events_calls_and_duplicates(
    client: Client, nc: NATS, tenant: str, db: LlmopsDb
) -> None:
    """Events, re-published events, direct calls and repeated ids, concurrently over three days:
    every rollup equals a plain GROUP BY of the stored rows, and each id is stored once."""
    rng = random.Random(11)
    js = nc.jetstream()
    events = [varied(rng, i, BASE + rng.uniform(0, 72) * HOUR) for i in range(240)]
    direct = [varied(rng, i, BASE + rng.uniform(0, 72) * HOUR, id=f"d{i}") for i in range(120)]
    # Repeated ids with other numbers: whichever arrives first is stored, the other is not.
    repeats = [varied(rng, i, BASE + rng.uniform(0, 72) * HOUR, id=f"d{i}") for i in range(40)]

    async def publish() -> None:
        for i, event in enumerate(events):
            await publish_operation(js, tenant, event, msg_id=f"e-{tenant}-{i}")
        for i in range(0, 240, 4):  # re-published by a retrying gateway
            await publish_operation(js, tenant, events[i], msg_id=f"e-{tenant}-{i}")

    _, created, again = await asyncio.gather(
        publish(), log_all(client, tenant, direct), log_all(client, tenant, repeats)
    )
    assert sum(created) + sum(again) == 120

    async def stored() -> bool:
        return (await db.row_counts(tenant))["operations"] == 360

    await eventually(stored, timeout=60, what="360 operations stored")
    await eventually(lambda: consumer_idle(js), timeout=60, what="consumer idle")
    expected = await db.rollups_from_rows(tenant)
    assert all(expected.values())
    assert await db.rollups(tenant) == expected


async def test_rollups_follow_rows_deleted_updated_and_recounted(
    client: Client, tenant: str, db: LlmopsDb
) -> None:
    """Deleting or updating rows directly changes the rollups with them; damaged rollups come
    back from `refresh_rollups`, which leaves other tenants' rollups alone."""
    rng = random.Random(5)
    other = tenant + "x"
    await log_all(client, tenant, [varied(rng, i, BASE + i * 7 * MINUTE) for i in range(60)])
    await log_all(client, other, [varied(rng, i, BASE + i * 7 * MINUTE) for i in range(20)])
    theirs = await db.rollups(other)

    await db.pool.execute(
        "DELETE FROM llmops.operations WHERE tenant = $1 AND latency_ms > 100", tenant
    )
    await db.pool.execute(
        "UPDATE llmops.operations SET model = 'moved', latency_ms = latency_ms * 3"
        " WHERE tenant = $1 AND operation_type = 'chat'",
        tenant,
    )
    assert await db.rollups(tenant) == await db.rollups_from_rows(tenant)

    for table in ("rollups", "rollup_callers", "rollup_latency"):
        await db.pool.execute(f"DELETE FROM llmops.{table} WHERE tenant = $1", tenant)  # noqa: S608
    assert await db.rollups(tenant) != await db.rollups_from_rows(tenant)
    await db.pool.execute("SELECT llmops.refresh_rollups($1)", tenant)
    assert await db.rollups(tenant) == await db.rollups_from_rows(tenant)
    assert await db.rollups(other) == theirs

    await db.pool.execute("DELETE FROM llmops.operations WHERE tenant = $1", tenant)
    assert await db.rollups(tenant) == {table: [] for table in theirs}


async def test_migration_fills_rollups_of_rows_stored_before_it(
    postgres: EmbeddedPostgres, tmp_path: Path
) -> None:
    """Rows stored under the first migration get their rollups when 002 is applied; a TRUNCATE
    of the rows empties the rollups too."""
    name = "llmops_backfill_" + uuid.uuid4().hex[:8]
    admin = await asyncpg.connect(postgres.dsn)
    await admin.execute(f'CREATE DATABASE "{name}"')
    first = tmp_path / "first"
    first.mkdir()
    shutil.copy(MIGRATIONS / "001_operations.sql", first)
    try:
        async with LlmopsDb.connect(postgres.dsn.replace("/aifleet?", f"/{name}?")) as db:
            await db.pool.execute(f"DROP SCHEMA {SCHEMA} CASCADE")
            await migrate(db.pool, SCHEMA, first)
            await db.pool.execute(
                "INSERT INTO llmops.operations (tenant, id, occurred_at, operation_type, model,"
                " prompt_tokens, completion_tokens, total_tokens, cost_usd, latency_ms, ttft_ms,"
                " status, user_id, agent_id, cache_hit)"
                " SELECT 't' || (g % 2), 'o' || g, $1::timestamptz + g * interval '17 minutes',"
                " 'chat', 'm' || (g % 3), g, 2 * g, 3 * g, g / 1000.0, g * 1.5,"
                " CASE WHEN g % 2 = 0 THEN g END, CASE WHEN g % 5 = 0 THEN 'error'"
                " ELSE 'success' END, 'u' || (g % 4), 'a' || (g % 3), g % 7 = 0"
                " FROM generate_series(1, 500) AS g",
                BASE,
            )
            assert await migrate(db.pool, SCHEMA, MIGRATIONS) == ["002_rollups.sql"]
            for t in ("t0", "t1"):
                expected = await db.rollups_from_rows(t)
                assert all(expected.values())
                assert await db.rollups(t) == expected
            await db.pool.execute("TRUNCATE llmops.operations")
            assert await db.rollups("t0") == {table: [] for table in expected}
    finally:
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await admin.close()


async def test_every_latency_is_within_the_bound_of_its_bucket(db: LlmopsDb) -> None:
    """The value reported for a bucket is within PERCENTILE_ERROR of every latency in it, from
    the smallest counted (0.01 ms) to the largest double; smaller ones count as 0."""
    rng = random.Random(3)
    values = [0.01, 0.010000001, 0.011, 1.0, 1.1, 1.21, 100.0, 5000.0, 1e12, 1e300, 1.7e308]
    values += [10 ** rng.uniform(-2, 9) for _ in range(2000)]
    rows = await db.pool.fetch(
        "SELECT v, llmops.latency_bucket(v) AS b FROM unnest($1::float8[]) AS v", values
    )
    for r in rows:
        assert abs(bucket_estimate(r["b"]) - r["v"]) <= WITHIN * r["v"], r
    small = await db.pool.fetchval("SELECT llmops.latency_bucket(0.0099999)")
    assert (small, bucket_estimate(small)) == (0, 0.0)


def in_range(
    events: list[LlmOperationEvent], since: dt.datetime, until: dt.datetime
) -> list[LlmOperationEvent]:
    return [e for e in events if since <= e.occurred_at.ToDatetime(tzinfo=dt.UTC) < until]


def check_totals(stats: Any, events: list[LlmOperationEvent]) -> None:
    """Counts, tokens and cost exactly; percentiles within the documented bound."""
    n = len(events)
    assert stats.operations == n
    assert stats.errors == sum(e.status == "error" for e in events)
    assert stats.cache_hits == sum(e.cache_hit for e in events)
    assert stats.prompt_tokens == sum(e.prompt_tokens for e in events)
    assert stats.completion_tokens == sum(e.completion_tokens for e in events)
    assert stats.total_tokens == sum(e.prompt_tokens + e.completion_tokens for e in events)
    assert stats.cost_usd == pytest.approx(math.fsum(e.cost_usd for e in events), rel=1e-12)
    latencies = [e.latency_ms for e in events]
    assert stats.latency_avg_ms == pytest.approx(math.fsum(latencies) / n, rel=1e-12)
    for fraction, got in (
        (0.5, stats.latency_p50_ms),
        (0.95, stats.latency_p95_ms),
        (0.99, stats.latency_p99_ms),
    ):
        assert got == pytest.approx(percentile(latencies, fraction), rel=WITHIN)
    ttfts = [e.time_to_first_token_ms for e in events if e.HasField("time_to_first_token_ms")]
    assert stats.time_to_first_token_p50_ms == pytest.approx(percentile(ttfts, 0.5), rel=WITHIN)
    assert stats.time_to_first_token_p95_ms == pytest.approx(percentile(ttfts, 0.95), rel=WITHIN)


# (since, until) as offsets from BASE: inside one hour, across one hour boundary, whole hours,
# partial hours around whole hours, and partial hours around whole hours around whole days.
RANGES = [
    (10 * HOUR + 5 * MINUTE, 10 * HOUR + 50 * MINUTE),
    (10 * HOUR + 35 * MINUTE, 11 * HOUR + 20 * MINUTE),
    (3 * HOUR, 9 * HOUR),
    (3 * HOUR + 13 * MINUTE, 9 * HOUR + 41 * MINUTE),
    (24 * HOUR, 72 * HOUR),
    (17 * HOUR + 29 * MINUTE, 70 * HOUR + 11 * MINUTE),
    (-HOUR, 80 * HOUR),
]


async def test_metrics_over_ranges_cut_anywhere_are_exact(client: Client, tenant: str) -> None:
    """Metrics of ranges starting and ending inside hours and days count exactly the operations
    inside the range, overall and per model; percentiles stay within the bound."""
    rng = random.Random(19)
    events = [varied(rng, i, BASE + rng.uniform(0, 76) * HOUR) for i in range(1500)]
    for start in range(0, len(events), 250):
        await log_all(client, tenant, events[start : start + 250])
    for since, until in RANGES:
        a, b = BASE + since, BASE + until
        reply = await client.call(
            tenant,
            "llmops",
            "metrics",
            MetricsRequest(since=timestamp(a), until=timestamp(b)),
            MetricsResponse,
        )
        inside = in_range(events, a, b)
        assert inside, (since, until)
        check_totals(reply.total, inside)
        models = sorted({e.model for e in inside})
        assert [g.key for g in reply.by_model] == models
        for group in reply.by_model:
            check_totals(group.stats, [e for e in inside if e.model == group.key])
        for fields in ({"model": "m2"}, {"user_id": "u1"}, {"agent_id": "a2"}):
            ((key, value),) = fields.items()
            filtered = await client.call(
                tenant,
                "llmops",
                "metrics",
                MetricsRequest(since=timestamp(a), until=timestamp(b), **fields),
                MetricsResponse,
            )
            check_totals(filtered.total, [e for e in inside if getattr(e, key) == value])


async def test_cost_analysis_over_ranges_cut_anywhere_is_exact(client: Client, tenant: str) -> None:
    """Cost groups and trend buckets of ranges cut inside hours count exactly their operations."""
    rng = random.Random(23)
    events = [varied(rng, i, BASE + rng.uniform(0, 76) * HOUR) for i in range(600)]
    await log_all(client, tenant, events)
    for since, until in RANGES[3:]:
        a, b = BASE + since, BASE + until
        inside = in_range(events, a, b)
        for bucket, width in (("hour", HOUR), ("day", 24 * HOUR)):
            reply = await client.call(
                tenant,
                "llmops",
                "cost_analysis",
                CostAnalysisRequest(since=timestamp(a), until=timestamp(b), bucket=bucket),
                CostAnalysisResponse,
            )
            assert reply.total_cost_usd == pytest.approx(math.fsum(e.cost_usd for e in inside))
            for groups, field in (
                (reply.by_model, "model"),
                (reply.by_user, "user_id"),
                (reply.by_agent, "agent_id"),
            ):
                got = {g.key: (g.operations, g.total_tokens, round(g.cost_usd, 9)) for g in groups}
                expected: dict[str, tuple[int, int, float]] = {}
                for key in {getattr(e, field) for e in inside}:
                    mine = [e for e in inside if getattr(e, field) == key]
                    tokens = sum(e.prompt_tokens + e.completion_tokens for e in mine)
                    cost = round(math.fsum(e.cost_usd for e in mine), 9)
                    expected[key] = (len(mine), tokens, cost)
                assert got == expected
            first = BASE + (since // width) * width
            trend = [(t.start.ToDatetime(tzinfo=dt.UTC), t.operations) for t in reply.trend]
            assert trend[0][0] == first
            for start, count in trend:
                overlap = in_range(inside, start, start + width)
                assert count == len(overlap), (bucket, start)


@pytest.fixture
async def refusing(db: LlmopsDb) -> AsyncIterator[str]:
    """A model the database refuses to store (a CHECK constraint), for the test's duration."""
    await db.pool.execute(
        "ALTER TABLE llmops.operations ADD CONSTRAINT test_refused"
        " CHECK (model <> 'refused') NOT VALID"
    )
    try:
        yield "refused"
    finally:
        await db.pool.execute("ALTER TABLE llmops.operations DROP CONSTRAINT test_refused")


async def test_a_row_the_database_refuses_fails_alone_in_its_batch(
    db: LlmopsDb, tenant: str, refusing: str
) -> None:
    """Forty concurrent inserts share one batch; the database refuses one row, and only that
    insert fails: the other 39 are stored and say so."""
    batcher = Batcher(LlmopsStore(db.pool))
    try:
        ops = [
            operation_of(operation(model=refusing if i == 17 else "fine"), f"b{i}", "")
            for i in range(40)
        ]
        results = await asyncio.gather(
            *(batcher.insert(tenant, op) for op in ops), return_exceptions=True
        )
    finally:
        await batcher.close()
    assert isinstance(results[17], asyncpg.CheckViolationError)
    assert all(isinstance(r, Stored) and r.created for i, r in enumerate(results) if i != 17)
    assert await db.ids(tenant) == sorted(f"b{i}" for i in range(40) if i != 17)


async def test_a_refused_event_is_dead_lettered_and_the_rest_stored(
    client: Client, nc: NATS, tenant: str, db: LlmopsDb, refusing: str
) -> None:
    """Events consumed together: the refused one ends in the dead letters after its attempts,
    every other one is stored once, and the rollups hold exactly the stored rows."""
    js = nc.jetstream()
    for i in range(40):
        model = refusing if i == 17 else "fine"
        await js.publish_async(
            event_subject(tenant, "gateway", "llm_operation"),
            operation(model=model).SerializeToString(),
            headers={
                HEADER_CONTENT_TYPE: PROTOBUF,
                HEADER_MESSAGE_TYPE: LlmOperationEvent.DESCRIPTOR.full_name,
                HEADER_MSG_ID: f"x-{tenant}-{i}",
            },
        )
    await js.publish_async_completed()

    async def letters() -> list[Any]:
        return await dead_letters(js, tenant)

    (letter,) = await eventually(letters, timeout=30, what="the refused row dead-lettered")
    assert letter.headers
    assert letter.headers[HEADER_DLQ_MSG_ID] == f"x-{tenant}-17"
    await eventually(lambda: consumer_idle(js), timeout=30, what="consumer idle")
    assert await db.ids(tenant) == sorted(f"x-{tenant}-{i}" for i in range(40) if i != 17)
    assert await db.rollups(tenant) == await db.rollups_from_rows(tenant)
