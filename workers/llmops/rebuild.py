"""`aifleet llmops rebuild`: put the `llm_operation` events of AI_EVENTS back into the tables.

Reads `ai.v1.<tenant|*>.evt.gateway.llm_operation` from a given time with an ordered consumer
and stores each event the way the worker does (same validation, same id: the Nats-Msg-Id, else
`AI_EVENTS:<seq>`), so an operation already stored is left alone and one that is missing (a
restored or lost database) is inserted. Spend is added as the worker adds it; a budget crossed
on the way is recorded as already alerted, so a rebuild publishes no `budget_exceeded` event.
Malformed events are counted and skipped (the worker dead-lettered them). Events are stored in
batches like the worker's, and at the end the rollups of the tenant (of every tenant without
--tenant) are recomputed from its rows, so rollups lost or damaged with the rows come back too;
writers of operations wait for that recount.
"""

from __future__ import annotations

from datetime import datetime

import nats
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js.api import ConsumerConfig, DeliverPolicy
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from schemas.codec import PROTOBUF, codec_for
from schemas.errors import ServiceError
from schemas.v1.llmops_pb2 import LlmOperationEvent
from subjects import (
    HEADER_CONTENT_TYPE,
    HEADER_MESSAGE_TYPE,
    HEADER_MSG_ID,
    STREAM_EVENTS,
    filter_subject,
    tenant_of,
)
from subjects.events import GATEWAY_LLM_OPERATION
from subjects.streams import provision_streams
from workers.llmops.batch import MAX_BATCH
from workers.llmops.service import MIGRATIONS
from workers.llmops.store import SCHEMA, LlmopsStore, Operation
from workers.llmops.validation import operation_of
from workers.runtime.config import Settings
from workers.runtime.postgres import create_pool, migrate

BATCH = MAX_BATCH
err = Console(stderr=True)


async def rebuild(nc: NATS, settings: Settings, start: datetime, tenant: str | None) -> int:
    """Exit code: 0 done, 2 invalid arguments or configuration. `nc` is the CLI's connection
    (closed here)."""
    try:
        subject = filter_subject("evt", tenant, *GATEWAY_LLM_OPERATION)
    except (ValueError, ServiceError) as exc:
        err.print(f"[red]invalid argument:[/red] {exc}")
        await nc.close()
        return 2
    if not settings.database_url:
        err.print("[red]DATABASE_URL is not set[/red]")
        await nc.close()
        return 2
    pool = await create_pool(settings.database_url, timeout=settings.dependency_timeout)
    try:
        await migrate(pool, SCHEMA, MIGRATIONS)
        js = nc.jetstream()
        await provision_streams(js)
        config = ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_TIME, opt_start_time=start)
        sub = await js.subscribe(
            subject, stream=STREAM_EVENTS, ordered_consumer=True, config=config
        )
        info = await sub.consumer_info()
        total = (info.num_pending or 0) + (info.delivered.consumer_seq if info.delivered else 0)
        counts = {"inserted": 0, "present": 0, "malformed": 0}
        store = LlmopsStore(pool)
        with Progress(
            TextColumn("rebuilding llmops"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=err,
            transient=False,
        ) as progress:
            task = progress.add_task("events", total=total)
            done = total == 0
            while not done:
                batch: list[Msg] = []
                while len(batch) < BATCH:
                    try:
                        msg = await sub.next_msg(timeout=5.0)
                    except nats.errors.TimeoutError:
                        done = True
                        break
                    batch.append(msg)
                    if msg.metadata.num_pending == 0:
                        done = True
                        break
                rows = [row for row in map(_parse, batch) if row is not None]
                stored = await store.insert_many(rows, replayed=True) if rows else []
                created = sum(s.created for s in stored)
                counts["inserted"] += created
                counts["present"] += len(rows) - created
                counts["malformed"] += len(batch) - len(rows)
                progress.update(task, advance=len(batch))
        err.print("recomputing rollups")
        await store.refresh_rollups(tenant)
        err.print(
            f"{sum(counts.values())} events: {counts['inserted']} inserted,"
            f" {counts['present']} already stored, {counts['malformed']} malformed (skipped)"
        )
        return 0
    finally:
        await pool.close()
        await nc.close()


def _parse(msg: Msg) -> tuple[str, Operation] | None:
    """(tenant, operation) of an event as the worker would store it; None when malformed."""
    headers = msg.headers or {}
    wanted = LlmOperationEvent.DESCRIPTOR.full_name
    try:
        tenant = tenant_of(msg.subject)
        if headers.get(HEADER_MESSAGE_TYPE, wanted) != wanted:
            return None
        codec = codec_for(headers.get(HEADER_CONTENT_TYPE, PROTOBUF))
        req = codec.decode(LlmOperationEvent, msg.data)
        op_id = headers.get(HEADER_MSG_ID) or f"{STREAM_EVENTS}:{msg.metadata.sequence.stream}"
        return tenant, operation_of(req, op_id, req.user_id)
    except ServiceError:
        return None
