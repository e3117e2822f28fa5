"""The LLMOps component over REST, through the real bridge, NATS, llmops worker and PostgreSQL:
POST/GET /api/v1/llmops/operations, GET /metrics and /cost-analysis, PUT/GET /budgets."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from aifleet.embedded import EmbeddedNats, EmbeddedPostgres
from tests.bridge.conftest import bridge_settings, serving
from tests.support.fleet import running_worker
from workers.llmops import service as llmops
from workers.llmops.aggregates import PERCENTILE_ERROR
from workers.runtime.worker import Worker

BASE = "/api/v1/llmops"


@pytest.fixture(scope="module")
async def llmops_worker(
    nats_server: EmbeddedNats, postgres: EmbeddedPostgres
) -> AsyncIterator[Worker]:
    async with running_worker([llmops.component], nats_server.url, database_url=postgres.dsn) as w:
        yield w


@pytest.fixture
async def rest(
    nats_server: EmbeddedNats, llmops_worker: Worker
) -> AsyncIterator[httpx.AsyncClient]:
    """A dev-mode bridge (auth off, loopback) in front of the llmops worker."""
    async with serving(bridge_settings(nats_server.url, components=["llmops"])) as client:
        yield client


def operation(
    i: int, model: str, agent: str, cost: float, status: str = "success"
) -> dict[str, Any]:
    return {
        "id": f"op{i}",
        "operation_type": "chat",
        "model": model,
        "agent_id": agent,
        "status": status,
        "cost_usd": cost,
        "latency_ms": 100 * (i + 1),
        "occurred_at": f"2026-11-02T1{i}:00:00Z",
    }


async def test_operations_metrics_and_costs_over_rest(rest: httpx.AsyncClient) -> None:
    """Operations posted over REST are listed with filters and paging, and measured and costed
    by GET /metrics and /cost-analysis with their query parameters."""
    h = {"X-Tenant-ID": "r" + uuid.uuid4().hex[:12]}
    sent = [
        operation(0, "m1", "a1", 0.5),
        operation(1, "m2", "a1", 1.0, "error"),
        operation(2, "m1", "a2", 2.0),
    ]
    for body in sent:
        reply = await rest.post(f"{BASE}/operations", json=body, headers=h)
        assert reply.status_code == 200, reply.text
        assert reply.json()["created"] is True

    listed = await rest.get(f"{BASE}/operations", params={"agent_id": "a1"}, headers=h)
    assert listed.status_code == 200, listed.text
    assert [o["id"] for o in listed.json()["operations"]] == ["op1", "op0"]
    first = await rest.get(f"{BASE}/operations", params={"page.page_size": 2}, headers=h)
    token = first.json()["page"]["next_page_token"]
    rest_page = await rest.get(
        f"{BASE}/operations", params={"page.page_size": 2, "page.page_token": token}, headers=h
    )
    assert [o["id"] for o in rest_page.json()["operations"]] == ["op0"]

    window = {"since": "2026-11-02T00:00:00Z", "until": "2026-11-03T00:00:00Z"}
    metrics = await rest.get(f"{BASE}/metrics", params={**window, "model": "m1"}, headers=h)
    assert metrics.status_code == 200, metrics.text
    total = metrics.json()["total"]
    assert total["operations"] == "2"  # uint64 is a string in proto3 JSON
    assert total["cost_usd"] == pytest.approx(2.5)
    assert total["latency_p50_ms"] == pytest.approx(200.0, rel=PERCENTILE_ERROR)

    costs = await rest.get(f"{BASE}/cost-analysis", params={**window, "bucket": "day"}, headers=h)
    assert costs.status_code == 200, costs.text
    body = costs.json()
    assert body["total_cost_usd"] == pytest.approx(3.5)
    assert [(g["key"], g["cost_usd"]) for g in body["by_agent"]] == [("a2", 2.0), ("a1", 1.5)]
    assert [b["cost_usd"] for b in body["trend"]] == [3.5]

    bad = await rest.get(f"{BASE}/cost-analysis", params={"bucket": "week"}, headers=h)
    assert bad.status_code == 400
    assert bad.json()["code"] == "INVALID_ARGUMENT"


async def test_budgets_over_rest(rest: httpx.AsyncClient) -> None:
    """PUT /budgets sets a period's threshold and GET /budgets lists it."""
    h = {"X-Tenant-ID": "r" + uuid.uuid4().hex[:12]}
    put = await rest.put(f"{BASE}/budgets", json={"period": "month", "limit_usd": 25}, headers=h)
    assert put.status_code == 200, put.text
    got = await rest.get(f"{BASE}/budgets", headers=h)
    (budget,) = got.json()["budgets"]
    assert (budget["period"], budget["limit_usd"]) == ("month", 25.0)
