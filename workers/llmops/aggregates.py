"""`metrics` and `cost_analysis` from the rollups, with raw rows only where rollups cannot serve.

A range [since, until) is cut into whole UTC days and whole hours, read from the day and hour
rows of the rollups (migrations/002_rollups.sql), and the partial hours at its ends, read from
`operations` itself. Counts, tokens, cost and latency sums are exact whatever the cut.
Percentiles come from log-spaced histogram buckets (the raw rows at the ends bucketed the same
way in SQL): a bucket [a, b) is reported as 2ab/(a+b),
which is within PERCENTILE_ERROR (4.8 %) of every value in it, and so is a percentile
interpolated between two such estimates. A latency under 0.01 ms counts as 0.
`metrics` filtered by user or agent reads raw rows only (the rollups do not split by them),
through the indexes on (tenant, user_id | agent_id, occurred_at), bucketed the same way.
"""

from __future__ import annotations

import datetime as dt
import math
import sys
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg

# Bucket i >= 1 holds [FLOOR_MS * RATIO^(i-1), FLOOR_MS * RATIO^i); bucket 0 holds [0, FLOOR_MS).
# The same constants are in llmops.latency_bucket (migrations/002_rollups.sql).
BUCKET_FLOOR_MS = 0.01
BUCKET_RATIO = 1.1
PERCENTILE_ERROR = (BUCKET_RATIO - 1) / (BUCKET_RATIO + 1)
HOUR = dt.timedelta(hours=1)
DAY = dt.timedelta(days=1)


def bucket_estimate(bucket: int) -> float:
    """The value reported for every operation in `bucket`: 2ab/(a+b) of its bounds a, b."""
    if bucket <= 0:
        return 0.0
    low = math.exp(math.log(BUCKET_FLOOR_MS) + (bucket - 1) * math.log(BUCKET_RATIO))
    return min(low * (2 * BUCKET_RATIO / (1 + BUCKET_RATIO)), sys.float_info.max)


def percentile(histogram: Sequence[tuple[int, int]], fraction: float) -> float:
    """percentile_cont over the bucket estimates of `histogram` ((bucket, count), ascending)."""
    total = sum(count for _, count in histogram)
    if total == 0:
        return 0.0
    position = fraction * (total - 1)
    low = math.floor(position)
    below = _value_at(histogram, low)
    above = _value_at(histogram, min(low + 1, total - 1))
    return below + (above - below) * (position - low)


def _value_at(histogram: Sequence[tuple[int, int]], rank: int) -> float:
    seen = 0
    for bucket, count in histogram:
        seen += count
        if rank < seen:
            return bucket_estimate(bucket)
    raise ValueError(f"rank {rank} is beyond the histogram")


def _floor(moment: dt.datetime, step: dt.timedelta) -> dt.datetime:
    base = moment.replace(minute=0, second=0, microsecond=0)
    return base.replace(hour=0) if step == DAY else base


def _ceil(moment: dt.datetime, step: dt.timedelta) -> dt.datetime:
    floor = _floor(moment, step)
    return floor if floor == moment else floor + step


@dataclass(frozen=True)
class Spans:
    """[since, until) as raw ranges of `operations` and (grain, start, end) ranges of rollups."""

    raw: tuple[tuple[dt.datetime, dt.datetime], ...]
    rolled: tuple[tuple[str, dt.datetime, dt.datetime], ...] = ()

    @classmethod
    def of(cls, since: dt.datetime, until: dt.datetime, *, days: bool = True) -> Spans:
        """Whole days (when `days`) and hours from rollups, the partial hours at the ends raw."""
        first, last = _ceil(since, HOUR), _floor(until, HOUR)
        if first >= last:
            return cls(((since, until),))
        raw = tuple((a, b) for a, b in ((since, first), (last, until)) if a < b)
        first_day, last_day = _ceil(first, DAY), _floor(last, DAY)
        if not days or first_day >= last_day:
            return cls(raw, (("hour", first, last),))
        hours = tuple(("hour", a, b) for a, b in ((first, first_day), (last_day, last)) if a < b)
        return cls(raw, (("day", first_day, last_day), *hours))


