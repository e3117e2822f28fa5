"""The JetStream job loop settles every job as DESIGN §4 says, counted in Postgres and AI_DLQ.

Each test runs its own nats-server: the recorder's durable consumer (shared by every worker of
the component) and any job still waiting for a retry then belong to that test alone. Effects
and attempts live in the session PostgreSQL under a tenant of the test's own.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import uuid
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from typing import Any

import nats
import pytest
from nats.js import JetStreamContext

from aifleet.embedded import EmbeddedNats, EmbeddedPostgres
from schemas.codec import JSON_CODEC, PROTOBUF_CODEC
from subjects import (
    HEADER_DLQ_DELIVERIES,
    HEADER_DLQ_ERROR,
    HEADER_DLQ_MSG_ID,
    HEADER_DLQ_SEQUENCE,
    HEADER_DLQ_SUBJECT,
    STREAM_DLQ,
    STREAM_JOBS,
    dlq_subject,
    job_consumer,
    job_subject,
)
from subjects.streams import provision_streams
from tests.conftest import NatsFactory
from tests.support import jobs
from tests.support.fleet import running_worker
from tests.support.jobs import RecorderDb, dead_letters, publish_job, publish_raw, queue_idle
from tests.support.polling import eventually
from tests.support.testkit_pb2 import RecordJob
from tests.support.testkit_rpc import JobRecorderService
from workers.runtime.events import EventPublisher
from workers.runtime.worker import Worker

BACKOFF = [0.2, 0.4]
SETTINGS: dict[str, Any] = {"job_backoff": BACKOFF, "job_max_deliver": 3, "job_ack_wait": 2.0}
WAIT = 20.0  # seconds; only waited in full by a test that is about to fail


@pytest.fixture
def jobs_nats(nats_factory: NatsFactory) -> EmbeddedNats:
    """A nats-server of this test alone."""
    return nats_factory()


@pytest.fixture
async def js(jobs_nats: EmbeddedNats) -> AsyncIterator[JetStreamContext]:
    """A publisher's JetStream context; the streams exist before any worker starts."""
    nc = await nats.connect(jobs_nats.url, name="pytest-publisher", connect_timeout=5)
    try:
        js = nc.jetstream()
        await provision_streams(js)
        yield js
    finally:
        await nc.close()


@pytest.fixture
async def db(postgres: EmbeddedPostgres) -> AsyncIterator[RecorderDb]:
    """The recorder's tables in the session PostgreSQL, read as the test checks them."""
    async with RecorderDb.connect(postgres.dsn) as recorder_db:
        yield recorder_db


def new_tenant() -> str:
    return "t" + uuid.uuid4().hex[:12]


def recorder(nats_url: str, dsn: str, **overrides: Any) -> AbstractAsyncContextManager[Worker]:
    """A job recorder worker with the test settings (overrides win)."""
    return running_worker([jobs.component], nats_url, database_url=dsn, **{**SETTINGS, **overrides})


async def test_job_failing_twice_then_succeeding_has_one_effect_after_three_attempts(
    jobs_nats: EmbeddedNats, js: JetStreamContext, db: RecorderDb, postgres: EmbeddedPostgres
) -> None:
    """Two retryable failures are retried; the third attempt writes the effect once and acks."""
    tenant = new_tenant()
    async with recorder(jobs_nats.url, postgres.dsn):
        await publish_job(js, tenant, RecordJob(token="flaky", fail_times=2), msg_id="flaky-1")
        await eventually(lambda: db.effects(tenant), timeout=WAIT, what="the effect")
        await eventually(lambda: queue_idle(js), timeout=WAIT, what="the job acked")

    attempts = await db.attempts(tenant, "flaky")
    assert await db.effects(tenant) == {"flaky": 1}
    assert [(a.delivery, a.wrote) for a in attempts] == [(1, False), (2, False), (3, True)]
    assert {a.message_id for a in attempts} == {"flaky-1"}
    assert await dead_letters(js, tenant) == []
    assert (
        await jobs.stream_count(js, STREAM_JOBS, job_subject(tenant, "job_recorder", "record")) == 0
    )


