"""The fleet's outbox against real PostgreSQL and nats-server: an event exists exactly when its
change does, and one that could not be published right away is published later, once."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import asyncpg
import nats
import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from aifleet.embedded import EmbeddedNats, EmbeddedPostgres
from schemas.v1.cache_pb2 import CacheInvalidatedEvent
from subjects import HEADER_MESSAGE_TYPE, HEADER_MSG_ID
from subjects.events import CACHE_INVALIDATED
from subjects.streams import provision_streams
from tests.support.events import stored_events
from tests.support.polling import eventually
from workers.runtime.events import EventPublisher
from workers.runtime.outbox import Outbox
from workers.runtime.testing import context

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.fixture
async def pool(postgres: EmbeddedPostgres) -> AsyncIterator[asyncpg.Pool]:
    created = await asyncpg.create_pool(postgres.dsn, min_size=1, max_size=4)
    assert created is not None
    try:
        yield created
    finally:
        await created.close()


@pytest.fixture
async def outbox(pool: asyncpg.Pool, nc: NATS) -> Outbox:
    await provision_streams(nc.jetstream())
    return await Outbox.open(pool, EventPublisher(nc.jetstream()), grace=0.0, interval=0.1)


@pytest.fixture
def tenant() -> str:
    return "o" + uuid.uuid4().hex[:12]


async def events_of(nc: NATS, tenant: str) -> list[Msg]:
    return await stored_events(nc, tenant, CACHE_INVALIDATED)


async def rows(pool: asyncpg.Pool, tenant: str) -> int:
    count: int = await pool.fetchval(
        "SELECT count(*) FROM aifleet.outbox WHERE tenant = $1", tenant
    )
    return count


async def test_a_committed_event_is_published_with_its_headers_and_forgotten(
    outbox: Outbox, pool: asyncpg.Pool, nc: NATS, tenant: str
) -> None:
    """Staged in the change's transaction, published after the commit under the tenant's
    subject with its type, id and the request's trace context; the row is gone."""
    event = CacheInvalidatedEvent(reason="clear", pattern="*", removed=3)
    async with pool.acquire() as conn, conn.transaction():
        staged = await outbox.stage_for(
            conn, tenant, CACHE_INVALIDATED, event, headers={"traceparent": TRACEPARENT}
        )
    assert await outbox.publish(staged) == 1
    (msg,) = await events_of(nc, tenant)
    assert CacheInvalidatedEvent.FromString(msg.data) == event
    assert msg.headers is not None
    assert msg.headers[HEADER_MESSAGE_TYPE] == "aifleet.v1.CacheInvalidatedEvent"
    assert msg.headers[HEADER_MSG_ID] == staged.msg_id
    assert msg.headers["traceparent"] == TRACEPARENT
    assert await rows(pool, tenant) == 0


async def test_events_staged_together_are_published_in_their_order_with_their_ids(
    outbox: Outbox, pool: asyncpg.Pool, nc: NATS, tenant: str
) -> None:
    """stage_many writes several events in one statement; they publish in the order given,
    each under its own msg_id, with the request's trace context."""
    ctx, _ = context(tenant=tenant, component="cache", headers={"traceparent": TRACEPARENT})
    reasons = ["first", "second", "third"]
    async with pool.acquire() as conn, conn.transaction():
        staged = await outbox.stage_many(
            conn,
            ctx,
            [
                (CACHE_INVALIDATED, CacheInvalidatedEvent(reason=r), f"{tenant}-{r}")
                for r in reasons
            ],
        )
    assert [s.id for s in staged] == sorted(s.id for s in staged)
    assert await outbox.publish(staged) == 3
    msgs = await events_of(nc, tenant)
    assert [CacheInvalidatedEvent.FromString(m.data).reason for m in msgs] == reasons
    assert [(m.headers or {})[HEADER_MSG_ID] for m in msgs] == [f"{tenant}-{r}" for r in reasons]
    assert all((m.headers or {})["traceparent"] == TRACEPARENT for m in msgs)
    assert await rows(pool, tenant) == 0