class Query:
    """The WHERE clauses of one statement over rollups (`rolled`) and raw rows (`raw`), with
    their parameters; `$1` is the tenant. `equal` filters apply to both."""

    def __init__(self, spans: Spans, tenant: str, equal: dict[str, str] | None = None) -> None:
        self.args: list[Any] = [tenant]
        self._equal = equal or {}
        self.rolled = self._where(spans.rolled, "start")
        self.raw = self._where([("", a, b) for a, b in spans.raw], "occurred_at")

    def bind(self, value: Any) -> str:
        self.args.append(value)
        return f"${len(self.args)}"

    def _where(self, ranges: Sequence[tuple[str, dt.datetime, dt.datetime]], column: str) -> str:
        if not ranges:
            return "false"
        parts = []
        for grain, start, end in ranges:
            part = f"{column} >= {self.bind(start)} AND {column} < {self.bind(end)}"
            parts.append(f"(grain = {self.bind(grain)} AND {part})" if grain else f"({part})")
        equal = "".join(f" AND {c} = {self.bind(v)}" for c, v in self._equal.items())
        return f"tenant = $1 AND ({' OR '.join(parts)}){equal}"


# -- metrics ---------------------------------------------------------------------------------

GroupKey = tuple[str, str]  # ("total", "") | ("operation_type", key) | ("model", key)


@dataclass
class Histograms:
    latency: list[tuple[int, int]] = field(default_factory=list)
    ttft: list[tuple[int, int]] = field(default_factory=list)


def _group(r: asyncpg.Record) -> GroupKey:
    if r["g_type"] and r["g_model"]:
        return ("total", "")
    if not r["g_type"]:
        return ("operation_type", r["operation_type"])
    return ("model", r["model"])


# One statement, so the raw rows are read once: grouped first by model, type and both buckets,
# then added to the totals and to the histograms of the rollups. Totals rows have no bucket.
_METRICS = """
WITH raw AS MATERIALIZED (
    SELECT model, operation_type, llmops.latency_bucket(latency_ms) AS latency_bucket,
        llmops.latency_bucket(ttft_ms) AS ttft_bucket, count(*) AS operations,
        count(*) FILTER (WHERE status = 'error') AS errors,
        count(*) FILTER (WHERE cache_hit) AS cache_hits, sum(prompt_tokens) AS prompt_tokens,
        sum(completion_tokens) AS completion_tokens, sum(total_tokens) AS total_tokens,
        sum(cost_usd::numeric) AS cost_usd, sum(latency_ms::numeric) AS latency_ms
    FROM llmops.operations WHERE {raw}
    GROUP BY 1, 2, 3, 4
), totals AS (
    SELECT model, operation_type, operations, errors, cache_hits, prompt_tokens,
        completion_tokens, total_tokens, cost_usd, latency_ms
    FROM llmops.rollups WHERE {rolled}
    UNION ALL
    SELECT model, operation_type, operations, errors, cache_hits, prompt_tokens,
        completion_tokens, total_tokens, cost_usd, latency_ms
    FROM raw
), buckets AS (
    SELECT model, operation_type, bucket, latencies, ttfts
    FROM llmops.rollup_latency WHERE {rolled}
    UNION ALL
    SELECT model, operation_type, latency_bucket, operations, 0 FROM raw
    UNION ALL
    SELECT model, operation_type, ttft_bucket, 0, operations FROM raw
    WHERE ttft_bucket IS NOT NULL
)
SELECT grouping(operation_type) AS g_type, grouping(model) AS g_model, operation_type, model,
    NULL::integer AS bucket, sum(operations)::bigint AS operations,
    sum(errors)::bigint AS errors, sum(cache_hits)::bigint AS cache_hits,
    sum(prompt_tokens)::bigint AS prompt_tokens,
    sum(completion_tokens)::bigint AS completion_tokens,
    sum(total_tokens)::bigint AS total_tokens, sum(cost_usd)::float8 AS cost_usd,
    (sum(latency_ms) / sum(operations))::float8 AS latency_avg,
    NULL::bigint AS latencies, NULL::bigint AS ttfts
FROM totals GROUP BY GROUPING SETS ((), (operation_type), (model))
HAVING sum(operations) > 0
UNION ALL
SELECT grouping(operation_type), grouping(model), operation_type, model, bucket,
    NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, sum(latencies)::bigint, sum(ttfts)::bigint
FROM buckets GROUP BY GROUPING SETS ((bucket), (operation_type, bucket), (model, bucket))
HAVING sum(latencies) > 0 OR sum(ttfts) > 0
ORDER BY bucket NULLS FIRST
"""


