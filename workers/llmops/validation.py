"""What an operation and the query ops of LLMOps must satisfy (on top of the kit's checks).

An operation that fails validation changes nothing; consumed as an event it goes to AI_DLQ.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Literal

from google.protobuf.timestamp_pb2 import Timestamp

from schemas.errors import BadRequest
from schemas.v1.llmops_pb2 import (
    CostAnalysisRequest,
    ListOperationsRequest,
    LlmOperationEvent,
    MetricsRequest,
)
from workers.llmops.store import PERIODS, Filters, Operation
from workers.runtime import validation as check

OPERATION_TYPE_PATTERN = r"[a-z0-9][a-z0-9_.-]{0,63}"
_OPERATION_TYPE = re.compile(OPERATION_TYPE_PATTERN + r"\Z")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
STATUSES = ("success", "error")
BUCKETS = ("hour", "day")
MAX_BUCKETS = 2_000
MAX_TOKENS = 10**12
MAX_METADATA_BYTES = 16 * 1024
DEFAULT_RANGE = dt.timedelta(hours=24)
EARLIEST = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
FUTURE_SLACK = dt.timedelta(days=1)
LENGTHS = {
    "id": 128,
    "model": 256,
    "provider": 128,
    "error_class": 256,
    "error_message": 4096,
    "user_id": 256,
    "agent_id": 256,
    "operation_type": 256,
}


def _field(value: str, field: str) -> str:
    return check.text(value, field, max_chars=LENGTHS[field], multiline=False)


def operation_of(req: LlmOperationEvent, op_id: str, user_id: str) -> Operation:
    """The operation to store, or BadRequest naming the first field that is wrong."""
    _field(op_id, "id")
    check.identifier(req.operation_type, "operation_type", pattern=_OPERATION_TYPE)
    check.text(req.model, "model", required=True)
    for field in ("model", "provider", "error_class", "user_id", "agent_id"):
        _field(getattr(req, field), field)
    check.text(req.error_message, "error_message", max_chars=LENGTHS["error_message"], control=True)
    _field(user_id, "user_id")
    check.choice(req.status, "status", STATUSES)
    for field in ("prompt_tokens", "completion_tokens", "total_tokens"):
        check.integer(getattr(req, field), field, maximum=MAX_TOKENS)
    total = req.total_tokens or req.prompt_tokens + req.completion_tokens
    cost = check.number(req.cost_usd, "cost_usd", minimum=0)
    latency = check.number(req.latency_ms, "latency_ms", minimum=0)
    ttft = None
    if req.HasField("time_to_first_token_ms"):
        ttft = check.number(req.time_to_first_token_ms, "time_to_first_token_ms", minimum=0)
    if not req.HasField("occurred_at"):
        raise BadRequest("occurred_at is required", details={"field": "occurred_at"})
    occurred = check.timestamp(req.occurred_at, "occurred_at")
    if not EARLIEST <= occurred <= dt.datetime.now(dt.UTC) + FUTURE_SLACK:
        raise BadRequest(
            "occurred_at must lie between 2000-01-01 and one day from now",
            details={"field": "occurred_at"},
        )
    metadata = check.struct(req.metadata, "metadata", max_bytes=MAX_METADATA_BYTES)
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


def given(
    req: ListOperationsRequest | MetricsRequest | CostAnalysisRequest,
    field: Literal["since", "until"],
) -> Timestamp | None:
    """The request's Timestamp `field`, or None when it was not set."""
    value: Timestamp = getattr(req, field)
    return value if req.HasField(field) else None


def filters(req: ListOperationsRequest | MetricsRequest, *, listing: bool = False) -> Filters:
    """The equality filters and range of a listing or a metrics query. A listing without
    `since` covers everything stored; metrics default to the last 24 hours."""
    since, until = given(req, "since"), given(req, "until")
    if listing and since is None:
        start = EARLIEST
        end = check.timestamp(until, "until") if until else dt.datetime.now(dt.UTC) + FUTURE_SLACK
        if start >= end:
            raise BadRequest("since must be before until", details={"field": "since"})
    else:
        start, end = check.time_range(since, until, default=DEFAULT_RANGE)
    status = ""
    if isinstance(req, ListOperationsRequest) and req.status:
        status = check.choice(req.status, "status", STATUSES)
    return Filters(
        since=start,
        until=end,
        agent_id=_field(req.agent_id, "agent_id"),
        user_id=_field(req.user_id, "user_id"),
        model=_field(req.model, "model"),
        operation_type=_field(req.operation_type, "operation_type"),
        status=status,
    )


def bucket_range(
    since: Timestamp | None, until: Timestamp | None, bucket: str
) -> tuple[dt.datetime, dt.datetime, str]:
    """[start, end) and the bucket width of a cost analysis, within MAX_BUCKETS buckets."""
    start, end = check.time_range(since, until, default=DEFAULT_RANGE)
    bucket = check.choice(bucket or "day", "bucket", BUCKETS)
    width = dt.timedelta(hours=1) if bucket == "hour" else dt.timedelta(days=1)
    if (end - start) / width > MAX_BUCKETS - 1:
        raise BadRequest(
            f"the range holds more than {MAX_BUCKETS} {bucket} buckets",
            details={"field": "bucket", "limit": MAX_BUCKETS},
        )
    return start, end, bucket


def period(value: str) -> str:
    return check.choice(value, "period", PERIODS)


def user_of(user_id: str | None) -> str:
    """X-User-ID as recorded with an operation: control characters dropped, 256 characters."""
    return _CONTROL.sub("", user_id or "")[:256]
