"""A test-only job component: records a token once in Postgres, failing on demand first.

`record` counts every attempt (committed before the attempt can fail), fails retryably while
the attempts are at most `fail_times`, fails permanently when `poison`, sleeps `sleep_seconds`
(so a test can kill the worker mid-job), then writes its effect idempotently, keyed by
(tenant, message id): a redelivered job finds its effect and writes nothing twice.

Tests publish jobs with `publish_job` and read what happened with `RecorderDb`.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncpg
from nats.js import JetStreamContext
from nats.js.api import PubAck, RawStreamMsg
from nats.js.errors import NotFoundError

from schemas import registry
from schemas.codec import PROTOBUF_CODEC, Codec
from schemas.errors import BadRequest, Unavailable
from subjects import (
    HEADER_CONTENT_TYPE,
    HEADER_MSG_ID,
    STREAM_DLQ,
    STREAM_JOBS,
    dlq_subject,
    job_consumer,
    job_subject,
)
from tests.support import testkit_pb2
from tests.support.database import ComponentDb
from tests.support.testkit_pb2 import RecordJob, RecordResult
from workers.runtime.component import Component
from workers.runtime.context import Context
from workers.runtime.postgres import migrate
from workers.runtime.resources import Resources

registry.register_file(testkit_pb2.DESCRIPTOR)

SCHEMA = "job_recorder"
MIGRATIONS = Path(__file__).resolve().with_name("migrations")
COMPONENT = "job_recorder"
OP = "record"


class JobRecorder:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def record(self, ctx: Context, req: RecordJob) -> RecordResult:
        if not req.token:
            raise BadRequest("token is required", details={"field": "token"})
        # Over request-reply there is no message id; the token is the key then.
        message_id = ctx.message_id or f"request:{req.token}"
        async with self.pool.acquire() as conn, conn.transaction():
            seq = await conn.fetchval(
                "INSERT INTO job_recorder.attempts"
                " (tenant, token, message_id, delivery, worker_pid)"
                " VALUES ($1, $2, $3, $4, $5) RETURNING seq",
                ctx.tenant,
                req.token,
                message_id,
                ctx.attempt,
                os.getpid(),
            )
            attempts = await conn.fetchval(
                "SELECT count(*) FROM job_recorder.attempts WHERE tenant = $1 AND token = $2",
                ctx.tenant,
                req.token,
            )
        if attempts <= req.fail_times:
            raise Unavailable(f"failing on purpose, attempt {attempts} of {req.fail_times}")
        if req.poison:
            raise BadRequest("poison job: this can never succeed")
        if req.sleep_seconds > 0:
            await asyncio.sleep(req.sleep_seconds)
        async with self.pool.acquire() as conn, conn.transaction():
            wrote = await conn.fetchval(
                "INSERT INTO job_recorder.effects (tenant, message_id, token) VALUES ($1, $2, $3)"
                " ON CONFLICT (tenant, message_id) DO NOTHING RETURNING true",
                ctx.tenant,
                message_id,
                req.token,
            )
            if wrote:
                await conn.execute(
                    "UPDATE job_recorder.attempts SET wrote = true"
                    " WHERE tenant = $1 AND token = $2 AND seq = $3",
                    ctx.tenant,
                    req.token,
                    seq,
                )
        return RecordResult(recorded=bool(wrote))

    async def record_abandoned(self, ctx: Context, req: RecordJob) -> None:
        """Called for a job whose last attempt never settled; a poison job's call fails."""
        ABANDONED.append((ctx.tenant, req.token, ctx.attempt))
        if req.poison:
            raise RuntimeError("the abandoned handler fails on purpose")


# (tenant, token, delivery) of every `record_abandoned` call in this process.
ABANDONED: list[tuple[str, str, int]] = []


@asynccontextmanager
async def start(resources: Resources) -> AsyncIterator[JobRecorder]:
    pool = await resources.postgres()
    await migrate(pool, SCHEMA, MIGRATIONS)
    yield JobRecorder(pool)


component = Component(
    testkit_pb2.DESCRIPTOR.services_by_name["JobRecorderService"],
    start=start,
    jobs=frozenset({OP}),
    description="test job recorder",
)


# -- the test side ----------------------------------------------------------------------------