async def metrics(
    conn: asyncpg.Connection, query: Query
) -> tuple[dict[GroupKey, asyncpg.Record], dict[GroupKey, Histograms]]:
    """Totals and histograms of the whole set, of each operation type and of each model."""
    sql = _METRICS.format(rolled=query.rolled, raw=query.raw)
    totals: dict[GroupKey, asyncpg.Record] = {}
    histograms: dict[GroupKey, Histograms] = defaultdict(Histograms)
    for r in await conn.fetch(sql, *query.args):
        if r["bucket"] is None:
            totals[_group(r)] = r
            continue
        found = histograms[_group(r)]
        if r["latencies"]:
            found.latency.append((r["bucket"], r["latencies"]))
        if r["ttfts"]:
            found.ttft.append((r["bucket"], r["ttfts"]))
    return totals, histograms


# -- cost analysis ---------------------------------------------------------------------------

_COST_GROUPS = """
WITH totals AS (
    SELECT model, operation_type, operations, total_tokens, cost_usd
    FROM llmops.rollups WHERE {rolled}
    UNION ALL
    SELECT model, operation_type, 1, total_tokens, cost_usd::numeric
    FROM llmops.operations WHERE {raw}
), callers AS (
    SELECT dimension, key, operations, total_tokens, cost_usd
    FROM llmops.rollup_callers WHERE {rolled}
    UNION ALL
    SELECT c.dimension, c.key, 1, total_tokens, cost_usd::numeric
    FROM llmops.operations CROSS JOIN LATERAL (VALUES ('user_id', user_id),
        ('agent_id', agent_id)) AS c(dimension, key)
    WHERE {raw}
)
SELECT CASE WHEN grouping(model) = 0 THEN 'model'
        WHEN grouping(operation_type) = 0 THEN 'operation_type' ELSE '' END AS dimension,
    coalesce(model, operation_type, '') AS key, sum(cost_usd)::float8 AS cost_usd,
    sum(operations)::bigint AS operations, sum(total_tokens)::bigint AS total_tokens
FROM totals GROUP BY GROUPING SETS ((), (model), (operation_type)) HAVING sum(operations) > 0
UNION ALL
SELECT dimension, key, sum(cost_usd)::float8, sum(operations)::bigint, sum(total_tokens)::bigint
FROM callers GROUP BY dimension, key HAVING sum(operations) > 0
ORDER BY dimension, cost_usd DESC, key
"""

_COST_TREND = """
WITH src AS (
    SELECT start AS at, operations, cost_usd FROM llmops.rollups WHERE {rolled}
    UNION ALL
    SELECT occurred_at, 1, cost_usd::numeric FROM llmops.operations WHERE {raw}
), agg AS (
    SELECT date_trunc({b}, at AT TIME ZONE 'UTC') AS start, sum(cost_usd)::float8 AS cost_usd,
        sum(operations)::bigint AS operations
    FROM src GROUP BY 1
)
SELECT g.start AT TIME ZONE 'UTC' AS start, coalesce(agg.cost_usd, 0) AS cost_usd,
    coalesce(agg.operations, 0) AS operations
FROM generate_series(date_trunc({b}, {since}::timestamptz AT TIME ZONE 'UTC'),
    {until}::timestamptz AT TIME ZONE 'UTC' - interval '1 microsecond',
    ('1 ' || {b})::interval) AS g(start)
LEFT JOIN agg ON agg.start = g.start ORDER BY g.start
"""


async def cost_groups(conn: asyncpg.Connection, query: Query) -> list[asyncpg.Record]:
    """(dimension, key, cost_usd, operations, total_tokens) by model, operation_type, user_id
    and agent_id, each by cost highest first, and the total (dimension "")."""
    sql = _COST_GROUPS.format(rolled=query.rolled, raw=query.raw)
    rows: list[asyncpg.Record] = await conn.fetch(sql, *query.args)
    return rows


async def cost_trend(
    conn: asyncpg.Connection, query: Query, since: dt.datetime, until: dt.datetime, bucket: str
) -> list[asyncpg.Record]:
    """Every `bucket` (hour, day; UTC) of [since, until) with its cost, oldest first."""
    rolled, raw = query.rolled, query.raw
    b, start, end = query.bind(bucket), query.bind(since), query.bind(until)
    sql = _COST_TREND.format(rolled=rolled, raw=raw, b=b, since=start, until=end)
    rows: list[asyncpg.Record] = await conn.fetch(sql, *query.args)
    return rows
