"""PostgreSQL storage of the LLMOps component (schema `llmops`).

Every statement takes the tenant as a parameter and filters by it; aggregates (sums, rates,
percentiles, buckets) are computed by PostgreSQL. Filters are added to the SQL only when given,
each as a bound parameter, so the planner sees the plain conditions the indexes serve.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

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


_COLUMNS = (
    "id, occurred_at, operation_type, model, provider, prompt_tokens, completion_tokens,"
    " total_tokens, cost_usd, latency_ms, ttft_ms, status, error_class, error_message, user_id,"
    " agent_id, cache_hit, metadata"
)

_STATS = (
    "count(*) AS operations,"
    " count(*) FILTER (WHERE status = 'success') AS successes,"
    " count(*) FILTER (WHERE status = 'error') AS errors,"
    " coalesce(sum(prompt_tokens), 0)::bigint AS prompt_tokens,"
    " coalesce(sum(completion_tokens), 0)::bigint AS completion_tokens,"
    " coalesce(sum(total_tokens), 0)::bigint AS total_tokens,"
    " coalesce(sum(cost_usd), 0) AS cost_usd,"
    " coalesce(percentile_cont(0.5) WITHIN GROUP (ORDER BY latency_ms), 0) AS latency_p50,"
    " coalesce(percentile_cont(0.95) WITHIN GROUP (ORDER BY latency_ms), 0) AS latency_p95,"
    " coalesce(percentile_cont(0.99) WITHIN GROUP (ORDER BY latency_ms), 0) AS latency_p99,"
    " coalesce(avg(latency_ms), 0) AS latency_avg,"
    " coalesce(percentile_cont(0.5) WITHIN GROUP (ORDER BY ttft_ms), 0) AS ttft_p50,"
    " coalesce(percentile_cont(0.95) WITHIN GROUP (ORDER BY ttft_ms), 0) AS ttft_p95,"
    " count(*) FILTER (WHERE cache_hit) AS cache_hits"
)


class LlmopsStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def insert(self, tenant: str, op: Operation, *, replayed: bool = False) -> bool:
        """Store the operation unless its id is stored already; returns whether it was new.
        The spend it adds and the budgets it crosses are written in the same transaction; a
        `replayed` operation (rebuild) records a crossed budget as already published."""
        async with self.pool.acquire() as conn, conn.transaction():
            created = await conn.fetchval(
                f"INSERT INTO llmops.operations (tenant, {_COLUMNS})"  # noqa: S608 (constant)
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15,"
                " $16, $17, $18, $19::jsonb)"
                " ON CONFLICT (tenant, id) DO NOTHING RETURNING true",
                tenant,
                op.id,
                op.occurred_at,
                op.operation_type,
                op.model,
                op.provider,
                op.prompt_tokens,
                op.completion_tokens,
                op.total_tokens,
                op.cost_usd,
                op.latency_ms,
                op.ttft_ms,
                op.status,
                op.error_class,
                op.error_message,
                op.user_id,
                op.agent_id,
                op.cache_hit,
                json.dumps(op.metadata, separators=(",", ":")),
            )
            if not created or op.cost_usd <= 0:
                return bool(created)
            # Day then month, in every transaction: concurrent inserts lock them in one order.
            spent = await conn.fetch(
                "INSERT INTO llmops.spend AS s (tenant, period, period_start, spent_usd)"
                " SELECT $1, p, date_trunc(p, $2::timestamptz AT TIME ZONE 'UTC')"
                " AT TIME ZONE 'UTC', $3"
                " FROM unnest($4::text[]) WITH ORDINALITY AS u(p, n) ORDER BY n"
                " ON CONFLICT (tenant, period, period_start)"
                " DO UPDATE SET spent_usd = s.spent_usd + excluded.spent_usd"
                " RETURNING period, period_start, spent_usd",
                tenant,
                op.occurred_at,
                op.cost_usd,
                list(PERIODS),
            )
            await conn.execute(
                "INSERT INTO llmops.budget_alerts"
                " (tenant, period, period_start, limit_usd, spent_usd, operation_id, published)"
                " SELECT $1, s.period, s.period_start, b.limit_usd, s.spent_usd, $2, $6"
                " FROM unnest($3::text[], $4::timestamptz[], $5::float8[])"
                " AS s(period, period_start, spent_usd)"
                " JOIN llmops.budgets b ON b.tenant = $1 AND b.period = s.period"
                " WHERE s.spent_usd > b.limit_usd"
                " ON CONFLICT (tenant, period, period_start) DO NOTHING",
                tenant,
                op.id,
                [r["period"] for r in spent],
                [r["period_start"] for r in spent],
                [r["spent_usd"] for r in spent],
                replayed,
            )
        return True

    async def unpublished_alerts(self, tenant: str) -> list[Alert]:
        rows = await self.pool.fetch(
            "SELECT period, period_start, limit_usd, spent_usd, operation_id"
            " FROM llmops.budget_alerts WHERE tenant = $1 AND NOT published"
            " ORDER BY period_start, period",
            tenant,
        )
        return [_alert(r) for r in rows]

    async def mark_published(self, tenant: str, alert: Alert) -> None:
        await self.pool.execute(
            "UPDATE llmops.budget_alerts SET published = true"
            " WHERE tenant = $1 AND period = $2 AND period_start = $3",
            tenant,
            alert.period,
            alert.period_start,
        )

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

    async def metrics(self, tenant: str, filters: Filters) -> list[asyncpg.Record]:
        """One row per grouping: overall (both keys NULL), per operation type, per model."""
        where, args = filters.where(tenant)
        async with self.pool.acquire() as conn, conn.transaction(readonly=True):
            # The percentiles sort every row of each grouping set; more memory than the default
            # 4MB lets a large range sort in memory instead of spilling to disk.
            await conn.execute(f"SET LOCAL work_mem = '{AGGREGATE_WORK_MEM}'")
            rows: list[asyncpg.Record] = await conn.fetch(
                f"SELECT grouping(operation_type) AS g_type, grouping(model) AS g_model,"  # noqa: S608
                f" operation_type, model, {_STATS}"
                f" FROM llmops.operations WHERE {where}"
                " GROUP BY GROUPING SETS ((), (operation_type), (model))"
                " ORDER BY operation_type NULLS FIRST, model NULLS FIRST",
                *args,
            )
        return rows

    async def cost_groups(self, tenant: str, filters: Filters) -> list[asyncpg.Record]:
        """Cost per model, operation type, user and agent, and overall (every key NULL)."""
        where, args = filters.where(tenant)
        rows: list[asyncpg.Record] = await self.pool.fetch(
            "SELECT grouping(model, operation_type, user_id, agent_id) AS g,"  # noqa: S608
            " model, operation_type, user_id, agent_id,"
            " coalesce(sum(cost_usd), 0) AS cost_usd, count(*) AS operations,"
            " coalesce(sum(total_tokens), 0)::bigint AS total_tokens"
            f" FROM llmops.operations WHERE {where}"
            " GROUP BY GROUPING SETS ((), (model), (operation_type), (user_id), (agent_id))"
            " ORDER BY cost_usd DESC, model, operation_type, user_id, agent_id",
            *args,
        )
        return rows

    async def cost_trend(self, tenant: str, filters: Filters, bucket: str) -> list[asyncpg.Record]:
        """Every `bucket` (hour, day; UTC) of the range with its cost, oldest first."""
        where, args = filters.where(tenant)
        args.append(bucket)
        b = f"${len(args)}"
        rows: list[asyncpg.Record] = await self.pool.fetch(
            f"WITH agg AS (SELECT date_trunc({b}, occurred_at AT TIME ZONE 'UTC') AS start,"  # noqa: S608
            " sum(cost_usd) AS cost_usd, count(*) AS operations"
            f" FROM llmops.operations WHERE {where} GROUP BY 1)"
            " SELECT g.start AT TIME ZONE 'UTC' AS start, coalesce(agg.cost_usd, 0) AS cost_usd,"
            " coalesce(agg.operations, 0) AS operations"
            f" FROM generate_series(date_trunc({b}, $2::timestamptz AT TIME ZONE 'UTC'),"
            " $3::timestamptz AT TIME ZONE 'UTC' - interval '1 microsecond',"
            f" ('1 ' || {b})::interval) AS g(start)"
            " LEFT JOIN agg ON agg.start = g.start ORDER BY g.start",
            *args,
        )
        return rows

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
    return Alert(r["period"], r["period_start"], r["limit_usd"], r["spent_usd"], r["operation_id"])
