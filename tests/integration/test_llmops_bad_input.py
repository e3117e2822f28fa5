"""Bad input to every LLMOps operation: the documented error, nothing written, still serving.

Errors are `aifleet.v1.Error` bodies with `Nats-Service-Error-Code` 400 (or 413 for oversized
metadata) and `retryable=false`. "Nothing written" is checked in PostgreSQL: no row of the
tenant in any llmops table, and no budget event of the tenant in AI_EVENTS.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import nats
import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from aifleet.embedded import EmbeddedNats, EmbeddedPostgres
from subjects import HEADER_CONTENT_TYPE, HEADER_ERROR_CODE, STREAM_EVENTS, event_subject
from tests.support.fleet import running_worker
from tests.support.llmops import LlmopsDb
from workers.llmops import service as llmops
from workers.runtime.worker import Worker

EMPTY = dict.fromkeys(LlmopsDb.tables, 0)
NOW = "2026-11-01T12:00:00Z"
GOOD_OP: dict[str, Any] = {
    "operationType": "chat",
    "model": "m",
    "status": "success",
    "costUsd": 0.5,
    "latencyMs": 10,
    "occurredAt": NOW,
}

# op -> (case, body, expected status)
CASES: list[tuple[str, str, dict[str, Any], int]] = [
    ("log_operation", "no_operation_type", {**GOOD_OP, "operationType": ""}, 400),
    ("log_operation", "bad_operation_type", {**GOOD_OP, "operationType": "Chat Completion"}, 400),
    ("log_operation", "no_model", {**GOOD_OP, "model": ""}, 400),
    ("log_operation", "long_model", {**GOOD_OP, "model": "m" * 257}, 400),
    ("log_operation", "control_in_model", {**GOOD_OP, "model": "m\u0000"}, 400),
    ("log_operation", "bad_status", {**GOOD_OP, "status": "ok"}, 400),
    ("log_operation", "no_status", {**GOOD_OP, "status": ""}, 400),
    ("log_operation", "negative_cost", {**GOOD_OP, "costUsd": -0.1}, 400),
    ("log_operation", "nan_cost", {**GOOD_OP, "costUsd": "NaN"}, 400),
    ("log_operation", "infinite_latency", {**GOOD_OP, "latencyMs": "Infinity"}, 400),
    ("log_operation", "negative_ttft", {**GOOD_OP, "timeToFirstTokenMs": -1}, 400),
    ("log_operation", "huge_tokens", {**GOOD_OP, "promptTokens": str(10**13)}, 400),
    ("log_operation", "no_time", {k: v for k, v in GOOD_OP.items() if k != "occurredAt"}, 400),
    ("log_operation", "ancient_time", {**GOOD_OP, "occurredAt": "1999-12-31T00:00:00Z"}, 400),
    ("log_operation", "future_time", {**GOOD_OP, "occurredAt": "2999-01-01T00:00:00Z"}, 400),
    ("log_operation", "long_id", {**GOOD_OP, "id": "x" * 129}, 400),
    ("log_operation", "nul_in_metadata", {**GOOD_OP, "metadata": {"k": "a\u0000b"}}, 400),
    ("log_operation", "big_metadata", {**GOOD_OP, "metadata": {"k": "x" * 17000}}, 413),
    ("log_operation", "unknown_field", {**GOOD_OP, "colour": "red"}, 400),
    ("list_operations", "bad_status", {"status": "maybe"}, 400),
    ("list_operations", "bad_token", {"page": {"pageToken": "!!!"}}, 400),
    ("list_operations", "token_not_position", {"page": {"pageToken": "e30"}}, 400),
    ("list_operations", "empty_range", {"since": NOW, "until": NOW}, 400),
    ("list_operations", "long_model", {"model": "m" * 257}, 400),
    ("metrics", "reversed_range", {"since": NOW, "until": "2026-10-01T00:00:00Z"}, 400),
    ("metrics", "control_in_agent", {"agentId": "a\nb"}, 400),
    ("metrics", "wrong_type", {"model": 5}, 400),
    ("cost_analysis", "bad_bucket", {"bucket": "week"}, 400),
    (
        "cost_analysis",
        "too_many_buckets",
        {"since": "2020-01-01T00:00:00Z", "until": NOW, "bucket": "hour"},
        400,
    ),
    ("cost_analysis", "reversed_range", {"since": NOW, "until": "2026-10-01T00:00:00Z"}, 400),
    ("set_budget", "bad_period", {"period": "week", "limitUsd": 1}, 400),
    ("set_budget", "no_period", {"limitUsd": 1}, 400),
    ("set_budget", "negative_limit", {"period": "day", "limitUsd": -1}, 400),
    ("set_budget", "infinite_limit", {"period": "day", "limitUsd": "Infinity"}, 400),
    ("get_budget", "unknown_field", {"period": "day"}, 400),
]


@pytest.fixture(scope="module")
async def worker(nats_server: EmbeddedNats, postgres: EmbeddedPostgres) -> AsyncIterator[Worker]:
    async with running_worker([llmops.component], nats_server.url, database_url=postgres.dsn) as w:
        yield w


@pytest.fixture(scope="module")
async def conn(nats_server: EmbeddedNats) -> AsyncIterator[NATS]:
    client = await nats.connect(nats_server.url, name="pytest-llmops-bad-input")
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture(scope="module")
async def db(postgres: EmbeddedPostgres) -> AsyncIterator[LlmopsDb]:
    async with LlmopsDb.connect(postgres.dsn) as found:
        yield found


async def send(conn: NATS, tenant: str, op: str, body: bytes) -> Msg:
    return await conn.request(
        f"ai.v1.{tenant}.req.llmops.{op}",
        body,
        timeout=10,
        headers={HEADER_CONTENT_TYPE: "application/json"},
    )


async def budget_event_count(conn: NATS, tenant: str) -> int:
    js = conn.jetstream()
    subject = event_subject(tenant, "llmops", "*")
    info = await js.stream_info(STREAM_EVENTS, subjects_filter=subject)
    return sum((info.state.subjects or {}).values())


async def assert_still_serving(conn: NATS, tenant: str) -> None:
    reply = await send(conn, tenant, "log_operation", json.dumps(GOOD_OP).encode())
    assert json.loads(reply.data)["created"] is True, reply.data
    reply = await send(conn, tenant, "list_operations", b"{}")
    assert len(json.loads(reply.data)["operations"]) == 1, reply.data


@pytest.mark.parametrize(
    ("op", "case", "body", "status"), CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES]
)
async def test_invalid_request_is_refused_and_changes_nothing(
    worker: Worker, conn: NATS, db: LlmopsDb, op: str, case: str, body: dict[str, Any], status: int
) -> None:
    """Each invalid request gets its documented status, writes nothing, and the worker serves on."""
    tenant = "b" + uuid.uuid4().hex[:16]
    if op == "log_operation":
        # A budget that any stored operation would cross: a partial write would show up.
        reply = await send(conn, tenant, "set_budget", b'{"period": "day", "limitUsd": 0.01}')
        assert not (reply.headers or {}).get(HEADER_ERROR_CODE), reply.data
    before = await db.row_counts(tenant)
    reply = await send(conn, tenant, op, json.dumps(body).encode())
    headers = reply.headers or {}
    assert headers.get(HEADER_ERROR_CODE) == str(status), (case, reply.data[:300])
    error = json.loads(reply.data)
    assert error["retryable"] is False
    assert error["code"] == ("INVALID_ARGUMENT" if status == 400 else "PAYLOAD_TOO_LARGE")
    assert await db.row_counts(tenant) == before
    assert await budget_event_count(conn, tenant) == 0
    await assert_still_serving(conn, "ok-" + tenant)


@pytest.mark.parametrize("op", sorted(llmops.component.rpcs))
async def test_malformed_protobuf_is_400_for_every_op(
    worker: Worker, conn: NATS, db: LlmopsDb, op: str
) -> None:
    """Bytes that are no protobuf message: 400 INVALID_ARGUMENT, nothing written."""
    tenant = "b" + uuid.uuid4().hex[:16]
    reply = await conn.request(
        f"ai.v1.{tenant}.req.llmops.{op}",
        b"\xff\xff\xff",
        timeout=10,
        headers={HEADER_CONTENT_TYPE: "application/protobuf"},
    )
    assert (reply.headers or {}).get(HEADER_ERROR_CODE) == "400"
    assert await db.row_counts(tenant) == EMPTY


@pytest.mark.parametrize("op", sorted(llmops.component.rpcs))
async def test_invalid_tenant_token_is_400_for_every_op(
    worker: Worker, conn: NATS, db: LlmopsDb, op: str
) -> None:
    """A request under a tenant token outside the grammar is refused before any effect."""
    bad = "Bad" + uuid.uuid4().hex[:8]
    body = json.dumps(GOOD_OP if op == "log_operation" else {}).encode()
    reply = await send(conn, bad, op, body)
    assert (reply.headers or {}).get(HEADER_ERROR_CODE) == "400"
    assert await db.rows_naming(bad) == 0
