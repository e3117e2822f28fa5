"""LLMOps handlers: record every LLM operation once, list, measure and cost them per tenant.

Operations come from the gateway's `llm_operation` events (the durable consumer
`llmops-events` on AI_EVENTS, settled like jobs: ack after commit, retry with backoff, dead
letters for what can never be stored) and from direct `log_operation` calls. The event's
Nats-Msg-Id is the operation id, so a redelivery or a re-published event stores nothing twice.

Validation happens before anything is written: an operation that fails it changes nothing (and
an event that fails it goes to AI_DLQ). Operations handled at the same time are stored in one
transaction (batch.py); each handler returns, and its event is acked, after that commit. A
budget crossed by an insert is recorded in the same transaction with its `budget_exceeded`
event staged in the fleet's outbox, and published after the commit (store.py). `metrics` and
`cost_analysis` read rollups (aggregates.py): counts, tokens and cost exact, percentiles within
4.8 %. Checks are in validation.py, replies built in replies.py.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from google.protobuf.timestamp_pb2 import Timestamp

from schemas.errors import BadRequest
from schemas.v1 import llmops_pb2
from schemas.v1.llmops_pb2 import (
    CostAnalysisRequest,
    CostAnalysisResponse,
    CostBucket,
    CostGroup,
    GetBudgetRequest,
    GetBudgetResponse,
    GroupStats,
    ListOperationsRequest,
    ListOperationsResponse,
    LlmOperationEvent,
    LogOperationResponse,
    MetricsRequest,
    MetricsResponse,
    SetBudgetRequest,
    SetBudgetResponse,
)
from subjects.events import GATEWAY_LLM_OPERATION
from workers.llmops import validation as v
from workers.llmops.batch import Batcher
from workers.llmops.replies import budget_of, event_of, stats_of
from workers.llmops.store import SCHEMA, LlmopsStore
from workers.runtime import paging
from workers.runtime import validation as check
from workers.runtime.component import Component
from workers.runtime.context import Context
from workers.runtime.postgres import migrate
from workers.runtime.resources import Resources

MIGRATIONS = Path(__file__).resolve().with_name("migrations")
# The events this component consumes, and the op whose request decodes their body.
CONSUMED = {GATEWAY_LLM_OPERATION: "log_operation"}


class LlmopsService:
    def __init__(self, store: LlmopsStore, batcher: Batcher) -> None:
        self.store = store
        self.batcher = batcher

    async def log_operation(self, ctx: Context, req: LlmOperationEvent) -> LogOperationResponse:
        # Consumed events: the Nats-Msg-Id (or stream sequence) is the identity, so a
        # redelivery stores nothing twice. Direct calls: the caller's id, else a new one.
        op_id = ctx.message_id or req.id or uuid.uuid4().hex
        user_id = req.user_id if ctx.message_id else (req.user_id or v.user_of(ctx.user_id))
        operation = v.operation_of(req, op_id, user_id)
        stored = await self.batcher.insert(ctx.tenant, operation)
        return LogOperationResponse(id=op_id, created=stored.created)

    async def list_operations(
        self, ctx: Context, req: ListOperationsRequest
    ) -> ListOperationsResponse:
        filters = v.filters(req, listing=True)
        # Tokens are bound to the filters as the client gave them (an implicit `until` moves).
        query = {
            **filters.equalities(),
            "since": _micros_of(v.given(req, "since")),
            "until": _micros_of(v.given(req, "until")),
        }
        page = paging.start(ctx.tenant, req.page, query)
        after = _position(page.after)
        rows = await self.store.list_operations(ctx.tenant, filters, page.size + 1, after)
        kept, reply_page = paging.finish(
            ctx.tenant, page, rows, lambda r: (r["occurred_at"], r["id"])
        )
        return ListOperationsResponse(operations=[event_of(r) for r in kept], page=reply_page)

    async def metrics(self, ctx: Context, req: MetricsRequest) -> MetricsResponse:
        filters = v.filters(req)
        totals, histograms = await self.store.metrics(ctx.tenant, filters)
        out = MetricsResponse(
            since=check.to_timestamp(filters.since), until=check.to_timestamp(filters.until)
        )
        for (kind, key), r in sorted(totals.items()):
            stats = stats_of(r, histograms[(kind, key)])
            if kind == "total":
                out.total.CopyFrom(stats)
            elif kind == "operation_type":
                out.by_operation_type.append(GroupStats(key=key, stats=stats))
            else:
                out.by_model.append(GroupStats(key=key, stats=stats))
        return out

    async def cost_analysis(self, ctx: Context, req: CostAnalysisRequest) -> CostAnalysisResponse:
        start, end, bucket = v.bucket_range(
            v.given(req, "since"), v.given(req, "until"), req.bucket
        )
        groups, trend = await self.store.cost_analysis(ctx.tenant, start, end, bucket)
        out = CostAnalysisResponse(since=check.to_timestamp(start), until=check.to_timestamp(end))
        targets = {
            "model": out.by_model,
            "operation_type": out.by_operation_type,
            "user_id": out.by_user,
            "agent_id": out.by_agent,
        }
        for r in groups:
            if not r["dimension"]:
                out.total_cost_usd = r["cost_usd"]
                continue
            targets[r["dimension"]].append(
                CostGroup(
                    key=r["key"],
                    cost_usd=r["cost_usd"],
                    operations=r["operations"],
                    total_tokens=r["total_tokens"],
                )
            )
        for r in trend:
            out.trend.append(
                CostBucket(
                    start=check.to_timestamp(r["start"]),
                    cost_usd=r["cost_usd"],
                    operations=r["operations"],
                )
            )
        return out

    async def set_budget(self, ctx: Context, req: SetBudgetRequest) -> SetBudgetResponse:
        period = v.period(req.period)
        limit = check.number(req.limit_usd, "limit_usd", minimum=0)
        out = SetBudgetResponse()
        if await self.store.set_budget(ctx.tenant, period, limit):
            rows = await self.store.budgets(ctx.tenant, dt.datetime.now(dt.UTC), [period])
            out.budget.CopyFrom(budget_of(rows[0]))
        return out

    async def get_budget(self, ctx: Context, req: GetBudgetRequest) -> GetBudgetResponse:
        rows = await self.store.budgets(ctx.tenant, dt.datetime.now(dt.UTC))
        return GetBudgetResponse(budgets=[budget_of(r) for r in rows])


def _micros_of(ts: Timestamp | None) -> int | None:
    return None if ts is None else ts.seconds * 1_000_000 + ts.nanos // 1000


def _position(after: tuple[object, ...] | None) -> tuple[dt.datetime, str] | None:
    """The store's keyset position (occurred_at, id) from a page token's."""
    if after is None:
        return None
    if len(after) == 2 and isinstance(after[0], dt.datetime) and isinstance(after[1], str):
        return after[0], after[1]
    raise BadRequest("page_token is invalid", details={"field": paging.FIELD})


@asynccontextmanager
async def start(resources: Resources) -> AsyncIterator[LlmopsService]:
    pool = await resources.postgres()
    outbox = await resources.outbox()
    await migrate(pool, SCHEMA, MIGRATIONS)
    store = LlmopsStore(pool, outbox)
    await store.stage_unpublished_alerts()
    batcher = Batcher(store)
    try:
        yield LlmopsService(store, batcher)
    finally:
        await batcher.close()


component = Component(
    llmops_pb2.DESCRIPTOR.services_by_name["LlmopsService"],
    start=start,
    events=CONSUMED,
    description="Every LLM operation recorded once, listed, measured and costed per tenant",
)
