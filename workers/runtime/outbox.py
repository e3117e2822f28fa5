"""Events published after the commit of the change they report: one outbox for the fleet.

A handler writes its change and `stage`s the events in the same transaction, then `publish`es
them once the transaction committed. The event exists exactly when the change does: a rollback
takes the event with it, and a publish that fails (NATS unreachable, a crash between commit and
publish) leaves the row for the flusher, which every process runs: rows older than a grace
period, claimed with `FOR UPDATE SKIP LOCKED` so processes share them, each published under its
own tenant's subject with its own `Nats-Msg-Id`. Delivery is at least once; JetStream's duplicate
window drops a repeat published within it.

The flusher's queries span tenants on purpose: it serves no caller, it only moves each committed
event to its own tenant's subject.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import asyncpg
from google.protobuf.message import Message

from subjects import HEADER_TIMEOUT_MS
from subjects.events import EventName
from workers.runtime.events import EventPublisher
from workers.runtime.logs import get_logger
from workers.runtime.postgres import migrate

if TYPE_CHECKING:
    from workers.runtime.context import Context

SCHEMA = "aifleet"
MIGRATIONS = Path(__file__).resolve().with_name("migrations")
BATCH = 100
log = get_logger(component="outbox")


@dataclass(frozen=True, slots=True)
class StagedEvent:
    """An event written to the outbox, to be published after its transaction commits."""

    id: int
    tenant: str
    event: EventName
    type: str
    payload: bytes
    msg_id: str
    headers: dict[str, str]


def _new_msg_id(event: EventName) -> str:
    return f"{event.component}-{uuid.uuid4().hex}"


@dataclass(frozen=True, slots=True)
class EventRows:
    """Events to write within a caller's statement: `sql` (an INSERT ... RETURNING id, for a
    CTE) with `args`; `staged` turns the ids it returned into the events to publish."""

    sql: str
    args: list[Any]
    events: list[StagedEvent]  # ids not known yet

    def staged(self, ids: Sequence[int]) -> list[StagedEvent]:
        """The events with their row ids (rows are inserted in the events' order, so the ids
        ascend with it, however the statement returned them)."""
        if len(ids) != len(self.events):
            raise RuntimeError(f"{len(ids)} outbox rows written for {len(self.events)} events")
        return [replace(e, id=i) for e, i in zip(self.events, sorted(ids), strict=True)]


def no_events(first: int) -> EventRows:
    """An `event_rows` for a change that reports nothing: its CTE writes no row."""
    return EventRows("SELECT NULL::bigint AS id WHERE false", [], [])


class Outbox:
    def __init__(
        self,
        pool: asyncpg.Pool,
        publisher: EventPublisher,
        *,
        grace: float = 2.0,
        interval: float = 5.0,
    ) -> None:
        self.pool = pool
        self._publisher = publisher
        self.grace = grace
        self.interval = interval

    @classmethod
    async def open(
        cls, pool: asyncpg.Pool, publisher: EventPublisher, *, grace: float, interval: float
    ) -> Outbox:
        """The outbox on `pool`, its table created or brought up to date first."""
        await migrate(pool, SCHEMA, MIGRATIONS)
        return cls(pool, publisher, grace=grace, interval=interval)

    async def stage(
        self,
        conn: asyncpg.Connection,
        ctx: Context,
        event: EventName,
        message: Message,
        *,
        msg_id: str | None = None,
    ) -> StagedEvent:
        """Write `event` in the transaction `conn` is in, for the request `ctx` serves."""
        _check_own(ctx, event)
        return await self.stage_for(
            conn, ctx.tenant, event, message, headers=ctx.forward_headers(), msg_id=msg_id
        )

    async def stage_for(
        self,
        conn: asyncpg.Connection,
        tenant: str,
        event: EventName,
        message: Message,
        *,
        headers: dict[str, str] | None = None,
        msg_id: str | None = None,
    ) -> StagedEvent:
        """`stage` for work that serves no request (a batch of several requests, a rebuild)."""
        kept = _kept(headers or {})
        staged_id = msg_id or _new_msg_id(event)
        type_name = message.DESCRIPTOR.full_name
        payload = message.SerializeToString()
        row_id = await conn.fetchval(
            "INSERT INTO aifleet.outbox"
            " (msg_id, tenant, component, event, type, payload, headers)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb) RETURNING id",
            staged_id,
            tenant,
            event.component,
            event.event,
            type_name,
            payload,
            json.dumps(kept),
        )
        return StagedEvent(row_id, tenant, event, type_name, payload, staged_id, kept)

    async def stage_many(
        self,
        conn: asyncpg.Connection,
        ctx: Context,
        events: Sequence[tuple[EventName, Message, str]],
    ) -> list[StagedEvent]:
        """`stage` of several events (each with its msg_id) in one statement, in their order:
        a change that reports more than one event pays one round trip for them."""
        if not events:
            return []
        rows = self.event_rows(ctx, events)
        return rows.staged([r["id"] for r in await conn.fetch(rows.sql, *rows.args)])

    def event_rows(
        self,
        ctx: Context,
        events: Sequence[tuple[EventName, Message, str | None]],
        first: int = 1,
    ) -> EventRows:
        """`stage_many` as SQL for a statement of the caller's, its parameters numbered from
        `first`: a change written in one statement takes its events with it (a data-modifying
        CTE), with no transaction around it and no round trip of their own. A msg_id of None
        is a new one (the event is not a retry's)."""
        for event, _, _ in events:
            _check_own(ctx, event)
        kept = _kept(ctx.forward_headers())
        staged = [
            StagedEvent(
                0,
                ctx.tenant,
                event,
                message.DESCRIPTOR.full_name,
                message.SerializeToString(),
                msg_id or _new_msg_id(event),
                kept,
            )
            for event, message, msg_id in events
        ]
        p = [f"${first + i}" for i in range(7)]  # parameter numbers: nothing else is formatted
        return EventRows(
            "INSERT INTO aifleet.outbox (msg_id, tenant, component, event, type, payload, headers)"  # noqa: S608
            f" SELECT m, {p[0]}, c, e, t, p, {p[6]}::jsonb FROM unnest({p[1]}::text[],"
            f" {p[2]}::text[], {p[3]}::text[], {p[4]}::text[], {p[5]}::bytea[])"
            " WITH ORDINALITY AS u(m, c, e, t, p, n) ORDER BY n RETURNING id",
            [
                ctx.tenant,
                [e.msg_id for e in staged],
                [e.event.component for e in staged],
                [e.event.event for e in staged],
                [e.type for e in staged],
                [e.payload for e in staged],
                json.dumps(kept),
            ],
            staged,
        )

    async def publish(self, staged: StagedEvent | Sequence[StagedEvent]) -> int:
        """Publish committed events now and forget them; returns how many went. Never raises:
        what could not be published (or forgotten) stays for the flusher."""
        events = [staged] if isinstance(staged, StagedEvent) else list(staged)
        sent: list[int] = []
        try:
            for event in events:
                await self._send(event)
                sent.append(event.id)
        except Exception as exc:
            log.warning("event publish deferred to the outbox", error=type(exc).__name__)
        if sent:
            try:
                await self.pool.execute(
                    "DELETE FROM aifleet.outbox WHERE id = ANY($1::bigint[])", sent
                )
            except Exception as exc:  # published twice later at worst: deduplicated by msg_id
                log.warning("outbox cleanup deferred", error=type(exc).__name__)
        return len(sent)

    async def flush(self, *, limit: int = BATCH) -> int:
        """Publish rows older than the grace period (oldest first); returns how many went."""
        async with self.pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                "SELECT id, msg_id, tenant, component, event, type, payload, headers"
                " FROM aifleet.outbox"
                " WHERE created_at < clock_timestamp() - make_interval(secs => $1)"
                " ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED",
                self.grace,
                limit,
            )
            sent: list[int] = []
            for r in rows:
                event = StagedEvent(
                    r["id"],
                    r["tenant"],
                    EventName(r["component"], r["event"]),
                    r["type"],
                    r["payload"],
                    r["msg_id"],
                    json.loads(r["headers"]),
                )
                try:
                    await self._send(event)
                except Exception as exc:
                    log.warning("outbox publish failed", error=type(exc).__name__)
                    break
                sent.append(event.id)
            if sent:
                await conn.execute("DELETE FROM aifleet.outbox WHERE id = ANY($1::bigint[])", sent)
        return len(sent)

    async def run(self) -> None:
        """Flush every `interval` seconds until cancelled."""
        while True:
            await asyncio.sleep(self.interval)
            try:
                while await self.flush() == BATCH:
                    pass
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("outbox flush failed", error=type(exc).__name__)

    async def _send(self, event: StagedEvent) -> None:
        await self._publisher.publish(
            event.tenant,
            event.event,
            event.type,
            event.payload,
            dict(event.headers),
            msg_id=event.msg_id,
        )


def _check_own(ctx: Context, event: EventName) -> None:
    """A component stages only its own events."""
    if event.component != ctx.component:
        raise ValueError(f"{ctx.component} cannot publish {event}")


def _kept(headers: dict[str, str]) -> dict[str, str]:
    """The request's headers an event carries: all but its deadline (an event outlives it)."""
    return {k: v for k, v in headers.items() if k != HEADER_TIMEOUT_MS}
