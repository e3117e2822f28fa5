"""Tenant isolation of every LLMOps query: one tenant never sees or changes another's data.

Tenant A has operations, a budget and a crossed alert; tenant B asks every query operation with
filters naming A's values and must see none of them.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from nats.aio.client import Client as NATS

from aifleet.embedded import EmbeddedNats, EmbeddedPostgres
from schemas.v1.llmops_pb2 import (
    CostAnalysisRequest,
    CostAnalysisResponse,
    GetBudgetRequest,
    GetBudgetResponse,
    ListOperationsRequest,
    ListOperationsResponse,
    LogOperationResponse,
    MetricsRequest,
    MetricsResponse,
    SetBudgetRequest,
    SetBudgetResponse,
)
from tests.support.fleet import running_worker
from tests.support.llmops import LlmopsDb, operation, publish_operation, timestamp
from tests.support.polling import eventually
from workers.llmops import service as llmops
from workers.runtime.client import Client
from workers.runtime.worker import Worker

DAY = dt.timedelta(days=1)


@pytest.fixture(scope="module")
async def worker(nats_server: EmbeddedNats, postgres: EmbeddedPostgres) -> AsyncIterator[Worker]:
    async with running_worker([llmops.component], nats_server.url, database_url=postgres.dsn) as w:
        yield w


@pytest.fixture(scope="module")
async def db(postgres: EmbeddedPostgres) -> AsyncIterator[LlmopsDb]:
    async with LlmopsDb.connect(postgres.dsn) as found:
        yield found


@pytest.fixture
def client(nc: NATS, worker: Worker) -> Client:
    return Client(nc, timeout=10.0)


@pytest.fixture
async def tenants(client: Client) -> tuple[str, str]:
    """(a, b): a has operations (ids op0..op4, agent ag, user us, model md) and a day budget."""
    a, b = "ia" + uuid.uuid4().hex[:12], "ib" + uuid.uuid4().hex[:12]
    await client.call(
        a, "llmops", "set_budget", SetBudgetRequest(period="day", limit_usd=0.1), SetBudgetResponse
    )
    for i in range(5):
        await client.call(
            a,
            "llmops",
            "log_operation",
            operation(id=f"op{i}", agent_id="ag", user_id="us", model="md", cost_usd=0.05),
            LogOperationResponse,
        )
    return a, b


def wide() -> dict[str, Any]:
    now = dt.datetime.now(dt.UTC)
    return {"since": timestamp(now - 2 * DAY), "until": timestamp(now + DAY)}


async def test_list_shows_no_operation_of_another_tenant(
    client: Client, tenants: tuple[str, str]
) -> None:
    """B's listing, even filtered by A's agent, user and model, is empty; A sees its five."""
    a, b = tenants
    filters: list[dict[str, Any]] = [{}, {"agent_id": "ag"}, {"user_id": "us"}, {"model": "md"}]
    for fields in filters:
        got = await client.call(
            b, "llmops", "list_operations", ListOperationsRequest(**fields), ListOperationsResponse
        )
        assert list(got.operations) == []
    mine = await client.call(
        a, "llmops", "list_operations", ListOperationsRequest(), ListOperationsResponse
    )
    assert len(mine.operations) == 5


async def test_metrics_count_no_operation_of_another_tenant(
    client: Client, tenants: tuple[str, str]
) -> None:
    """B's metrics over the same range and filters count nothing of A's."""
    a, b = tenants
    filters: list[dict[str, Any]] = [{}, {"model": "md"}, {"agent_id": "ag"}]
    for fields in filters:
        got = await client.call(
            b, "llmops", "metrics", MetricsRequest(**fields, **wide()), MetricsResponse
        )
        assert got.total.operations == 0
        assert list(got.by_model) == []
    mine = await client.call(a, "llmops", "metrics", MetricsRequest(**wide()), MetricsResponse)
    assert mine.total.operations == 5


async def test_cost_analysis_costs_nothing_of_another_tenant(
    client: Client, tenants: tuple[str, str]
) -> None:
    """B's cost analysis has zero cost, no groups and only empty buckets."""
    a, b = tenants
    got = await client.call(
        b, "llmops", "cost_analysis", CostAnalysisRequest(**wide()), CostAnalysisResponse
    )
    assert got.total_cost_usd == 0
    assert list(got.by_model) == list(got.by_user) == list(got.by_agent) == []
    assert all(bucket.operations == 0 for bucket in got.trend)
    mine = await client.call(
        a, "llmops", "cost_analysis", CostAnalysisRequest(**wide()), CostAnalysisResponse
    )
    assert mine.total_cost_usd == pytest.approx(0.25)


async def test_budgets_are_per_tenant(client: Client, tenants: tuple[str, str]) -> None:
    """B sees no budget of A, and removing B's day budget leaves A's in place."""
    a, b = tenants
    got = await client.call(b, "llmops", "get_budget", GetBudgetRequest(), GetBudgetResponse)
    assert list(got.budgets) == []
    await client.call(
        b, "llmops", "set_budget", SetBudgetRequest(period="day", limit_usd=0), SetBudgetResponse
    )
    mine = await client.call(a, "llmops", "get_budget", GetBudgetRequest(), GetBudgetResponse)
    (budget,) = mine.budgets
    assert budget.spent_usd == pytest.approx(0.25)
    assert budget.exceeded


async def test_same_ids_in_two_tenants_are_two_operations(
    client: Client, nc: NATS, tenants: tuple[str, str], db: LlmopsDb
) -> None:
    """B logging A's ids, directly or as events, stores B's own rows and leaves A's alone."""
    a, b = tenants
    reply = await client.call(
        b, "llmops", "log_operation", operation(id="op0", cost_usd=9.0), LogOperationResponse
    )
    assert reply.created
    await publish_operation(nc.jetstream(), b, operation(), msg_id=f"iso-{b}")

    async def both() -> bool:
        return await db.ids(b) == sorted(["op0", f"iso-{b}"])

    await eventually(both, timeout=20, what="b's two operations")
    assert await db.ids(a) == [f"op{i}" for i in range(5)]


async def test_rollups_shared_by_model_and_hour_stay_per_tenant(
    client: Client, tenants: tuple[str, str], db: LlmopsDb
) -> None:
    """B's operations of A's model in A's hour add to B's rollups only: A's metrics and costs,
    read from rollups over whole days and hours, still count A's five operations."""
    a, b = tenants
    for i in range(7):
        await client.call(
            b,
            "llmops",
            "log_operation",
            operation(id=f"op{i}", agent_id="ag", user_id="us", model="md", cost_usd=1.0),
            LogOperationResponse,
        )
    for tenant, count, cost in ((a, 5, 0.25), (b, 7, 7.0)):
        metrics = await client.call(
            tenant, "llmops", "metrics", MetricsRequest(**wide()), MetricsResponse
        )
        assert [(g.key, g.stats.operations) for g in metrics.by_model] == [("md", count)]
        assert metrics.total.cost_usd == pytest.approx(cost)
        costs = await client.call(
            tenant, "llmops", "cost_analysis", CostAnalysisRequest(**wide()), CostAnalysisResponse
        )
        assert [(g.key, g.operations) for g in costs.by_agent] == [("ag", count)]
        assert sum(bucket.operations for bucket in costs.trend) == count
        hourly = [r for r in (await db.rollups(tenant))["rollups"] if r[0] == "hour"]
        assert sum(r[4] for r in hourly) == count
