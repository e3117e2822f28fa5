"""kill -9 of a worker mid-job: the job is redelivered and takes effect exactly once.

The workers are real processes (`tests.support.run_worker`) killed with SIGKILL: no ack, no
nak, no drain. JetStream redelivers what they held once `job_ack_wait` passes without the
in_progress keepalive, and the recorder's effect, keyed by the job's message id, is written once.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import uuid
from collections.abc import AsyncIterator

import nats
import pytest
from nats.js import JetStreamContext

from aifleet.embedded import EmbeddedNats, EmbeddedPostgres
from subjects import HEADER_DLQ_DELIVERIES, HEADER_DLQ_ERROR, STREAM_JOBS, job_subject
from subjects.streams import provision_streams
from tests.conftest import NatsFactory
from tests.faults.conftest import Spawn
from tests.support import jobs
from tests.support.jobs import RecorderDb, dead_letters, publish_job, queue_idle
from tests.support.polling import eventually
from tests.support.testkit_pb2 import RecordJob

pytestmark = pytest.mark.faults

ACK_WAIT = 1.5
WAIT = 30.0  # seconds; only waited in full by a test that is about to fail
JOB_MODULES = ["tests.support.jobs"]


@pytest.fixture
def jobs_nats(nats_factory: NatsFactory) -> EmbeddedNats:
    return nats_factory()


@pytest.fixture
async def js(jobs_nats: EmbeddedNats) -> AsyncIterator[JetStreamContext]:
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


def worker_env(nats_url: str, dsn: str, **extra: str) -> dict[str, str]:
    return {
        "NATS_URL": nats_url,
        "DATABASE_URL": dsn,
        "AIFLEET_JOB_ACK_WAIT": str(ACK_WAIT),
        "AIFLEET_JOB_MAX_DELIVER": "5",
        "AIFLEET_JOB_BACKOFF": json.dumps([0.2, 0.4]),
        "AIFLEET_DRAIN_TIMEOUT": "5",
        **extra,
    }


def new_tenant() -> str:
    return "t" + uuid.uuid4().hex[:12]


async def test_job_of_a_killed_worker_is_redelivered_and_takes_effect_once(
    jobs_nats: EmbeddedNats,
    js: JetStreamContext,
    db: RecorderDb,
    postgres: EmbeddedPostgres,
    spawn_worker: Spawn,
) -> None:
    """A job whose worker dies mid-flight runs again on the next worker: one effect, two
    attempts, nothing dead-lettered."""
    tenant = new_tenant()
    env = worker_env(jobs_nats.url, postgres.dsn)
    first = await spawn_worker(JOB_MODULES, env)
    await publish_job(js, tenant, RecordJob(token="mid", sleep_seconds=2.0), msg_id="mid-1")
    await eventually(lambda: db.attempts(tenant, "mid"), timeout=WAIT, what="the first attempt")

    first.kill()
    killed_at = dt.datetime.now(dt.UTC)
    assert await first.wait(timeout=10) == -9
    assert await db.effects(tenant) == {}  # it died before writing anything
    second = await spawn_worker(JOB_MODULES, env)
    await eventually(lambda: db.effects(tenant), timeout=WAIT, what="the effect")
    await eventually(lambda: queue_idle(js), timeout=WAIT, what="the job acked")

    attempts = await db.attempts(tenant, "mid")
    assert [(a.delivery, a.worker_pid, a.wrote) for a in attempts] == [
        (1, first.pid, False),
        (2, second.pid, True),
    ]
    assert await db.effects(tenant) == {"mid": 1}
    assert await dead_letters(js, tenant) == []
    assert (
        await jobs.stream_count(js, STREAM_JOBS, job_subject(tenant, "job_recorder", "record")) == 0
    )
    redelivered = (attempts[1].started_at - killed_at).total_seconds()
    print(f"\nredelivered {redelivered:.2f}s after kill -9 (ack_wait {ACK_WAIT}s)")


async def test_batch_survives_a_replica_killed_midway_with_nothing_lost_or_duplicated(
    jobs_nats: EmbeddedNats,
    js: JetStreamContext,
    db: RecorderDb,
    postgres: EmbeddedPostgres,
    spawn_worker: Spawn,
) -> None:
    """50 jobs shared by two replicas, one killed halfway: 50 effects, each exactly once."""
    tenant = new_tenant()
    tokens = [f"batch-{i:02d}" for i in range(50)]
    env = worker_env(jobs_nats.url, postgres.dsn, AIFLEET_CONCURRENCY="8")
    victim, survivor = await asyncio.gather(
        spawn_worker(JOB_MODULES, env), spawn_worker(JOB_MODULES, env)
    )
    for token in tokens:
        await publish_job(js, tenant, RecordJob(token=token, sleep_seconds=0.5), msg_id=token)

    async def midway() -> bool:
        """15 effects written, and the victim in the middle of a job (sleeping 0.5 s)."""
        effects = await db.effects(tenant)
        attempts = await db.all_attempts(tenant)
        running = [
            t
            for t, runs in attempts.items()
            if runs[-1].worker_pid == victim.pid and t not in effects
        ]
        return len(effects) >= 15 and bool(running)

    await eventually(midway, timeout=WAIT, what="15 effects and the victim mid-job")
    victim.kill()
    assert await victim.wait(timeout=10) == -9

    async def all_recorded() -> bool:
        return len(await db.effects(tenant)) == len(tokens)

    await eventually(all_recorded, timeout=WAIT, what="every effect")
    await eventually(lambda: queue_idle(js), timeout=WAIT, what="every job acked")

    effects = await db.effects(tenant)
    lost = [t for t in tokens if t not in effects]
    duplicated = [t for t, n in effects.items() if n != 1]
    assert (lost, duplicated) == ([], [])
    assert await dead_letters(js, tenant) == []
    assert (
        await jobs.stream_count(js, STREAM_JOBS, job_subject(tenant, "job_recorder", "record")) == 0
    )
    attempts = await db.all_attempts(tenant)
    wrote_not_once = {t: runs for t, runs in attempts.items() if sum(a.wrote for a in runs) != 1}
    assert wrote_not_once == {}
    writer = {t: next(a.worker_pid for a in runs if a.wrote) for t, runs in attempts.items()}
    # Jobs the victim started but never finished: the kill cut them off mid-flight.
    cut_off = [t for t, runs in attempts.items() if victim.pid in {a.worker_pid for a in runs}]
    cut_off = [t for t in cut_off if writer[t] != victim.pid]
    assert cut_off, "the kill hit no job in flight: the test proved nothing"
    assert [t for t in cut_off if writer[t] != survivor.pid] == []
    by_victim = [t for t in tokens if writer[t] == victim.pid]
    print(
        f"\nvictim finished {len(by_victim)} jobs, {len(cut_off)} cut off and redelivered;"
        f" effects {len(effects)}, lost {len(lost)}, duplicated {len(duplicated)}"
    )


async def test_job_whose_worker_dies_on_its_last_attempt_is_dead_lettered(
    jobs_nats: EmbeddedNats,
    js: JetStreamContext,
    db: RecorderDb,
    postgres: EmbeddedPostgres,
    spawn_worker: Spawn,
) -> None:
    """Killed during attempt job_max_deliver, the job comes back once more and goes to AI_DLQ
    (not lost, not run again): two attempts, no effect, one dead letter."""
    tenant = new_tenant()
    env = worker_env(jobs_nats.url, postgres.dsn, AIFLEET_JOB_MAX_DELIVER="2")
    replicas = await asyncio.gather(spawn_worker(JOB_MODULES, env), spawn_worker(JOB_MODULES, env))
    job = RecordJob(token="last", fail_times=1, sleep_seconds=30.0)
    await publish_job(js, tenant, job, msg_id="last-1")

    async def on_last_attempt() -> list[jobs.Attempt]:
        attempts = await db.attempts(tenant, "last")
        return attempts if len(attempts) == 2 else []

    attempts = await eventually(on_last_attempt, timeout=WAIT, what="the second attempt")
    victim = next(w for w in replicas if w.pid == attempts[-1].worker_pid)
    victim.kill()
    assert await victim.wait(timeout=10) == -9
    letters = await eventually(lambda: dead_letters(js, tenant), timeout=WAIT, what="DLQ")
    await eventually(lambda: queue_idle(js), timeout=WAIT, what="the job settled")

    assert [a.delivery for a in await db.attempts(tenant, "last")] == [1, 2]
    assert await db.effects(tenant) == {}
    assert len(letters) == 1
    headers = letters[0].headers or {}
    assert headers[HEADER_DLQ_DELIVERIES] == "3"
    assert headers[HEADER_DLQ_ERROR].startswith("500 INTERNAL: no attempts left")
    assert (
        await jobs.stream_count(js, STREAM_JOBS, job_subject(tenant, "job_recorder", "record")) == 0
    )