async def test_poison_job_is_dead_lettered_after_one_attempt_with_the_reason(
    jobs_nats: EmbeddedNats, js: JetStreamContext, db: RecorderDb, postgres: EmbeddedPostgres
) -> None:
    """A permanent error goes to AI_DLQ at once, with Aifleet-Dlq-* headers, and is not retried."""
    tenant = new_tenant()
    job = RecordJob(token="poison", poison=True)
    async with recorder(jobs_nats.url, postgres.dsn):
        ack = await publish_job(js, tenant, job, msg_id="poison-1")
        letters = await eventually(lambda: dead_letters(js, tenant), timeout=WAIT, what="DLQ")
        await eventually(lambda: queue_idle(js), timeout=WAIT, what="the job settled")

    assert len(letters) == 1
    letter = letters[0]
    headers = letter.headers or {}
    assert letter.subject == dlq_subject(tenant, "job_recorder", "record")
    assert letter.data == PROTOBUF_CODEC.encode(job)
    assert headers[HEADER_DLQ_SUBJECT] == job_subject(tenant, "job_recorder", "record")
    assert headers[HEADER_DLQ_SEQUENCE] == str(ack.seq)
    assert headers[HEADER_DLQ_DELIVERIES] == "1"
    assert headers[HEADER_DLQ_ERROR].startswith("400 INVALID_ARGUMENT: poison job")
    assert headers[HEADER_DLQ_MSG_ID] == "poison-1"
    assert len(await db.attempts(tenant, "poison")) == 1
    assert await db.effects(tenant) == {}
    assert (
        await jobs.stream_count(js, STREAM_JOBS, job_subject(tenant, "job_recorder", "record")) == 0
    )


async def test_job_failing_forever_is_dead_lettered_after_max_deliver_with_backoff(
    jobs_nats: EmbeddedNats, js: JetStreamContext, db: RecorderDb, postgres: EmbeddedPostgres
) -> None:
    """Retryable failures wait the configured backoff, stop after job_max_deliver attempts, and
    do not hold up the jobs published meanwhile."""
    tenant = new_tenant()
    backoff = [0.5, 1.0]  # the window in which the other jobs must flow is >= 1.5 s
    others = [f"other-{i}" for i in range(10)]
    async with recorder(jobs_nats.url, postgres.dsn, job_backoff=backoff, job_ack_wait=5.0):
        await publish_job(js, tenant, RecordJob(token="doomed", fail_times=1000), msg_id="doomed")
        await eventually(
            lambda: db.attempts(tenant, "doomed"), timeout=WAIT, what="the first attempt"
        )
        for token in others:
            await publish_job(js, tenant, RecordJob(token=token), msg_id=token)
        letters = await eventually(lambda: dead_letters(js, tenant), timeout=WAIT, what="DLQ")
        await eventually(lambda: queue_idle(js), timeout=WAIT, what="every job settled")

    attempts = await db.attempts(tenant, "doomed")
    assert [a.delivery for a in attempts] == [1, 2, 3]
    gaps = [(b.started_at - a.started_at).total_seconds() for a, b in itertools.pairwise(attempts)]
    # At least the configured delay, and well under ack_wait: the nak's delay, not an expiry.
    assert all(gap >= delay for gap, delay in zip(gaps, backoff, strict=True)), gaps
    assert all(gap < 4.5 for gap in gaps), gaps
    assert len(letters) == 1
    headers = letters[0].headers or {}
    assert headers[HEADER_DLQ_DELIVERIES] == "3"
    assert headers[HEADER_DLQ_ERROR].startswith("503 UNAVAILABLE")
    effects = await db.effects(tenant)
    assert effects == dict.fromkeys(others, 1)
    times = await db.effect_times(tenant)
    last_attempt = attempts[-1].started_at
    assert [t for t in others if times[t] >= last_attempt] == []  # all done before it gave up