async def publish_job(
    js: JetStreamContext,
    tenant: str,
    job: RecordJob,
    *,
    msg_id: str | None,
    codec: Codec = PROTOBUF_CODEC,
    headers: dict[str, str] | None = None,
) -> PubAck:
    """Publish a record job to AI_JOBS the way any client does: subject, body, headers."""
    return await publish_raw(js, tenant, codec.encode(job), codec.content_type, msg_id, headers)


async def publish_raw(
    js: JetStreamContext,
    tenant: str,
    body: bytes,
    content_type: str,
    msg_id: str | None,
    headers: dict[str, str] | None = None,
) -> PubAck:
    out = {HEADER_CONTENT_TYPE: content_type, **(headers or {})}
    if msg_id is not None:
        out[HEADER_MSG_ID] = msg_id
    return await js.publish(job_subject(tenant, COMPONENT, OP), body, headers=out, timeout=10.0)


async def stream_count(js: JetStreamContext, stream: str, subject: str) -> int:
    """Messages a stream holds on `subject` (wildcards allowed)."""
    info = await js.stream_info(stream, subjects_filter=subject)
    return sum((info.state.subjects or {}).values())


async def queue_idle(js: JetStreamContext) -> bool:
    """True when the recorder's consumer has nothing undelivered, unacked or awaiting retry."""
    info = await js.consumer_info(STREAM_JOBS, job_consumer(COMPONENT))
    return bool(info.num_pending == 0 and info.num_ack_pending == 0)


async def dead_letters(js: JetStreamContext, tenant: str) -> list[RawStreamMsg]:
    """Every AI_DLQ message of the tenant's record jobs, oldest first."""
    subject = dlq_subject(tenant, COMPONENT, OP)
    found: list[RawStreamMsg] = []
    seq = 1
    while True:
        try:
            msg = await js.get_msg(STREAM_DLQ, seq=seq, subject=subject, next=True)
        except NotFoundError:
            return found
        found.append(msg)
        assert msg.seq is not None
        seq = msg.seq + 1


@dataclass(frozen=True)
class Attempt:
    message_id: str
    delivery: int
    wrote: bool
    started_at: dt.datetime
    worker_pid: int


class RecorderDb(ComponentDb):
    """Reads the recorder's tables, as a test checks what the worker did."""

    schema = SCHEMA
    migrations = MIGRATIONS

    async def effects(self, tenant: str) -> dict[str, int]:
        """Effect rows of a tenant, by token (a count above 1 is a duplicated effect)."""
        rows = await self.pool.fetch(
            "SELECT token, count(*) AS n FROM job_recorder.effects WHERE tenant = $1"
            " GROUP BY token",
            tenant,
        )
        return {r["token"]: int(r["n"]) for r in rows}

    async def effect_times(self, tenant: str) -> dict[str, dt.datetime]:
        rows = await self.pool.fetch(
            "SELECT token, recorded_at FROM job_recorder.effects WHERE tenant = $1", tenant
        )
        return {r["token"]: r["recorded_at"] for r in rows}

    async def effect_tenants(self, token: str) -> list[str]:
        rows = await self.pool.fetch(
            "SELECT tenant FROM job_recorder.effects WHERE token = $1 ORDER BY tenant", token
        )
        return [r["tenant"] for r in rows]

    async def attempts(self, tenant: str, token: str) -> list[Attempt]:
        rows = await self.pool.fetch(
            "SELECT message_id, delivery, wrote, started_at, worker_pid"
            " FROM job_recorder.attempts WHERE tenant = $1 AND token = $2 ORDER BY seq",
            tenant,
            token,
        )
        return [Attempt(**dict(r)) for r in rows]

    async def all_attempts(self, tenant: str) -> dict[str, list[Attempt]]:
        """Every attempt of a tenant's jobs, by token, in order."""
        rows = await self.pool.fetch(
            "SELECT token, message_id, delivery, wrote, started_at, worker_pid"
            " FROM job_recorder.attempts WHERE tenant = $1 ORDER BY seq",
            tenant,
        )
        found: dict[str, list[Attempt]] = {}
        for r in rows:
            values = dict(r)
            found.setdefault(values.pop("token"), []).append(Attempt(**values))
        return found

    async def attempt_counts(self, tenant: str) -> dict[str, int]:
        rows = await self.pool.fetch(
            "SELECT token, count(*) AS n FROM job_recorder.attempts WHERE tenant = $1"
            " GROUP BY token",
            tenant,
        )
        return {r["token"]: int(r["n"]) for r in rows}
