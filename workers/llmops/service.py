"""LLMOps handlers: record every LLM operation once, list, measure and cost them per tenant.

Operations come from the gateway's `llm_operation` events (the durable consumer
`llmops-events` on AI_EVENTS, settled like jobs: ack after commit, retry with backoff, dead
letters for what can never be stored) and from direct `log_operation` calls. The event's
Nats-Msg-Id is the operation id, so a redelivery or a re-published event stores nothing twice.

Validation happens before anything is written: an operation that fails it changes nothing (and
an event that fails it goes to AI_DLQ). Operations handled at the same time are stored in one
transaction (batch.py); each handler returns, and its event is acked, after that commit. A
budget crossed by an insert is recorded in the same transaction and its `budget_exceeded` event
published after the commit; one whose publish failed is published by the next insert of the
tenant (or the redelivery of this one). `metrics` and `cost_analysis` read rollups
(aggregates.py): counts, tokens and cost exact, percentiles within 4.8 %.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import math
import re
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
from google.protobuf import struct_pb2
from google.protobuf.timestamp_pb2 import Timestamp

from schemas.errors import BadRequest, PayloadTooLarge
from schemas.v1 import llmops_pb2
from schemas.v1.common_pb2 import PageResponse
from schemas.v1.llmops_pb2 import (
    Budget,
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
    LlmopsBudgetExceededEvent,
    LogOperationResponse,
    MetricsRequest,
    MetricsResponse,
    OperationStats,
    SetBudgetRequest,
    SetBudgetResponse,
)
from workers.llmops.aggregates import Histograms, percentile
from workers.llmops.batch import Batcher
from workers.llmops.store import PERIODS, SCHEMA, Filters, LlmopsStore, Operation
from workers.runtime.component import Component
from workers.runtime.context import Context
from workers.runtime.postgres import migrate
from workers.runtime.resources import Resources

MIGRATIONS = Path(__file__).resolve().with_name("migrations")
COMPONENT = "llmops"
# The events this component consumes, and the op whose request decodes their body.
CONSUMED = {"gateway.llm_operation": "log_operation"}
BUDGET_EVENT = "budget_exceeded"

OPERATION_TYPE_PATTERN = r"[a-z0-9][a-z0-9_.-]{0,63}"
_OPERATION_TYPE = re.compile(OPERATION_TYPE_PATTERN + r"\Z")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
STATUSES = ("success", "error")
BUCKETS = ("hour", "day")
MAX_BUCKETS = 2_000
MAX_TOKENS = 10**12
MAX_METADATA_BYTES = 16 * 1024
DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE = 50, 200
DEFAULT_RANGE = dt.timedelta(hours=24)
EARLIEST = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
FUTURE_SLACK = dt.timedelta(days=1)
_LENGTHS = {
    "id": 128,
    "model": 256,
    "provider": 128,
    "error_class": 256,
    "error_message": 4096,
    "user_id": 256,
    "agent_id": 256,
}


# -- validation ------------------------------------------------------------------------------


def _text(value: str, field: str, limit: int, *, control_ok: bool = False) -> str:
    if len(value) > limit:
        raise BadRequest(
            f"{field} is longer than {limit} characters", details={"field": field, "limit": limit}
        )
    bad = "\x00" in value if control_ok else _CONTROL.search(value) is not None
    if bad:
        raise BadRequest(f"{field} contains control characters", details={"field": field})
    return value


def _number(value: float, field: str) -> float:
    if not math.isfinite(value) or value < 0:
        raise BadRequest(f"{field} must be finite and not negative", details={"field": field})
    return value


def _moment(ts: Timestamp, field: str) -> dt.datetime:
    try:
        moment = ts.ToDatetime(tzinfo=dt.UTC)
    except (ValueError, OverflowError):
        raise BadRequest(f"{field} is out of range", details={"field": field}) from None
    return moment


def _check_struct(value: struct_pb2.Value | struct_pb2.Struct, field: str) -> Any:
    """A Struct (or Value) as plain JSON, refused when jsonb cannot hold it (NUL, non-finite)."""
    if isinstance(value, struct_pb2.Struct):
        return {
            _text(k, field, 1024, control_ok=True): _check_struct(v, field)
            for k, v in value.fields.items()
        }
    kind = value.WhichOneof("kind")
    if kind == "struct_value":
        return _check_struct(value.struct_value, field)
    if kind == "list_value":
        return [_check_struct(v, field) for v in value.list_value.values]
    if kind == "number_value":
        number = value.number_value
        if not math.isfinite(number):
            raise BadRequest(f"{field} holds a number that is not finite", details={"field": field})
        return int(number) if number.is_integer() and abs(number) < 2**53 else number
    if kind == "string_value":
        if "\x00" in value.string_value:
            raise BadRequest(f"{field} contains a NUL character", details={"field": field})
        return value.string_value
    if kind == "bool_value":
        return value.bool_value
    return None


def operation_of(req: LlmOperationEvent, op_id: str, user_id: str) -> Operation:
    """The operation to store, or BadRequest naming the first field that is wrong."""
    _text(op_id, "id", _LENGTHS["id"])
    if not req.operation_type:
        raise BadRequest("operation_type is required", details={"field": "operation_type"})
    if not _OPERATION_TYPE.match(req.operation_type):
        raise BadRequest(
            f"operation_type must match {OPERATION_TYPE_PATTERN}",
            details={"field": "operation_type", "pattern": OPERATION_TYPE_PATTERN},
        )
    if not req.model:
        raise BadRequest("model is required", details={"field": "model"})
    for field in ("model", "provider", "error_class", "user_id", "agent_id"):
        _text(getattr(req, field), field, _LENGTHS[field])
    _text(req.error_message, "error_message", _LENGTHS["error_message"], control_ok=True)
    _text(user_id, "user_id", _LENGTHS["user_id"])
    if req.status not in STATUSES:
        raise BadRequest(
            "status must be success or error", details={"field": "status", "allowed": STATUSES}
        )
    for field in ("prompt_tokens", "completion_tokens", "total_tokens"):
        if getattr(req, field) > MAX_TOKENS:
            raise BadRequest(f"{field} is out of range", details={"field": field})
    total = req.total_tokens or req.prompt_tokens + req.completion_tokens
    cost = _number(req.cost_usd, "cost_usd")
    latency = _number(req.latency_ms, "latency_ms")
    ttft = None
    if req.HasField("time_to_first_token_ms"):
        ttft = _number(req.time_to_first_token_ms, "time_to_first_token_ms")
    if not req.HasField("occurred_at"):
        raise BadRequest("occurred_at is required", details={"field": "occurred_at"})
    occurred = _moment(req.occurred_at, "occurred_at")
    if not EARLIEST <= occurred <= dt.datetime.now(dt.UTC) + FUTURE_SLACK:
        raise BadRequest(
            "occurred_at must lie between 2000-01-01 and one day from now",
            details={"field": "occurred_at"},
        )
    metadata = _check_struct(req.metadata, "metadata")
    if len(json.dumps(metadata, separators=(",", ":")).encode()) > MAX_METADATA_BYTES:
        raise PayloadTooLarge(
            "metadata is larger than the component accepts",
            details={"field": "metadata", "limit_bytes": MAX_METADATA_BYTES},
        )
    return Operation(
        id=op_id,
        occurred_at=occurred,
        operation_type=req.operation_type,
        model=req.model,
        provider=req.provider,
        prompt_tokens=req.prompt_tokens,
        completion_tokens=req.completion_tokens,
        total_tokens=total,
        cost_usd=cost,
        latency_ms=latency,
        ttft_ms=ttft,
        status=req.status,
        error_class=req.error_class,
        error_message=req.error_message,
        user_id=user_id,
        agent_id=req.agent_id,
        cache_hit=req.cache_hit,
        metadata=metadata,
    )


def _range(
    since: Timestamp, until: Timestamp, has_since: bool, has_until: bool
) -> tuple[dt.datetime, dt.datetime]:
    end = _moment(until, "until") if has_until else dt.datetime.now(dt.UTC)
    start = _moment(since, "since") if has_since else end - DEFAULT_RANGE
    if start >= end:
        raise BadRequest("since must be before until", details={"field": "since"})
    return start, end


def _filter_value(value: str, field: str) -> str:
    return _text(value, field, _LENGTHS.get(field, 256))


def _status_filter(status: str) -> str:
    if status and status not in STATUSES:
        raise BadRequest(
            "status must be success or error", details={"field": "status", "allowed": STATUSES}
        )
    return status


def _encode_page_token(moment: dt.datetime, op_id: str) -> str:
    raw = json.dumps({"t": _micros(moment), "i": op_id}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_page_token(token: str) -> tuple[dt.datetime, str]:
    bad = BadRequest("page_token is invalid", details={"field": "page.page_token"})
    try:
        position = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise bad from None
    if not isinstance(position, dict):
        raise bad
    micros, op_id = position.get("t"), position.get("i")
    if not isinstance(micros, int) or isinstance(micros, bool) or not isinstance(op_id, str):
        raise bad
    try:
        moment = dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(microseconds=micros)
    except OverflowError:
        raise bad from None
    return moment, op_id


def _micros(moment: dt.datetime) -> int:
    delta = moment - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _timestamp(moment: dt.datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(moment)
    return ts


# -- conversion ------------------------------------------------------------------------------


def _event_of(r: asyncpg.Record) -> LlmOperationEvent:
    out = LlmOperationEvent(
        id=r["id"],
        operation_type=r["operation_type"],
        model=r["model"],
        provider=r["provider"],
        prompt_tokens=r["prompt_tokens"],
        completion_tokens=r["completion_tokens"],
        total_tokens=r["total_tokens"],
        cost_usd=r["cost_usd"],
        latency_ms=r["latency_ms"],
        status=r["status"],
        error_class=r["error_class"],
        error_message=r["error_message"],
        user_id=r["user_id"],
        agent_id=r["agent_id"],
        cache_hit=r["cache_hit"],
        occurred_at=_timestamp(r["occurred_at"]),
    )
    if r["ttft_ms"] is not None:
        out.time_to_first_token_ms = r["ttft_ms"]
    metadata = json.loads(r["metadata"]) if isinstance(r["metadata"], str) else r["metadata"]
    if metadata:
        out.metadata.update(metadata)
    return out


def _stats_of(r: asyncpg.Record, histograms: Histograms) -> OperationStats:
    n = r["operations"]
    successes = n - r["errors"]
    return OperationStats(
        operations=n,
        successes=successes,
        errors=r["errors"],
        success_rate=successes / n,
        error_rate=r["errors"] / n,
        prompt_tokens=r["prompt_tokens"],
        completion_tokens=r["completion_tokens"],
        total_tokens=r["total_tokens"],
        cost_usd=r["cost_usd"],
        latency_p50_ms=percentile(histograms.latency, 0.5),
        latency_p95_ms=percentile(histograms.latency, 0.95),
        latency_p99_ms=percentile(histograms.latency, 0.99),
        latency_avg_ms=r["latency_avg"],
        time_to_first_token_p50_ms=percentile(histograms.ttft, 0.5),
        time_to_first_token_p95_ms=percentile(histograms.ttft, 0.95),
        cache_hits=r["cache_hits"],
    )


# -- handlers --------------------------------------------------------------------------------


class LlmopsService:
    def __init__(self, store: LlmopsStore, batcher: Batcher) -> None:
        self.store = store
        self.batcher = batcher

    async def log_operation(self, ctx: Context, req: LlmOperationEvent) -> LogOperationResponse:
        # Consumed events: the Nats-Msg-Id (or stream sequence) is the identity, so a
        # redelivery stores nothing twice. Direct calls: the caller's id, else a new one.
        op_id = ctx.message_id or req.id or uuid.uuid4().hex
        user_id = req.user_id if ctx.message_id else (req.user_id or _user(ctx))
        operation = operation_of(req, op_id, user_id)
        stored = await self.batcher.insert(ctx.tenant, operation)
        if stored.alerts:
            await self._publish_alerts(ctx)
        return LogOperationResponse(id=op_id, created=stored.created)

    async def _publish_alerts(self, ctx: Context) -> None:
        """Publish crossed budgets not yet published: this insert's, and any whose publish
        failed before (the batch's transaction said there are some)."""
        for alert in await self.store.unpublished_alerts(ctx.tenant):
            event = LlmopsBudgetExceededEvent(
                period=alert.period,
                period_start=_timestamp(alert.period_start),
                limit_usd=alert.limit_usd,
                spent_usd=alert.spent_usd,
                operation_id=alert.operation_id,
            )
            msg_id = f"llmops-budget:{ctx.tenant}:{alert.period}:{_micros(alert.period_start)}"
            try:
                await ctx.emit(BUDGET_EVENT, event, msg_id=msg_id)
            except Exception as exc:
                # Stored and committed: the next insert of this tenant publishes it.
                ctx.log.warning("budget alert publish deferred", error=type(exc).__name__)
                return
            await self.store.mark_published(ctx.tenant, alert)

    async def list_operations(
        self, ctx: Context, req: ListOperationsRequest
    ) -> ListOperationsResponse:
        size = req.page.page_size or DEFAULT_PAGE_SIZE
        if size > MAX_PAGE_SIZE:
            raise BadRequest(
                f"page_size must be at most {MAX_PAGE_SIZE}", details={"field": "page.page_size"}
            )
        filters = self._filters(req, req.HasField("since"), req.HasField("until"), listing=True)
        after = _decode_page_token(req.page.page_token) if req.page.page_token else None
        rows = await self.store.list_operations(ctx.tenant, filters, size + 1, after)
        out = ListOperationsResponse(operations=[_event_of(r) for r in rows[:size]])
        if len(rows) > size:
            last = rows[size - 1]
            out.page.CopyFrom(
                PageResponse(next_page_token=_encode_page_token(last["occurred_at"], last["id"]))
            )
        return out

    async def metrics(self, ctx: Context, req: MetricsRequest) -> MetricsResponse:
        filters = self._filters(req, req.HasField("since"), req.HasField("until"))
        totals, histograms = await self.store.metrics(ctx.tenant, filters)
        out = MetricsResponse(since=_timestamp(filters.since), until=_timestamp(filters.until))
        for (kind, key), r in sorted(totals.items()):
            stats = _stats_of(r, histograms[(kind, key)])
            if kind == "total":
                out.total.CopyFrom(stats)
            elif kind == "operation_type":
                out.by_operation_type.append(GroupStats(key=key, stats=stats))
            else:
                out.by_model.append(GroupStats(key=key, stats=stats))
        return out

    async def cost_analysis(self, ctx: Context, req: CostAnalysisRequest) -> CostAnalysisResponse:
        start, end = _range(req.since, req.until, req.HasField("since"), req.HasField("until"))
        bucket = req.bucket or "day"
        if bucket not in BUCKETS:
            raise BadRequest(
                "bucket must be hour or day", details={"field": "bucket", "allowed": BUCKETS}
            )
        width = dt.timedelta(hours=1) if bucket == "hour" else dt.timedelta(days=1)
        if (end - start) / width > MAX_BUCKETS - 1:
            raise BadRequest(
                f"the range holds more than {MAX_BUCKETS} {bucket} buckets",
                details={"field": "bucket", "limit": MAX_BUCKETS},
            )
        groups, trend = await self.store.cost_analysis(ctx.tenant, start, end, bucket)
        out = CostAnalysisResponse(since=_timestamp(start), until=_timestamp(end))
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
                    start=_timestamp(r["start"]), cost_usd=r["cost_usd"], operations=r["operations"]
                )
            )
        return out

    async def set_budget(self, ctx: Context, req: SetBudgetRequest) -> SetBudgetResponse:
        period = self._period(req.period)
        if not math.isfinite(req.limit_usd) or req.limit_usd < 0:
            raise BadRequest(
                "limit_usd must be finite and not negative", details={"field": "limit_usd"}
            )
        out = SetBudgetResponse()
        if await self.store.set_budget(ctx.tenant, period, req.limit_usd):
            rows = await self.store.budgets(ctx.tenant, dt.datetime.now(dt.UTC), [period])
            out.budget.CopyFrom(_budget_of(rows[0]))
        return out

    async def get_budget(self, ctx: Context, req: GetBudgetRequest) -> GetBudgetResponse:
        rows = await self.store.budgets(ctx.tenant, dt.datetime.now(dt.UTC))
        return GetBudgetResponse(budgets=[_budget_of(r) for r in rows])

    @staticmethod
    def _period(period: str) -> str:
        if period not in PERIODS:
            raise BadRequest(
                "period must be day or month", details={"field": "period", "allowed": PERIODS}
            )
        return period

    @staticmethod
    def _filters(
        req: ListOperationsRequest | MetricsRequest,
        has_since: bool,
        has_until: bool,
        *,
        listing: bool = False,
    ) -> Filters:
        if listing and not has_since:
            # A listing without a range covers everything stored, newest first.
            end = (
                _moment(req.until, "until") if has_until else dt.datetime.now(dt.UTC) + FUTURE_SLACK
            )
            start = EARLIEST
            if start >= end:
                raise BadRequest("since must be before until", details={"field": "since"})
        else:
            start, end = _range(req.since, req.until, has_since, has_until)
        status = _status_filter(req.status) if isinstance(req, ListOperationsRequest) else ""
        return Filters(
            since=start,
            until=end,
            agent_id=_filter_value(req.agent_id, "agent_id"),
            user_id=_filter_value(req.user_id, "user_id"),
            model=_filter_value(req.model, "model"),
            operation_type=_filter_value(req.operation_type, "operation_type"),
            status=status,
        )


def _budget_of(r: asyncpg.Record) -> Budget:
    return Budget(
        period=r["period"],
        limit_usd=r["limit_usd"],
        spent_usd=r["spent_usd"],
        period_start=_timestamp(r["period_start"]),
        exceeded=r["spent_usd"] > r["limit_usd"],
    )


def _user(ctx: Context) -> str:
    """X-User-ID as recorded with an operation: control characters dropped, 256 characters."""
    return _CONTROL.sub("", ctx.user_id or "")[:256]


# -- start -----------------------------------------------------------------------------------


@asynccontextmanager
async def start(resources: Resources) -> AsyncIterator[LlmopsService]:
    pool = await resources.postgres()
    await migrate(pool, SCHEMA, MIGRATIONS)
    store = LlmopsStore(pool)
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