MALFORMED = {
    "unknown-field": (JSON_CODEC.content_type, b'{"token": "bad", "bogus": 1}'),
    "wrong-type": (JSON_CODEC.content_type, b'{"token": "bad", "failTimes": "x"}'),
    "truncated-json": (JSON_CODEC.content_type, b'{"token": '),
    "not-protobuf": (PROTOBUF_CODEC.content_type, b"\xff\xff\xff"),
}


async def test_malformed_jobs_are_dead_lettered_without_reaching_the_handler(
    jobs_nats: EmbeddedNats, js: JetStreamContext, db: RecorderDb, postgres: EmbeddedPostgres
) -> None:
    """A body that does not decode is a permanent 400: one delivery, then AI_DLQ, no attempt."""
    tenants = {name: new_tenant() for name in MALFORMED}
    async with recorder(jobs_nats.url, postgres.dsn):
        for name, (content_type, body) in MALFORMED.items():
            await publish_raw(js, tenants[name], body, content_type, msg_id=name)
        letters = {}
        for name, tenant in tenants.items():
            letters[name] = await eventually(
                functools.partial(dead_letters, js, tenant), timeout=WAIT, what=f"DLQ of {name}"
            )
        await eventually(lambda: queue_idle(js), timeout=WAIT, what="the jobs settled")

    for name, (_, body) in MALFORMED.items():
        assert len(letters[name]) == 1, name
        letter = letters[name][0]
        headers = letter.headers or {}
        assert letter.data == body, name
        assert headers[HEADER_DLQ_DELIVERIES] == "1", name
        assert headers[HEADER_DLQ_ERROR].startswith("400 INVALID_ARGUMENT"), name
        assert await db.attempt_counts(tenants[name]) == {}, name
        assert await db.effects(tenants[name]) == {}, name


async def test_same_msg_id_published_twice_is_processed_once(
    jobs_nats: EmbeddedNats, js: JetStreamContext, db: RecorderDb, postgres: EmbeddedPostgres
) -> None:
    """JetStream drops the second publish of a Nats-Msg-Id: one message, one attempt, one effect."""
    tenant = new_tenant()
    subject = job_subject(tenant, "job_recorder", "record")
    first = await publish_job(js, tenant, RecordJob(token="once"), msg_id="dup-1")
    second = await publish_job(js, tenant, RecordJob(token="once"), msg_id="dup-1")
    assert (first.duplicate, second.duplicate, second.seq) == (None, True, first.seq)
    assert await jobs.stream_count(js, STREAM_JOBS, subject) == 1

    async with recorder(jobs_nats.url, postgres.dsn):
        await eventually(lambda: db.effects(tenant), timeout=WAIT, what="the effect")
        await eventually(lambda: queue_idle(js), timeout=WAIT, what="the job acked")

    assert await db.effects(tenant) == {"once": 1}
    assert await db.attempt_counts(tenant) == {"once": 1}
    assert await jobs.stream_count(js, STREAM_JOBS, subject) == 0


async def test_effects_belong_to_the_tenant_of_the_subject(
    jobs_nats: EmbeddedNats, js: JetStreamContext, db: RecorderDb, postgres: EmbeddedPostgres
) -> None:
    """The same job under two tenants is two effects, each under its subject's tenant, whatever
    the headers claim."""
    tenants = sorted([new_tenant(), new_tenant()])
    token = "shared-" + uuid.uuid4().hex[:8]
    async with recorder(jobs_nats.url, postgres.dsn):
        for tenant, other in zip(tenants, reversed(tenants), strict=True):
            await publish_job(
                js,
                tenant,
                RecordJob(token=token),
                msg_id=f"{tenant}-1",
                headers={"X-Tenant-ID": other, "Aifleet-Tenant": other},
            )
        for tenant in tenants:
            await eventually(
                functools.partial(db.effects, tenant), timeout=WAIT, what=f"effect of {tenant}"
            )
        await eventually(lambda: queue_idle(js), timeout=WAIT, what="the jobs acked")

    assert await db.effect_tenants(token) == tenants
    for tenant in tenants:
        assert await db.effects(tenant) == {token: 1}
        attempts = await db.attempts(tenant, token)
        assert [a.message_id for a in attempts] == [f"{tenant}-1"]


