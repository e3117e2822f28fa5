"""The LLMOps component end to end: real worker, real NATS + JetStream, real PostgreSQL."""

from __future__ import annotations

import asyncio
import datetime as dt
import random
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from nats.aio.client import Client as NATS

from aifleet.embedded import EmbeddedNats, EmbeddedPostgres
from schemas.v1.common_pb2 import PageRequest
from schemas.v1.llmops_pb2 import (
    CostAnalysisRequest,
    CostAnalysisResponse,
    GetBudgetRequest,
    GetBudgetResponse,
    ListOperationsRequest,
    ListOperationsResponse,
    LlmOperationEvent,
    LlmopsBudgetExceededEvent,
    LogOperationResponse,
    MetricsRequest,
    MetricsResponse,
    SetBudgetRequest,
    SetBudgetResponse,
)
from subjects import HEADER_DLQ_ERROR, HEADER_DLQ_MSG_ID, STREAM_EVENTS, event_subject
from tests.support.fleet import running_worker
from tests.support.llmops import (
    LlmopsDb,
    consumer_idle,
    dead_letters,
    operation,
    percentile,
    publish_operation,
    timestamp,
)
from tests.support.polling import eventually
from workers.llmops import service as llmops
from workers.llmops.aggregates import PERCENTILE_ERROR
from workers.runtime.client import Client
from workers.runtime.worker import Worker

HOUR = dt.timedelta(hours=1)
WITHIN = PERCENTILE_ERROR + 1e-9  # the documented bound, and float rounding


@pytest.fixture(scope="module")
async def worker(nats_server: EmbeddedNats, postgres: EmbeddedPostgres) -> AsyncIterator[Worker]:
    async with running_worker([llmops.component], nats_server.url, database_url=postgres.dsn) as w:
        yield w


@pytest.fixture(scope="module")
async def db(postgres: EmbeddedPostgres) -> AsyncIterator[LlmopsDb]:
    async with LlmopsDb.connect(postgres.dsn) as found:
        yield found


@pytest.fixture
def tenant() -> str:
    return "l" + uuid.uuid4().hex[:16]


@pytest.fixture
def client(nc: NATS, worker: Worker) -> Client:
    return Client(nc, timeout=10.0)


async def log(client: Client, tenant: str, event: LlmOperationEvent) -> LogOperationResponse:
    return await client.call(tenant, "llmops", "log_operation", event, LogOperationResponse)


async def list_ops(client: Client, tenant: str, **fields: Any) -> ListOperationsResponse:
    return await client.call(
        tenant, "llmops", "list_operations", ListOperationsRequest(**fields), ListOperationsResponse
    )


async def test_logged_operation_is_listed_with_every_field(client: Client, tenant: str) -> None:
    """An operation logged directly comes back from list_operations with what was logged."""
    moment = dt.datetime(2026, 11, 1, 12, 0, 0, 123456, tzinfo=dt.UTC)
    sent = operation(
        id="op-1",
        occurred_at=moment,
        model="claude-3-haiku",
        provider="anthropic",
        prompt_tokens=120,
        completion_tokens=30,
        cost_usd=0.0125,
        latency_ms=850.5,
        time_to_first_token_ms=120.25,
        status="error",
        error_class="RateLimitError",
        error_message="slow down",
        user_id="u1",
        agent_id="a1",
        cache_hit=True,
    )
    sent.metadata.update({"route": "primary", "attempt": 2})
    reply = await log(client, tenant, sent)
    assert (reply.id, reply.created) == ("op-1", True)
    (got,) = (await list_ops(client, tenant)).operations
    expected = LlmOperationEvent()
    expected.CopyFrom(sent)
    expected.total_tokens = 150
    assert got == expected


async def test_logging_the_same_id_twice_stores_one_operation(
    client: Client, tenant: str, db: LlmopsDb
) -> None:
    """A retried log_operation with the same id is stored once and says it was not created."""
    first = await log(client, tenant, operation(id="same"))
    again = await log(client, tenant, operation(id="same", cost_usd=5.0))
    assert (first.created, again.created) == (True, False)
    assert (await db.row_counts(tenant))["operations"] == 1
    (got,) = (await list_ops(client, tenant)).operations
    assert got.cost_usd == pytest.approx(0.001)


async def test_log_without_id_gets_a_new_id_and_the_callers_user(
    client: Client, tenant: str
) -> None:
    """Without an id each call records a new operation; user_id defaults to X-User-ID."""
    a = await client.call(
        tenant,
        "llmops",
        "log_operation",
        operation(),
        LogOperationResponse,
        headers={"X-User-ID": "alice"},
    )
    b = await log(client, tenant, operation())
    assert a.id
    assert b.id
    assert a.id != b.id
    listed = (await list_ops(client, tenant)).operations
    assert {o.id: o.user_id for o in listed} == {a.id: "alice", b.id: ""}


