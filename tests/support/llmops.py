"""Test helpers for the LLMOps component: publishing `llm_operation` events as the gateway
does, and reading what the component stored and dead-lettered."""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp
from nats.js import JetStreamContext
from nats.js.api import PubAck, RawStreamMsg
from nats.js.errors import NotFoundError

from schemas.codec import PROTOBUF
from schemas.v1.llmops_pb2 import LlmOperationEvent
from subjects import (
    HEADER_CONTENT_TYPE,
    HEADER_MESSAGE_TYPE,
    HEADER_MSG_ID,
    STREAM_DLQ,
    STREAM_EVENTS,
    dlq_subject,
    event_consumer,
    event_subject,
)
from tests.support.database import ComponentDb
from workers.llmops.service import MIGRATIONS
from workers.llmops.store import SCHEMA


def percentile(values: list[float], fraction: float) -> float:
    """PostgreSQL's percentile_cont: linear interpolation between the closest ranks."""
    ordered = sorted(values)
    if not ordered:
        return 0.0
    position = fraction * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def timestamp(moment: dt.datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(moment)
    return ts


def operation(**fields: Any) -> LlmOperationEvent:
    """A valid operation; `fields` override the defaults (a datetime `occurred_at` is fine)."""
    moment = fields.pop("occurred_at", dt.datetime.now(dt.UTC))
    ttft = fields.pop("time_to_first_token_ms", None)
    defaults: dict[str, Any] = {
        "operation_type": "chat",
        "model": "gpt-4o-mini",
        "provider": "openai",
        "prompt_tokens": 10,
        "completion_tokens": 5,
        "cost_usd": 0.001,
        "latency_ms": 100.0,
        "status": "success",
    }
    event = LlmOperationEvent(**{**defaults, **fields})
    event.occurred_at.CopyFrom(timestamp(moment) if isinstance(moment, dt.datetime) else moment)
    if ttft is not None:
        event.time_to_first_token_ms = ttft
    return event


async def publish_operation(
    js: JetStreamContext,
    tenant: str,
    body: LlmOperationEvent | bytes,
    *,
    msg_id: str,
    message_type: str | None = None,
) -> PubAck:
    """Publish `ai.v1.<tenant>.evt.gateway.llm_operation` the way the gateway does."""
    data = body if isinstance(body, bytes) else body.SerializeToString()
    headers = {
        HEADER_CONTENT_TYPE: PROTOBUF,
        HEADER_MESSAGE_TYPE: message_type or LlmOperationEvent.DESCRIPTOR.full_name,
        HEADER_MSG_ID: msg_id,
    }
    return await js.publish(
        event_subject(tenant, "gateway", "llm_operation"), data, headers=headers, timeout=10.0
    )


async def consumer_idle(js: JetStreamContext) -> bool:
    """True when the llmops event consumer has nothing undelivered or unacked."""
    info = await js.consumer_info(STREAM_EVENTS, event_consumer("llmops"))
    return bool(info.num_pending == 0 and info.num_ack_pending == 0)


async def dead_letters(js: JetStreamContext, tenant: str) -> list[RawStreamMsg]:
    """Every AI_DLQ message of the tenant's consumed operations, oldest first."""
    subject = dlq_subject(tenant, "llmops", "log_operation")
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


class LlmopsDb(ComponentDb):
    """Direct reads of the llmops schema, as a test checks what the worker really wrote."""

    schema = SCHEMA
    migrations = MIGRATIONS
    tables = (
        "operations",
        "budgets",
        "spend",
        "budget_alerts",
        "rollups",
        "rollup_callers",
        "rollup_latency",
    )

    async def ids(self, tenant: str) -> list[str]:
        rows = await self.pool.fetch(
            "SELECT id FROM llmops.operations WHERE tenant = $1 ORDER BY id", tenant
        )
        return [r["id"] for r in rows]

    async def rows_naming(self, text: str) -> int:
        """Rows of any table whose tenant contains `text` (for invalid tenants)."""
        total = 0
        for table in self.tables:
            total += await self.pool.fetchval(
                f"SELECT count(*) FROM llmops.{table} WHERE strpos(tenant, $1) > 0",  # noqa: S608
                text,
            )
        return total

    async def rollups(self, tenant: str) -> dict[str, list[tuple[Any, ...]]]:
        """The tenant's rollup rows that count anything, per table, in key order."""
        return {
            table: [tuple(r) for r in await self.pool.fetch(sql, tenant)]
            for table, sql in _STORED_ROLLUPS.items()
        }

    async def rollups_from_rows(self, tenant: str) -> dict[str, list[tuple[Any, ...]]]:
        """What `rollups` should hold, computed by plain GROUP BYs over the tenant's rows."""
        return {
            table: [tuple(r) for r in await self.pool.fetch(sql, tenant)]
            for table, sql in _RAW_ROLLUPS.items()
        }


_GRAINS = (
    " FROM llmops.operations CROSS JOIN (VALUES ('hour'), ('day')) AS g(grain) WHERE tenant = $1"
)
_START = "g.grain, date_trunc(g.grain, occurred_at, 'UTC')"
_STORED_ROLLUPS = {
    "rollups": "SELECT grain, start, model, operation_type, operations, errors, cache_hits,"
    " prompt_tokens, completion_tokens, total_tokens, cost_usd, latency_ms FROM llmops.rollups"
    " WHERE tenant = $1 AND operations <> 0 ORDER BY 1, 2, 3, 4",
    "rollup_callers": "SELECT grain, start, dimension, key, operations, total_tokens, cost_usd"
    " FROM llmops.rollup_callers WHERE tenant = $1 AND operations <> 0 ORDER BY 1, 2, 3, 4",
    "rollup_latency": "SELECT grain, start, model, operation_type, bucket, latencies, ttfts"
    " FROM llmops.rollup_latency WHERE tenant = $1 AND (latencies <> 0 OR ttfts <> 0)"
    " ORDER BY 1, 2, 3, 4, 5",
}
_RAW_ROLLUPS = {
    "rollups": f"SELECT {_START}, model, operation_type, count(*),"
    " count(*) FILTER (WHERE status = 'error'), count(*) FILTER (WHERE cache_hit),"
    " sum(prompt_tokens), sum(completion_tokens), sum(total_tokens), sum(cost_usd::numeric),"
    f" sum(latency_ms::numeric){_GRAINS} GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4",
    "rollup_callers": "SELECT grain, start, dimension, key, count(*), sum(total_tokens),"  # noqa: S608 (constants)
    f" sum(cost_usd::numeric) FROM (SELECT {_START} AS start, 'user_id' AS dimension,"
    f" user_id AS key, total_tokens, cost_usd{_GRAINS} UNION ALL SELECT {_START}, 'agent_id',"
    f" agent_id, total_tokens, cost_usd{_GRAINS}) AS x GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4",
    "rollup_latency": "SELECT grain, start, model, operation_type, bucket, sum(l), sum(t) FROM ("  # noqa: S608 (constants)
    f" SELECT {_START} AS start, model, operation_type,"
    " llmops.latency_bucket(latency_ms) AS bucket, 1 AS l, 0 AS t"
    f"{_GRAINS}"
    f" UNION ALL SELECT {_START}, model, operation_type, llmops.latency_bucket(ttft_ms), 0, 1"
    f"{_GRAINS} AND ttft_ms IS NOT NULL"
    ") AS x GROUP BY 1, 2, 3, 4, 5 ORDER BY 1, 2, 3, 4, 5",
}