async def test_job_without_msg_id_is_keyed_by_its_stream_sequence(
    jobs_nats: EmbeddedNats, js: JetStreamContext, db: RecorderDb, postgres: EmbeddedPostgres
) -> None:
    """A job published without Nats-Msg-Id still has one stable key across its retries."""
    tenant = new_tenant()
    async with recorder(jobs_nats.url, postgres.dsn):
        ack = await publish_job(js, tenant, RecordJob(token="anon", fail_times=1), msg_id=None)
        await eventually(lambda: db.effects(tenant), timeout=WAIT, what="the effect")
        await eventually(lambda: queue_idle(js), timeout=WAIT, what="the job acked")

    attempts = await db.attempts(tenant, "anon")
    assert [a.message_id for a in attempts] == [f"{STREAM_JOBS}:{ack.seq}"] * 2
    assert await db.effects(tenant) == {"anon": 1}
    assert (
        await jobs.stream_count(js, STREAM_DLQ, dlq_subject(tenant, "job_recorder", "record")) == 0
    )


async def test_concurrent_jobs_all_take_effect_exactly_once(
    jobs_nats: EmbeddedNats, js: JetStreamContext, db: RecorderDb, postgres: EmbeddedPostgres
) -> None:
    """A burst of jobs, some failing once, ends with every token recorded exactly once."""
    tenant = new_tenant()
    tokens = [f"burst-{i}" for i in range(40)]
    async with recorder(jobs_nats.url, postgres.dsn, concurrency=8):
        await asyncio.gather(
            *(
                publish_job(js, tenant, RecordJob(token=t, fail_times=int(i % 3 == 0)), msg_id=t)
                for i, t in enumerate(tokens)
            )
        )

        async def all_recorded() -> bool:
            return len(await db.effects(tenant)) == len(tokens)

        await eventually(all_recorded, timeout=WAIT, what="every effect")
        await eventually(lambda: queue_idle(js), timeout=WAIT, what="every job acked")

    assert await db.effects(tenant) == dict.fromkeys(tokens, 1)
    counts = await db.attempt_counts(tenant)
    assert counts == {t: 2 if i % 3 == 0 else 1 for i, t in enumerate(tokens)}
    assert await dead_letters(js, tenant) == []


async def test_job_running_longer_than_ack_wait_is_not_redelivered(
    jobs_nats: EmbeddedNats, js: JetStreamContext, db: RecorderDb, postgres: EmbeddedPostgres
) -> None:
    """The in_progress keepalive holds a job running 2.3 times ack_wait: one attempt, one effect."""
    tenant = new_tenant()
    async with recorder(jobs_nats.url, postgres.dsn, job_ack_wait=1.5):
        await publish_job(js, tenant, RecordJob(token="slow", sleep_seconds=3.5), msg_id="slow")
        await eventually(lambda: db.effects(tenant), timeout=WAIT, what="the effect")
        await eventually(lambda: queue_idle(js), timeout=WAIT, what="the job acked")
        info = await js.consumer_info(STREAM_JOBS, job_consumer(jobs.COMPONENT))

    assert [(a.delivery, a.wrote) for a in await db.attempts(tenant, "slow")] == [(1, True)]
    assert info.num_redelivered == 0
    assert await db.effects(tenant) == {"slow": 1}