async def test_list_filters_by_each_field_and_time_range(client: Client, tenant: str) -> None:
    """Each filter of list_operations keeps exactly the matching operations."""
    base = dt.datetime(2026, 10, 1, tzinfo=dt.UTC)
    combos = [
        ("a1", "u1", "m1", "chat", "success"),
        ("a1", "u2", "m2", "embedding", "error"),
        ("a2", "u1", "m2", "chat", "error"),
        ("a2", "u2", "m1", "completion", "success"),
    ]
    for i, (agent, user, model, kind, status) in enumerate(combos):
        await log(
            client,
            tenant,
            operation(
                id=f"op{i}",
                agent_id=agent,
                user_id=user,
                model=model,
                operation_type=kind,
                status=status,
                occurred_at=base + i * HOUR,
            ),
        )

    async def ids(**fields: Any) -> list[str]:
        return [o.id for o in (await list_ops(client, tenant, **fields)).operations]

    assert await ids() == ["op3", "op2", "op1", "op0"]
    assert await ids(agent_id="a1") == ["op1", "op0"]
    assert await ids(user_id="u1") == ["op2", "op0"]
    assert await ids(model="m2") == ["op2", "op1"]
    assert await ids(operation_type="chat") == ["op2", "op0"]
    assert await ids(status="error") == ["op2", "op1"]
    assert await ids(agent_id="a2", status="error") == ["op2"]
    assert await ids(since=timestamp(base + HOUR), until=timestamp(base + 3 * HOUR)) == [
        "op2",
        "op1",
    ]
    assert await ids(model="none") == []


