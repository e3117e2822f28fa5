"""kill -9 of the LLMOps worker while operation events pour in: each valid one stored once.

10,000 distinct operations are published as `llm_operation` events, some twice with the same
Nats-Msg-Id, together with malformed ones, while the worker process is killed with SIGKILL twice
and restarted. Afterwards the table holds exactly the distinct valid operations, the malformed
ones are in AI_DLQ, and `metrics` agrees with numbers the test computes from what it sent.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import random
import uuid
from collections.abc import AsyncIterator

import nats
import pytest
from nats.aio.client import Client as NATS

from aifleet.embedded import EmbeddedNats, EmbeddedPostgres
from schemas.v1.llmops_pb2 import LlmOperationEvent, MetricsRequest, MetricsResponse
from subjects.streams import provision_streams
from tests.conftest import NatsFactory
from tests.faults.conftest import Spawn
from tests.support.llmops import (
    LlmopsDb,
    consumer_idle,
    dead_letters,
    operation,
    percentile,
    publish_operation,
)
from tests.support.polling import eventually
from workers.llmops.aggregates import PERCENTILE_ERROR
from workers.runtime.client import Client

pytestmark = pytest.mark.faults

MODULES = ["workers.llmops.service"]
VALID, DUPLICATES, MALFORMED = 10_000, 500, 100
WAIT = 180.0  # seconds; only waited in full by a test that is about to fail


@pytest.fixture
def own_nats(nats_factory: NatsFactory) -> EmbeddedNats:
    return nats_factory()


@pytest.fixture
async def nc(own_nats: EmbeddedNats) -> AsyncIterator[NATS]:
    conn = await nats.connect(own_nats.url, name="pytest-llmops-ingest", connect_timeout=5)
    try:
        await provision_streams(conn.jetstream())
        yield conn
    finally:
        await conn.close()


@pytest.fixture
async def db(postgres: EmbeddedPostgres) -> AsyncIterator[LlmopsDb]:
    async with LlmopsDb.connect(postgres.dsn) as found:
        yield found


def env(nats_url: str, dsn: str) -> dict[str, str]:
    return {
        "NATS_URL": nats_url,
        "DATABASE_URL": dsn,
        "AIFLEET_JOB_ACK_WAIT": "1.5",
        "AIFLEET_JOB_BACKOFF": json.dumps([0.2, 0.4]),
        "AIFLEET_DRAIN_TIMEOUT": "5",
    }


async def test_killed_twice_while_ingesting_stores_each_valid_operation_once(
    own_nats: EmbeddedNats,
    nc: NATS,
    db: LlmopsDb,
    postgres: EmbeddedPostgres,
    spawn_worker: Spawn,
) -> None:
    """10,000 distinct events with duplicates and malformed ones, two SIGKILLs: exactly the
    distinct valid operations stored, the malformed dead-lettered, metrics as computed here."""
    tenant = "k" + uuid.uuid4().hex[:12]
    js = nc.jetstream()
    rng = random.Random(11)
    now = dt.datetime.now(dt.UTC)
    sent: dict[str, LlmOperationEvent] = {}
    messages: list[tuple[str, LlmOperationEvent | bytes]] = []
    for i in range(VALID):
        msg_id = f"op-{i:05d}"
        event = operation(
            model=rng.choice(["m1", "m2"]),
            cost_usd=round(rng.uniform(0, 0.01), 6),
            latency_ms=round(rng.uniform(1, 2000), 3),
            status="error" if rng.random() < 0.1 else "success",
            occurred_at=now - dt.timedelta(seconds=rng.uniform(0, 3600)),
        )
        sent[msg_id] = event
        messages.append((msg_id, event))
    for i in rng.sample(range(VALID), DUPLICATES):
        msg_id = f"op-{i:05d}"
        messages.append((msg_id, sent[msg_id]))
    for i in range(MALFORMED):
        body = b"\xff\xff garbage" if i % 2 else operation(model="").SerializeToString()
        messages.append((f"bad-{i:03d}", body))
    rng.shuffle(messages)

    worker = await spawn_worker(MODULES, env(own_nats.url, postgres.dsn))

    async def publish_all() -> None:
        for start in range(0, len(messages), 250):
            chunk = messages[start : start + 250]
            await asyncio.gather(
                *(publish_operation(js, tenant, body, msg_id=mid) for mid, body in chunk)
            )

    publisher = asyncio.create_task(publish_all())
    for threshold in (2_000, 5_000):

        async def reached(threshold: int = threshold) -> bool:
            return (await db.row_counts(tenant))["operations"] >= threshold

        await eventually(reached, timeout=WAIT, what=f"{threshold} operations stored")
        worker.kill()
        await worker.wait(timeout=10)
        at_kill = (await db.row_counts(tenant))["operations"]
        assert at_kill < VALID, "the kill came after ingestion ended; it proves nothing"
        worker = await spawn_worker(MODULES, env(own_nats.url, postgres.dsn))
    await publisher

    async def all_stored() -> bool:
        return (await db.row_counts(tenant))["operations"] >= VALID

    await eventually(all_stored, timeout=WAIT, what="every valid operation stored")
    await eventually(lambda: consumer_idle(js), timeout=WAIT, what="consumer idle")
    assert await db.ids(tenant) == sorted(sent)
    letters = await dead_letters(js, tenant)
    assert sorted((m.headers or {}).get("Aifleet-Dlq-Msg-Id", "") for m in letters) == [
        f"bad-{i:03d}" for i in range(MALFORMED)
    ]

    metrics = await Client(nc, timeout=30.0).call(
        tenant, "llmops", "metrics", MetricsRequest(), MetricsResponse
    )
    events = list(sent.values())
    latencies = [e.latency_ms for e in events]
    assert metrics.total.operations == VALID
    assert metrics.total.errors == sum(e.status == "error" for e in events)
    assert metrics.total.cost_usd == pytest.approx(sum(e.cost_usd for e in events))
    # Percentiles come from log-spaced buckets: within the documented relative error.
    within = PERCENTILE_ERROR + 1e-9
    assert metrics.total.latency_p50_ms == pytest.approx(percentile(latencies, 0.5), rel=within)
    assert metrics.total.latency_p99_ms == pytest.approx(percentile(latencies, 0.99), rel=within)
    by_model = {g.key: g.stats.operations for g in metrics.by_model}
    assert by_model == {m: sum(e.model == m for e in events) for m in ("m1", "m2")}
