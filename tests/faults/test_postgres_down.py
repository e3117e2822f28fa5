"""PostgreSQL down and back: jobs wait (nak with backoff), nothing is dead-lettered while
attempts remain, and every job takes effect once Postgres is back — same worker."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import nats
import pytest
from nats.aio.client import Client as NATS

from aifleet.embedded import EmbeddedNats
from schemas.errors import ServiceError
from subjects import STREAM_JOBS, job_consumer
from subjects.streams import provision_streams
from tests.conftest import NatsFactory, PostgresFactory
from tests.support import jobs
from tests.support.fleet import running_worker
from tests.support.jobs import RecorderDb, dead_letters, publish_job, queue_idle
from tests.support.polling import eventually
from tests.support.testkit_pb2 import RecordJob, RecordResult
from workers.runtime.client import Client

pytestmark = pytest.mark.faults

JOBS = 5
# 20 attempts, 1 s apart after the first retries: room for a slow Postgres restart.
SETTINGS = {
    "job_backoff": [0.2, 0.5, 1.0],
    "job_max_deliver": 20,
    "job_ack_wait": 5.0,
    "dependency_timeout": 1.0,
}
WAIT = 30.0


@pytest.fixture
def jobs_nats(nats_factory: NatsFactory) -> EmbeddedNats:
    return nats_factory()


@pytest.fixture
async def caller(jobs_nats: EmbeddedNats) -> AsyncIterator[NATS]:
    nc = await nats.connect(jobs_nats.url, name="pytest-caller", connect_timeout=5)
    try:
        await provision_streams(nc.jetstream())
        yield nc
    finally:
        await nc.close()


async def test_jobs_wait_for_postgres_and_complete_once_it_is_back(
    jobs_nats: EmbeddedNats, caller: NATS, postgres_factory: PostgresFactory
) -> None:
    """With Postgres stopped, jobs are retried (not dead-lettered) and requests get 503
    retryable; Postgres started again → every job takes effect exactly once."""
    pg = postgres_factory()
    tenant = "t" + uuid.uuid4().hex[:12]
    tokens = [f"pg-{i}" for i in range(JOBS)]
    js = caller.jetstream()
    client = Client(caller, timeout=5.0)
    async with running_worker([jobs.component], jobs_nats.url, database_url=pg.dsn, **SETTINGS):
        await asyncio.to_thread(pg.stop)

        began = time.monotonic()
        with pytest.raises(ServiceError) as refused:
            await client.call(
                tenant, "job_recorder", "record", RecordJob(token="req"), RecordResult
            )
        refused_in = time.monotonic() - began
        for token in tokens:
            await publish_job(js, tenant, RecordJob(token=token), msg_id=token)

        async def each_retried() -> bool:
            info = await js.consumer_info(STREAM_JOBS, job_consumer(jobs.COMPONENT))
            return (info.num_redelivered or 0) >= JOBS

        await eventually(each_retried, timeout=WAIT, what="every job delivered again")
        letters_while_down = await dead_letters(js, tenant)
        down_for = time.monotonic() - began
        await asyncio.to_thread(pg.start)
        back_at = time.monotonic()

        async with RecorderDb.connect(pg.dsn) as db:

            async def all_recorded() -> bool:
                return len(await db.effects(tenant)) == JOBS

            await eventually(all_recorded, timeout=WAIT, what="every effect")
            done_in = time.monotonic() - back_at
            await eventually(lambda: queue_idle(js), timeout=WAIT, what="every job acked")
            effects = await db.effects(tenant)
            attempts = await db.all_attempts(tenant)

    assert (refused.value.status, refused.value.code, refused.value.retryable) == (
        503,
        "UNAVAILABLE",
        True,
    ), repr(refused.value)
    assert letters_while_down == []
    assert await dead_letters(js, tenant) == []
    assert effects == dict.fromkeys(tokens, 1)
    # The attempts that failed never reached the database; the one that did was a redelivery.
    assert all(len(runs) == 1 and runs[0].delivery >= 2 for runs in attempts.values()), attempts
    print(
        f"\nPostgres down: 503 in {refused_in * 1000:.0f} ms; down {down_for:.1f}s;"
        f" all {JOBS} jobs done {done_in:.2f}s after it was back;"
        f" deliveries {sorted(runs[0].delivery for runs in attempts.values())}"
    )