async def test_list_pages_newest_first_without_gaps_or_repeats(client: Client, tenant: str) -> None:
    """Keyset paging walks every operation once, newest first, also across equal times."""
    base = dt.datetime(2026, 9, 1, tzinfo=dt.UTC)
    for i in range(23):
        # Pairs share a time: the id breaks the tie.
        await log(client, tenant, operation(id=f"op{i:02d}", occurred_at=base + (i // 2) * HOUR))
    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        page = await list_ops(client, tenant, page=PageRequest(page_size=5, page_token=token))
        seen += [o.id for o in page.operations]
        pages += 1
        token = page.page.next_page_token
        if not token:
            break
    expected = sorted((f"op{i:02d}" for i in range(23)), key=lambda s: (int(s[2:]) // 2, s))
    assert seen == list(reversed(expected))
    assert pages == 5


async def test_metrics_match_numbers_computed_independently(client: Client, tenant: str) -> None:
    """Totals, rates, tokens, cost and percentiles equal what the test computes itself."""
    rng = random.Random(7)
    base = dt.datetime.now(dt.UTC) - dt.timedelta(hours=2)
    sent = []
    for i in range(120):
        event = operation(
            id=f"m{i}",
            model=rng.choice(["m1", "m2", "m3"]),
            operation_type=rng.choice(["chat", "embedding"]),
            prompt_tokens=rng.randint(0, 500),
            completion_tokens=rng.randint(0, 200),
            cost_usd=round(rng.uniform(0, 0.05), 6),
            latency_ms=round(rng.uniform(5, 3000), 3),
            status="error" if rng.random() < 0.2 else "success",
            cache_hit=rng.random() < 0.3,
            occurred_at=base + dt.timedelta(seconds=i),
            **({"time_to_first_token_ms": rng.uniform(1, 400)} if i % 3 else {}),
        )
        sent.append(event)
        await log(client, tenant, event)
    reply = await client.call(tenant, "llmops", "metrics", MetricsRequest(), MetricsResponse)

    def check(stats: Any, events: list[LlmOperationEvent]) -> None:
        n = len(events)
        errors = sum(e.status == "error" for e in events)
        latencies = [e.latency_ms for e in events]
        ttfts = [e.time_to_first_token_ms for e in events if e.HasField("time_to_first_token_ms")]
        assert stats.operations == n
        assert (stats.successes, stats.errors) == (n - errors, errors)
        assert stats.error_rate == pytest.approx(errors / n)
        assert stats.success_rate == pytest.approx((n - errors) / n)
        assert stats.prompt_tokens == sum(e.prompt_tokens for e in events)
        assert stats.completion_tokens == sum(e.completion_tokens for e in events)
        assert stats.total_tokens == sum(e.prompt_tokens + e.completion_tokens for e in events)
        assert stats.cost_usd == pytest.approx(sum(e.cost_usd for e in events))
        assert stats.cache_hits == sum(e.cache_hit for e in events)
        assert stats.latency_avg_ms == pytest.approx(sum(latencies) / n)
        # Percentiles come from histogram buckets: within the documented relative error.
        for fraction, value in (
            (0.5, stats.latency_p50_ms),
            (0.95, stats.latency_p95_ms),
            (0.99, stats.latency_p99_ms),
        ):
            assert value == pytest.approx(percentile(latencies, fraction), rel=WITHIN)
        for fraction, value in (
            (0.5, stats.time_to_first_token_p50_ms),
            (0.95, stats.time_to_first_token_p95_ms),
        ):
            assert value == pytest.approx(percentile(ttfts, fraction), rel=WITHIN)

    check(reply.total, sent)
    assert [g.key for g in reply.by_model] == ["m1", "m2", "m3"]
    for group in reply.by_model:
        check(group.stats, [e for e in sent if e.model == group.key])
    assert [g.key for g in reply.by_operation_type] == ["chat", "embedding"]
    for group in reply.by_operation_type:
        check(group.stats, [e for e in sent if e.operation_type == group.key])
    only = await client.call(
        tenant, "llmops", "metrics", MetricsRequest(model="m2"), MetricsResponse
    )
    check(only.total, [e for e in sent if e.model == "m2"])


async def test_metrics_of_an_empty_range_are_zero(client: Client, tenant: str) -> None:
    """Metrics over a range without operations report zeros and no groups."""
    reply = await client.call(tenant, "llmops", "metrics", MetricsRequest(), MetricsResponse)
    assert reply.total.operations == 0
    assert reply.total.latency_p99_ms == 0
    assert list(reply.by_model) == []


async def test_cost_analysis_groups_and_fills_every_bucket(client: Client, tenant: str) -> None:
    """Cost per model, type, user and agent, and an hourly trend with empty hours as zero."""
    base = dt.datetime(2026, 8, 3, 10, 0, tzinfo=dt.UTC)
    rows = [
        (0, "m1", "chat", "u1", "a1", 0.5),
        (0, "m2", "chat", "u2", "", 0.25),
        (2, "m1", "embedding", "u1", "a2", 1.0),
        (3, "m2", "chat", "", "a1", 2.0),
    ]
    for i, (hour, model, kind, user, agent, cost) in enumerate(rows):
        await log(
            client,
            tenant,
            operation(
                id=f"c{i}",
                model=model,
                operation_type=kind,
                user_id=user,
                agent_id=agent,
                cost_usd=cost,
                occurred_at=base + hour * HOUR + dt.timedelta(minutes=30),
            ),
        )
    reply = await client.call(
        tenant,
        "llmops",
        "cost_analysis",
        CostAnalysisRequest(since=timestamp(base), until=timestamp(base + 5 * HOUR), bucket="hour"),
        CostAnalysisResponse,
    )
    assert reply.total_cost_usd == pytest.approx(3.75)
    assert [(g.key, g.cost_usd, g.operations) for g in reply.by_model] == [
        ("m2", 2.25, 2),
        ("m1", 1.5, 2),
    ]
    assert [(g.key, g.cost_usd) for g in reply.by_operation_type] == [
        ("chat", 2.75),
        ("embedding", 1.0),
    ]
    assert [(g.key, g.cost_usd) for g in reply.by_user] == [("", 2.0), ("u1", 1.5), ("u2", 0.25)]
    assert [(g.key, g.cost_usd) for g in reply.by_agent] == [("a1", 2.5), ("a2", 1.0), ("", 0.25)]
    trend = [(b.start.ToDatetime(tzinfo=dt.UTC), b.cost_usd, b.operations) for b in reply.trend]
    assert trend == [
        (base, 0.75, 2),
        (base + HOUR, 0.0, 0),
        (base + 2 * HOUR, 1.0, 1),
        (base + 3 * HOUR, 2.0, 1),
        (base + 4 * HOUR, 0.0, 0),
    ]
    daily = await client.call(
        tenant,
        "llmops",
        "cost_analysis",
        CostAnalysisRequest(since=timestamp(base - 24 * HOUR), until=timestamp(base + 5 * HOUR)),
        CostAnalysisResponse,
    )
    assert [(b.start.ToDatetime(tzinfo=dt.UTC), b.cost_usd) for b in daily.trend] == [
        (base.replace(hour=0) - 24 * HOUR, 0.0),
        (base.replace(hour=0), 3.75),
    ]


async def budget_events(nc: NATS, tenant: str) -> list[LlmopsBudgetExceededEvent]:
    js = nc.jetstream()
    subject = event_subject(tenant, "llmops", "budget_exceeded")
    info = await js.stream_info(STREAM_EVENTS, subjects_filter=subject)
    count = (info.state.subjects or {}).get(subject, 0)
    if not count:
        return []
    sub = await js.subscribe(subject, ordered_consumer=True)
    try:
        msgs = [await sub.next_msg(timeout=2.0) for _ in range(count)]
    finally:
        await sub.unsubscribe()
    return [LlmopsBudgetExceededEvent.FromString(m.data) for m in msgs]


async def test_budget_alert_is_published_once_per_period(
    client: Client, nc: NATS, tenant: str, db: LlmopsDb
) -> None:
    """Crossing a daily budget publishes budget_exceeded once; more spend that day adds none;
    the next day over the budget again publishes a second one."""
    reply = await client.call(
        tenant,
        "llmops",
        "set_budget",
        SetBudgetRequest(period="day", limit_usd=1.0),
        SetBudgetResponse,
    )
    assert (reply.budget.period, reply.budget.limit_usd) == ("day", 1.0)
    now = dt.datetime.now(dt.UTC)
    await log(client, tenant, operation(id="b1", cost_usd=0.6, occurred_at=now))
    assert await budget_events(nc, tenant) == []
    await asyncio.gather(
        *(
            log(client, tenant, operation(id=f"b{i}", cost_usd=0.6, occurred_at=now))
            for i in range(2, 6)
        )
    )
    (event,) = await budget_events(nc, tenant)
    assert event.period == "day"
    assert event.limit_usd == 1.0
    assert event.spent_usd > 1.0
    assert event.period_start.ToDatetime(tzinfo=dt.UTC) == now.replace(
        hour=0, minute=0, second=0, microsecond=0
    )
    got = await client.call(tenant, "llmops", "get_budget", GetBudgetRequest(), GetBudgetResponse)
    (budget,) = got.budgets
    assert budget.spent_usd == pytest.approx(3.0)
    assert budget.exceeded
    yesterday = now - 24 * HOUR
    await log(client, tenant, operation(id="y1", cost_usd=1.5, occurred_at=yesterday))
    events = await budget_events(nc, tenant)
    assert len(events) == 2
    assert (await db.row_counts(tenant))["budget_alerts"] == 2


async def test_removed_budget_is_no_longer_reported(client: Client, tenant: str) -> None:
    """set_budget with limit 0 removes the period's budget."""
    for limit in (5.0, 0.0):
        await client.call(
            tenant,
            "llmops",
            "set_budget",
            SetBudgetRequest(period="month", limit_usd=limit),
            SetBudgetResponse,
        )
    got = await client.call(tenant, "llmops", "get_budget", GetBudgetRequest(), GetBudgetResponse)
    assert list(got.budgets) == []


async def test_published_events_are_stored_once_each(
    client: Client, nc: NATS, tenant: str, db: LlmopsDb
) -> None:
    """Gateway events are consumed into the table; a duplicated Nats-Msg-Id is one row."""
    js = nc.jetstream()
    for i in range(10):
        await publish_operation(js, tenant, operation(cost_usd=0.01), msg_id=f"evt-{i}")
    for i in range(5):  # re-published by a retrying gateway
        await publish_operation(js, tenant, operation(cost_usd=0.01), msg_id=f"evt-{i}")

    async def stored() -> bool:
        return len(await db.ids(tenant)) == 10

    await eventually(stored, timeout=20, what="10 operations stored")
    await eventually(lambda: consumer_idle(js), timeout=20, what="consumer idle")
    assert await db.ids(tenant) == sorted(f"evt-{i}" for i in range(10))


async def test_malformed_events_go_to_the_dead_letters_and_store_nothing(
    client: Client, nc: NATS, tenant: str, db: LlmopsDb
) -> None:
    """Undecodable bodies, invalid operations and events of another type are dead-lettered
    with the reason; none is stored, and a valid event after them is."""
    js = nc.jetstream()
    await publish_operation(js, tenant, b"\xff\xff\xff not protobuf", msg_id="bad-bytes")
    await publish_operation(js, tenant, operation(model=""), msg_id="bad-model")
    await publish_operation(js, tenant, operation(cost_usd=-1.0), msg_id="bad-cost")
    await publish_operation(
        js, tenant, operation(), msg_id="bad-type", message_type="aifleet.v1.Something"
    )
    await publish_operation(js, tenant, operation(), msg_id="good")

    async def four() -> list[Any]:
        found = await dead_letters(js, tenant)
        return found if len(found) == 4 else []

    letters = await eventually(four, timeout=20, what="4 dead letters")
    assert sorted(m.headers[HEADER_DLQ_MSG_ID] for m in letters if m.headers) == [
        "bad-bytes",
        "bad-cost",
        "bad-model",
        "bad-type",
    ]
    assert all(m.headers and "400" in m.headers[HEADER_DLQ_ERROR] for m in letters)
    await eventually(lambda: consumer_idle(js), timeout=20, what="consumer idle")
    assert await db.ids(tenant) == ["good"]
