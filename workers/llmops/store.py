"""PostgreSQL storage of the LLMOps component (schema `llmops`).

Every statement takes the tenant as a parameter and filters by it. Operations are stored in
batches, one transaction each: the rows, the rollups (triggers, migrations/002_rollups.sql), the
spend they add, the budgets they cross and, for each, its `budget_exceeded` event in the fleet's
outbox, published after the commit. Aggregates come from aggregates.py. Filters are
added to the SQL only when given, each as a bound parameter, so the planner sees the plain
conditions the indexes serve.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
from google.protobuf.timestamp_pb2 import Timestamp

from schemas.v1.llmops_pb2 import LlmopsBudgetExceededEvent
from subjects.events import LLMOPS_BUDGET_EXCEEDED
from workers.llmops import aggregates
from workers.llmops.aggregates import GroupKey, Histograms, Query, Spans
from workers.runtime.outbox import Outbox, StagedEvent

SCHEMA = "llmops"
PERIODS = ("day", "month")
# work_mem of one aggregate query (PostgreSQL's default is 4MB).
AGGREGATE_WORK_MEM = "64MB"


@dataclass(frozen=True)
class Operation:
    """One validated operation, as stored."""

    id: str
    occurred_at: dt.datetime
    operation_type: str
    model: str
    provider: str
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    cost_usd: float
    latency_ms: float
    ttft_ms: float | None
    status: str
    error_class: str
    error_message: str
    user_id: str
    agent_id: str
    cache_hit: bool
    metadata: dict[str, Any]


@dataclass(frozen=True)
class Alert:
    tenant: str
    period: str
    period_start: dt.datetime
    limit_usd: float
    spent_usd: float
    operation_id: str


@dataclass(frozen=True)
class Filters:
    """Equality filters and a [since, until) range; empty strings mean any."""

    since: dt.datetime
    until: dt.datetime
    agent_id: str = ""
    user_id: str = ""
    model: str = ""
    operation_type: str = ""
    status: str = ""

    def where(self, tenant: str) -> tuple[str, list[Any]]:
        """`tenant = $1 AND ...` with its parameters."""
        args: list[Any] = [tenant, self.since, self.until]
        clauses = ["tenant = $1", "occurred_at >= $2", "occurred_at < $3"]
        for column in ("agent_id", "user_id", "model", "operation_type", "status"):
            value = getattr(self, column)
            if value:
                args.append(value)
                clauses.append(f"{column} = ${len(args)}")
        return " AND ".join(clauses), args

    def equalities(self) -> dict[str, str]:
        """The equality filters that are given, by column."""
        columns = ("agent_id", "user_id", "model", "operation_type", "status")
        return {c: getattr(self, c) for c in columns if getattr(self, c)}


@dataclass(frozen=True)
class Stored:
    """What storing one operation did: whether it was new."""

    created: bool


_COLUMNS = (
    "id, occurred_at, operation_type, model, provider, prompt_tokens, completion_tokens,"
    " total_tokens, cost_usd, latency_ms, ttft_ms, status, error_class, error_message, user_id,"
    " agent_id, cache_hit, metadata"
)
# Columns the rollups split by; a filter on any other column is served from raw rows.
ROLLED_UP = frozenset({"model", "operation_type"})

_INSERT = (
    f"INSERT INTO llmops.operations (tenant, {_COLUMNS})"  # noqa: S608 (constant)
    " SELECT tenant, id, occurred_at, operation_type, model, provider, prompt_tokens,"
    " completion_tokens, total_tokens, cost_usd, latency_ms, ttft_ms, status, error_class,"
    " error_message, user_id, agent_id, cache_hit, metadata::jsonb"
    " FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::text[], $5::text[], $6::text[],"
    " $7::bigint[], $8::bigint[], $9::bigint[], $10::float8[], $11::float8[], $12::float8[],"
    " $13::text[], $14::text[], $15::text[], $16::text[], $17::text[], $18::bool[], $19::text[])"
    f" AS u(tenant, {_COLUMNS})"
    " ON CONFLICT (tenant, id) DO NOTHING RETURNING tenant, id"
)

# Spend of the new operations (in arrival order $1..$4), day then month of each tenant in key
# order, so concurrent batches lock spend rows in one order; each budget crossed is recorded
# once, with the operation whose running total crossed it.
_CHARGE = """
WITH batch AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::float8[])
        WITH ORDINALITY AS b(tenant, id, occurred_at, cost_usd, n)
), charged AS (
    SELECT b.*, p.period,
        date_trunc(p.period, b.occurred_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS period_start
    FROM batch b CROSS JOIN unnest($5::text[]) AS p(period)
), spent AS (
    INSERT INTO llmops.spend AS s (tenant, period, period_start, spent_usd)
    SELECT tenant, period, period_start, sum(cost_usd) FROM charged
    GROUP BY tenant, period, period_start ORDER BY tenant, period, period_start
    ON CONFLICT (tenant, period, period_start)
    DO UPDATE SET spent_usd = s.spent_usd + excluded.spent_usd
    RETURNING tenant, period, period_start, spent_usd
), running AS (
    SELECT c.tenant, c.period, c.period_start, c.id, c.n,
        s.spent_usd - sum(c.cost_usd) OVER whole + sum(c.cost_usd) OVER upto AS spent_usd
    FROM charged c JOIN spent s USING (tenant, period, period_start)
    WINDOW whole AS (PARTITION BY c.tenant, c.period, c.period_start),
        upto AS (whole ORDER BY c.n)
)
INSERT INTO llmops.budget_alerts
    (tenant, period, period_start, limit_usd, spent_usd, operation_id, published)
SELECT DISTINCT ON (r.tenant, r.period, r.period_start)
    r.tenant, r.period, r.period_start, b.limit_usd, r.spent_usd, r.id, $6
FROM running r JOIN llmops.budgets b ON b.tenant = r.tenant AND b.period = r.period
WHERE r.spent_usd > b.limit_usd
ORDER BY r.tenant, r.period, r.period_start, r.n
ON CONFLICT (tenant, period, period_start) DO NOTHING
RETURNING tenant, period, period_start, limit_usd, spent_usd, operation_id
"""


_FIELDS = [c.strip() for c in _COLUMNS.split(",")][:-1]  # metadata goes in as json text


def _columns(rows: Sequence[tuple[str, Operation]]) -> list[list[Any]]:
    """One array per column of _INSERT."""
    ops = [op for _, op in rows]
    return [
        [tenant for tenant, _ in rows],
        *([getattr(op, name) for op in ops] for name in _FIELDS),
        [json.dumps(op.metadata, separators=(",", ":")) for op in ops],
    ]


def budget_event(alert: Alert) -> tuple[LlmopsBudgetExceededEvent, str]:
    """The event of a crossed budget and its Nats-Msg-Id (one per tenant, period and start)."""
    start = Timestamp()
    start.FromDatetime(alert.period_start)
    event = LlmopsBudgetExceededEvent(
        period=alert.period,
        period_start=start,
        limit_usd=alert.limit_usd,
        spent_usd=alert.spent_usd,
        operation_id=alert.operation_id,
    )
    micros = start.seconds * 1_000_000 + start.nanos // 1000
    return event, f"llmops-budget:{alert.tenant}:{alert.period}:{micros}"


class LlmopsStore:
    """`outbox` None (a rebuild, a test) records crossed budgets without events."""

    def __init__(self, pool: asyncpg.Pool, outbox: Outbox | None = None) -> None:
        self.pool = pool
        self.outbox = outbox

    async def insert_many(
        self, rows: Sequence[tuple[str, Operation]], *, replayed: bool = False
    ) -> list[Stored]:
        """Store (tenant, operation) rows in one transaction, each unless its id is stored
        already (or earlier in `rows`); the spend they add and the budgets they cross are
        written with them, and each crossed budget's event staged in the outbox and published
        after the commit. A `replayed` batch (rebuild) stages no event. One result per row, in
        order."""
        first: dict[tuple[str, str], int] = {}
        for i, (tenant, op) in enumerate(rows):
            first.setdefault((tenant, op.id), i)
        # Rows go in by key, so that batches holding the same ids lock them in one order.
        fresh = sorted(first.items())
        async with self.pool.acquire() as conn, conn.transaction():
            inserted = await conn.fetch(_INSERT, *_columns([rows[i] for _, i in fresh]))
            created = {(r["tenant"], r["id"]) for r in inserted}
            charged = [
                rows[i]
                for key, i in sorted(first.items(), key=lambda item: item[1])
                if key in created and rows[i][1].cost_usd > 0
            ]
            staged: list[StagedEvent] = []
            if charged:
                crossed = await conn.fetch(
                    _CHARGE,
                    [tenant for tenant, _ in charged],
                    [op.id for _, op in charged],
                    [op.occurred_at for _, op in charged],
                    [op.cost_usd for _, op in charged],
                    list(PERIODS),
                    replayed or self.outbox is not None,
                )
                if self.outbox is not None and not replayed:
                    for r in crossed:
                        event, msg_id = budget_event(_alert(r))
                        staged.append(
                            await self.outbox.stage_for(
                                conn, r["tenant"], LLMOPS_BUDGET_EXCEEDED, event, msg_id=msg_id
                            )
                        )
        if staged and self.outbox is not None:
            await self.outbox.publish(staged)
        return [
            Stored(created=first[(tenant, op.id)] == i and (tenant, op.id) in created)
            for i, (tenant, op) in enumerate(rows)
        ]

    async def stage_unpublished_alerts(self) -> int:
        """Hand budgets crossed before the outbox existed (`published` false) to the outbox,
        once: each event is staged in the transaction that marks its alert published."""
        if self.outbox is None:
            return 0
        async with self.pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                "UPDATE llmops.budget_alerts SET published = true WHERE NOT published"
                " RETURNING tenant, period, period_start, limit_usd, spent_usd, operation_id"
            )
            for r in rows:
                event, msg_id = budget_event(_alert(r))
                await self.outbox.stage_for(
                    conn, r["tenant"], LLMOPS_BUDGET_EXCEEDED, event, msg_id=msg_id
                )
        return len(rows)

    async def refresh_rollups(self, tenant: str | None) -> None:
        """Recompute the rollups of `tenant` (of every tenant when None) from its operations;
        writers of operations wait until it is done."""
        async with self.pool.acquire() as conn:
            await conn.execute("SELECT llmops.refresh_rollups($1)", tenant)

    async def list_operations(
        self, tenant: str, filters: Filters, limit: int, after: tuple[dt.datetime, str] | None
    ) -> list[asyncpg.Record]:
        where, args = filters.where(tenant)
        if after is not None:
            args += [after[0], after[1]]
            where += f" AND (occurred_at, id) < (${len(args) - 1}, ${len(args)})"
        args.append(limit)
        rows: list[asyncpg.Record] = await self.pool.fetch(
            f"SELECT {_COLUMNS} FROM llmops.operations WHERE {where}"  # noqa: S608 (built here)
            f" ORDER BY occurred_at DESC, id DESC LIMIT ${len(args)}",
            *args,
        )
        return rows

    async def metrics(
        self, tenant: str, filters: Filters
    ) -> tuple[dict[GroupKey, asyncpg.Record], dict[GroupKey, Histograms]]:
        """Totals and histograms overall, per operation type and per model (aggregates.py)."""
        equal = filters.equalities()
        spans = (
            Spans.of(filters.since, filters.until)
            if ROLLED_UP.issuperset(equal)
            else Spans(((filters.since, filters.until),))
        )
        async with (
            self.pool.acquire() as conn,
            conn.transaction(readonly=True, isolation="repeatable_read"),
        ):
            # Raw ranges are bucketed and grouped in memory: room for a user's or agent's
            # month without spilling to disk.
            await conn.execute(f"SET LOCAL work_mem = '{AGGREGATE_WORK_MEM}'")
            return await aggregates.metrics(conn, Query(spans, tenant, equal))

    async def cost_analysis(
        self, tenant: str, since: dt.datetime, until: dt.datetime, bucket: str
    ) -> tuple[list[asyncpg.Record], list[asyncpg.Record]]:
        """Cost groups and the trend in `bucket`s (aggregates.py), from one snapshot."""
        trend_spans = Spans.of(since, until, days=bucket == "day")
        async with (
            self.pool.acquire() as conn,
            conn.transaction(readonly=True, isolation="repeatable_read"),
        ):
            groups = await aggregates.cost_groups(conn, Query(Spans.of(since, until), tenant))
            trend = await aggregates.cost_trend(
                conn, Query(trend_spans, tenant), since, until, bucket
            )
        return groups, trend

    async def set_budget(self, tenant: str, period: str, limit_usd: float) -> bool:
        """Set or (limit 0) remove a budget; returns whether one exists afterwards."""
        if limit_usd == 0:
            await self.pool.execute(
                "DELETE FROM llmops.budgets WHERE tenant = $1 AND period = $2", tenant, period
            )
            return False
        await self.pool.execute(
            "INSERT INTO llmops.budgets (tenant, period, limit_usd) VALUES ($1, $2, $3)"
            " ON CONFLICT (tenant, period) DO UPDATE"
            " SET limit_usd = excluded.limit_usd, updated_at = clock_timestamp()",
            tenant,
            period,
            limit_usd,
        )
        return True

    async def budgets(
        self, tenant: str, now: dt.datetime, periods: Sequence[str] = PERIODS
    ) -> list[asyncpg.Record]:
        """The tenant's budgets (of `periods`) with the spend of the period containing `now`."""
        rows: list[asyncpg.Record] = await self.pool.fetch(
            "SELECT b.period, b.limit_usd, p.start AS period_start,"
            " coalesce(s.spent_usd, 0) AS spent_usd"
            " FROM llmops.budgets b"
            " CROSS JOIN LATERAL (SELECT date_trunc(b.period, $2::timestamptz AT TIME ZONE 'UTC')"
            " AT TIME ZONE 'UTC' AS start) p"
            " LEFT JOIN llmops.spend s"
            " ON s.tenant = b.tenant AND s.period = b.period AND s.period_start = p.start"
            " WHERE b.tenant = $1 AND b.period = ANY($3::text[]) ORDER BY b.period",
            tenant,
            now,
            list(periods),
        )
        return rows


def _alert(r: asyncpg.Record) -> Alert:
    return Alert(
        r["tenant"],
        r["period"],
        r["period_start"],
        r["limit_usd"],
        r["spent_usd"],
        r["operation_id"],
    )