async def test_jobs_follow_an_existing_consumer_that_predates_a_settings_change(
    jobs_nats: EmbeddedNats, js: JetStreamContext, db: RecorderDb, postgres: EmbeddedPostgres
) -> None:
    """A worker whose job_max_deliver and job_ack_wait exceed the existing consumer's still
    dead-letters a failing job by the server's last delivery (never stuck in AI_JOBS) and keeps
    a long job alive within the consumer's ack_wait (never run twice)."""
    tenant = new_tenant()
    async with recorder(jobs_nats.url, postgres.dsn, job_max_deliver=2, job_ack_wait=1.5):
        pass  # creates the durable consumer: 3 deliveries, ack_wait 1.5 s
    async with recorder(jobs_nats.url, postgres.dsn, job_max_deliver=4, job_ack_wait=30.0):
        await publish_job(js, tenant, RecordJob(token="stuck", fail_times=1000), msg_id="stuck")
        await publish_job(js, tenant, RecordJob(token="slow", sleep_seconds=3.5), msg_id="slow")
        letters = await eventually(lambda: dead_letters(js, tenant), timeout=WAIT, what="DLQ")
        await eventually(lambda: db.effects(tenant), timeout=WAIT, what="the slow effect")
        await eventually(lambda: queue_idle(js), timeout=WAIT, what="the jobs settled")

    assert len(letters) == 1
    assert (letters[0].headers or {})[HEADER_DLQ_DELIVERIES] == "2"
    assert await db.attempt_counts(tenant) == {"stuck": 2, "slow": 1}
    assert await db.effects(tenant) == {"slow": 1}
    assert (
        await jobs.stream_count(js, STREAM_JOBS, job_subject(tenant, "job_recorder", "record")) == 0
    )


@pytest.mark.parametrize("handler_fails", [False, True])
async def test_a_job_whose_last_attempt_never_settled_is_abandoned_then_dead_lettered(
    jobs_nats: EmbeddedNats,
    js: JetStreamContext,
    db: RecorderDb,
    postgres: EmbeddedPostgres,
    handler_fails: bool,
) -> None:
    """A delivery taken and never settled (a worker killed on the last attempt): the server's
    extra delivery is not run but given to `record_abandoned` once, then dead-lettered, also
    when that handler fails."""
    tenant = new_tenant()
    async with recorder(jobs_nats.url, postgres.dsn, job_max_deliver=1, job_ack_wait=1.0):
        pass  # creates the durable consumer: 2 deliveries, ack_wait 1 s
    await publish_job(js, tenant, RecordJob(token="lost", poison=handler_fails), msg_id="lost")
    taken = await js.pull_subscribe_bind(durable=job_consumer(jobs.COMPONENT), stream=STREAM_JOBS)
    (first,) = await taken.fetch(1, timeout=5)
    assert first.metadata.num_delivered == 1
    await taken.unsubscribe()  # the "killed" worker: delivered, never settled
    async with recorder(jobs_nats.url, postgres.dsn, job_max_deliver=1, job_ack_wait=1.0):
        letters = await eventually(lambda: dead_letters(js, tenant), timeout=WAIT, what="DLQ")
        await eventually(lambda: queue_idle(js), timeout=WAIT, what="the job settled")

    assert [a for a in jobs.ABANDONED if a[0] == tenant] == [(tenant, "lost", 2)]
    assert len(letters) == 1
    assert (letters[0].headers or {})[HEADER_DLQ_DELIVERIES] == "2"
    assert await db.attempt_counts(tenant) == {}  # the job itself never ran


async def test_a_job_enqueued_through_the_contract_is_run_once(
    jobs_nats: EmbeddedNats, js: JetStreamContext, db: RecorderDb, postgres: EmbeddedPostgres
) -> None:
    """`ctx.enqueue(Service.Method, request, msg_id=...)` publishes the job a worker runs;
    enqueued twice with one id it is stored, and run, once."""
    tenant = new_tenant()
    publisher = EventPublisher(js)
    job = RecordJob(token="typed")
    async with recorder(jobs_nats.url, postgres.dsn):
        await publisher.enqueue(tenant, JobRecorderService.Record, job, msg_id="typed-1")
        await publisher.enqueue(tenant, JobRecorderService.Record, job, msg_id="typed-1")
        await eventually(lambda: db.effects(tenant), timeout=WAIT, what="the effect")
        await eventually(lambda: queue_idle(js), timeout=WAIT, what="the job acked")
    assert await db.effects(tenant) == {"typed": 1}
    assert [a.message_id for a in await db.attempts(tenant, "typed")] == ["typed-1"]
