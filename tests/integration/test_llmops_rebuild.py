"""`aifleet llmops rebuild`: the tables rebuilt from AI_EVENTS give the same numbers as before."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import sys
import uuid
from collections.abc import AsyncIterator

import pytest
from nats.aio.client import Client as NATS

from aifleet.embedded import EmbeddedNats, EmbeddedPostgres
from schemas.v1.llmops_pb2 import (
    CostAnalysisRequest,
    CostAnalysisResponse,
    MetricsRequest,
    MetricsResponse,
    SetBudgetRequest,
    SetBudgetResponse,
)
from subjects import STREAM_EVENTS, event_subject
from tests.support.fleet import running_worker
from tests.support.llmops import LlmopsDb, consumer_idle, operation, publish_operation, timestamp
from tests.support.polling import eventually
from workers.llmops import service as llmops
from workers.runtime.client import Client
from workers.runtime.worker import Worker

COUNT, MALFORMED = 300, 7


@pytest.fixture(scope="module")
async def worker(nats_server: EmbeddedNats, postgres: EmbeddedPostgres) -> AsyncIterator[Worker]:
    async with running_worker([llmops.component], nats_server.url, database_url=postgres.dsn) as w:
        yield w


@pytest.fixture(scope="module")
async def db(postgres: EmbeddedPostgres) -> AsyncIterator[LlmopsDb]:
    async with LlmopsDb.connect(postgres.dsn) as found:
        yield found


async def aifleet(nats_url: str, dsn: str, *args: str) -> tuple[int, str]:
    """Run the CLI in a child process; returns its exit code and stderr."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "aifleet.cli",
        *args,
        env={**os.environ, "NATS_URL": nats_url, "DATABASE_URL": dsn, "COLUMNS": "200"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(), timeout=120)
    assert proc.returncode is not None
    return proc.returncode, err.decode()


async def budget_event_count(nc: NATS, tenant: str) -> int:
    subject = event_subject(tenant, "llmops", "budget_exceeded")
    info = await nc.jetstream().stream_info(STREAM_EVENTS, subjects_filter=subject)
    return sum((info.state.subjects or {}).values())


async def test_rebuild_after_losing_the_rows_gives_the_same_numbers(
    worker: Worker,
    nc: NATS,
    db: LlmopsDb,
    nats_server: EmbeddedNats,
    postgres: EmbeddedPostgres,
) -> None:
    """Rows and rollups deleted after ingestion come back from AI_EVENTS with identical metrics
    and costs; a second rebuild inserts nothing, and no budget alert is published again."""
    tenant = "rb" + uuid.uuid4().hex[:12]
    client = Client(nc, timeout=10.0)
    await client.call(
        tenant,
        "llmops",
        "set_budget",
        SetBudgetRequest(period="day", limit_usd=1.0),
        SetBudgetResponse,
    )
    js = nc.jetstream()
    now = dt.datetime.now(dt.UTC)
    for i in range(COUNT):
        event = operation(
            model=f"m{i % 3}",
            cost_usd=0.01 * (i % 5),
            latency_ms=float(10 + i),
            status="error" if i % 11 == 0 else "success",
            occurred_at=now - dt.timedelta(seconds=i),
        )
        await publish_operation(js, tenant, event, msg_id=f"rb-{tenant}-{i}")
    for i in range(MALFORMED):
        await publish_operation(js, tenant, b"\xff\xff", msg_id=f"rb-bad-{tenant}-{i}")

    async def stored() -> bool:
        return (await db.row_counts(tenant))["operations"] == COUNT

    await eventually(stored, timeout=60, what="every operation stored")
    await eventually(lambda: consumer_idle(js), timeout=60, what="consumer idle")
    assert await budget_event_count(nc, tenant) == 1
    since = timestamp(now - dt.timedelta(hours=1))
    until = timestamp(now + dt.timedelta(minutes=1))

    async def numbers() -> tuple[MetricsResponse, CostAnalysisResponse]:
        metrics = await client.call(
            tenant, "llmops", "metrics", MetricsRequest(since=since, until=until), MetricsResponse
        )
        costs = await client.call(
            tenant,
            "llmops",
            "cost_analysis",
            CostAnalysisRequest(since=since, until=until, bucket="hour"),
            CostAnalysisResponse,
        )
        return metrics, costs

    before = await numbers()
    assert before[0].total.operations == COUNT
    # The rollups are lost first, so deleting the rows then takes them below zero: only the
    # rebuild's recount, not the re-inserted rows alone, can give the same numbers again.
    lost = ("rollups", "rollup_callers", "rollup_latency", "operations", "spend", "budget_alerts")
    for table in lost:
        await db.pool.execute(f"DELETE FROM llmops.{table} WHERE tenant = $1", tenant)  # noqa: S608
    assert (await numbers())[0].total.operations == 0

    code, err = await aifleet(
        nats_server.url, postgres.dsn, "llmops", "rebuild", "--since", "1h", "--tenant", tenant
    )
    assert code == 0, err
    assert f"{COUNT} inserted, 0 already stored, {MALFORMED} malformed" in err
    assert await numbers() == before
    assert await db.rollups(tenant) == await db.rollups_from_rows(tenant)
    counts = await db.row_counts(tenant)
    assert counts["operations"] == COUNT
    assert counts["budget_alerts"] == 1

    code, err = await aifleet(
        nats_server.url, postgres.dsn, "llmops", "rebuild", "--since", "1h", "--tenant", tenant
    )
    assert code == 0, err
    assert f"0 inserted, {COUNT} already stored" in err
    assert await numbers() == before
    # The next live operation finds no unpublished alert: the rebuild published nothing anew.
    await publish_operation(js, tenant, operation(cost_usd=0.5), msg_id=f"rb-live-{tenant}")

    async def live_stored() -> bool:
        return (await db.row_counts(tenant))["operations"] == COUNT + 1

    await eventually(live_stored, timeout=30, what="the live operation stored")
    assert await budget_event_count(nc, tenant) == 1


async def test_rebuild_rejects_an_invalid_tenant(
    nats_server: EmbeddedNats, postgres: EmbeddedPostgres
) -> None:
    """A tenant outside the grammar is refused with exit code 2 before anything is read."""
    code, err = await aifleet(
        nats_server.url, postgres.dsn, "llmops", "rebuild", "--since", "1h", "--tenant", "Bad*"
    )
    assert code == 2
    assert "invalid argument" in err