async def test_events_written_in_the_callers_statement_exist_exactly_with_its_change(
    outbox: Outbox, pool: asyncpg.Pool, nc: NATS, tenant: str
) -> None:
    """event_rows puts the events in a statement of the caller's (a CTE, its parameters
    numbered after the caller's): a statement that fails writes none, one that succeeds
    writes them all, and they publish in their order."""
    ctx, _ = context(tenant=tenant, component="cache")
    events = [(CACHE_INVALIDATED, CacheInvalidatedEvent(reason=r), f"{tenant}-{r}") for r in "ab"]
    rows_sql = outbox.event_rows(ctx, events, 2)
    statement = f"WITH staged AS ({rows_sql.sql}) SELECT ARRAY(SELECT id FROM staged), 1 / $1"  # noqa: S608
    with pytest.raises(asyncpg.DivisionByZeroError):
        await pool.fetchrow(statement, 0, *rows_sql.args)
    assert await rows(pool, tenant) == 0
    ids = (await pool.fetchrow(statement, 1, *rows_sql.args))[0]
    staged = rows_sql.staged(ids)
    assert [s.msg_id for s in staged] == [f"{tenant}-a", f"{tenant}-b"]
    assert await outbox.publish(staged) == 2
    msgs = await events_of(nc, tenant)
    assert [CacheInvalidatedEvent.FromString(m.data).reason for m in msgs] == ["a", "b"]
    assert await rows(pool, tenant) == 0


async def test_a_component_cannot_stage_another_components_events(
    outbox: Outbox, pool: asyncpg.Pool, tenant: str
) -> None:
    """stage_many refuses an event of another component, before writing anything."""
    ctx, _ = context(tenant=tenant, component="agent")
    async with pool.acquire() as conn, conn.transaction():
        with pytest.raises(ValueError, match="agent cannot publish"):
            await outbox.stage_many(conn, ctx, [(CACHE_INVALIDATED, CacheInvalidatedEvent(), "x")])
    assert await rows(pool, tenant) == 0


async def test_a_rolled_back_change_leaves_no_event(
    outbox: Outbox, pool: asyncpg.Pool, nc: NATS, tenant: str
) -> None:
    """The event is part of the transaction: no change, no event, ever."""

    async def failing_change() -> None:
        async with pool.acquire() as conn, conn.transaction():
            await outbox.stage_for(conn, tenant, CACHE_INVALIDATED, CacheInvalidatedEvent())
            raise RuntimeError("the change failed")

    with pytest.raises(RuntimeError):
        await failing_change()
    assert await rows(pool, tenant) == 0
    assert await outbox.flush() >= 0
    assert await events_of(nc, tenant) == []


async def test_an_event_nats_did_not_take_is_published_by_the_flusher_once(
    pool: asyncpg.Pool, nc: NATS, nats_server: EmbeddedNats, tenant: str
) -> None:
    """publish() with NATS gone keeps the row and does not raise; the flusher of a process
    that can reach NATS publishes it, and a second flush publishes nothing."""
    gone = await nats.connect(nats_server.url)
    broken = Outbox(pool, EventPublisher(gone.jetstream(), timeout=0.5), grace=0.0)
    await gone.close()
    async with pool.acquire() as conn, conn.transaction():
        staged = await broken.stage_for(
            conn, tenant, CACHE_INVALIDATED, CacheInvalidatedEvent(reason="late")
        )
    assert await broken.publish(staged) == 0
    assert await rows(pool, tenant) == 1

    await provision_streams(nc.jetstream())
    working = Outbox(pool, EventPublisher(nc.jetstream()), grace=0.0, interval=0.1)
    flushing = asyncio.create_task(working.run())
    try:

        async def published() -> bool:
            return await rows(pool, tenant) == 0

        await eventually(published, timeout=10, what="the flusher publishes the row")
    finally:
        flushing.cancel()
    (msg,) = await events_of(nc, tenant)
    assert msg.headers is not None
    assert msg.headers[HEADER_MSG_ID] == staged.msg_id
    assert await working.flush() == 0


async def test_the_flusher_leaves_young_rows_to_their_request(
    pool: asyncpg.Pool, nc: NATS, tenant: str
) -> None:
    """Within the grace period a row belongs to the request that is about to publish it."""
    patient = Outbox(pool, EventPublisher(nc.jetstream()), grace=60.0)
    async with pool.acquire() as conn, conn.transaction():
        staged = await patient.stage_for(conn, tenant, CACHE_INVALIDATED, CacheInvalidatedEvent())
    await patient.flush()
    assert await rows(pool, tenant) == 1
    assert await patient.publish([staged]) == 1
    assert await rows(pool, tenant) == 0
