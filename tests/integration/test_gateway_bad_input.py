"""Bad input to every gateway operation: the documented error, nothing counted, cached or
accounted, the worker still serving.

"Nothing" is checked where the gateway would leave traces: the tenant's usage counters and
cache entries in Valkey, and llm_operation events in AI_EVENTS.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import nats
import pytest
import redis.asyncio
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from aifleet.embedded import EmbeddedNats, EmbeddedValkey
from subjects import cache_key_prefix, gateway_usage_prefix
from tests.support import wire
from tests.support.gateway import configure, operations, running_gateway
from tests.support.wire import assert_error
from workers.runtime.worker import Worker

OPS = ["generate", "generate_stream", "embed", "list_models", "rate_limits"]
FORMATS = ["json", "msgpack", "protobuf"]
MIB = 1024 * 1024
USER = {"role": "user", "content": "hi"}

VALID: dict[str, dict[str, Any]] = {
    "generate": {"messages": [USER]},
    "generate_stream": {"messages": [USER]},
    "embed": {"texts": ["hi"]},
    "list_models": {},
    "rate_limits": {},
}
WRONG_TYPE: dict[str, dict[str, Any]] = {
    "generate": {"messages": "hi"},
    "generate_stream": {"messages": [USER], "max_tokens": "many"},
    "embed": {"texts": "hi"},
    "list_models": {"page": 1},
    "rate_limits": {"tenant": "other"},
}
MALFORMED = {"json": b'{"messages": ', "msgpack": b"\xc1", "protobuf": b"\xff\xff\xff"}

WEATHER = {
    "type": "function",
    "function": {"name": "weather", "parameters": {"type": "object", "properties": {}}},
}
# (op, body) — each refused with 400 before any provider call, count or event.
SEMANTIC: dict[str, tuple[str, dict[str, Any]]] = {
    "no_messages": ("generate", {}),
    "empty_messages": ("generate", {"messages": []}),
    "prompt_and_messages": ("generate", {"prompt": "x", "messages": [USER]}),
    "bad_role": ("generate", {"messages": [{"role": "root", "content": "x"}]}),
    "empty_content": ("generate", {"messages": [{"role": "user", "content": ""}]}),
    "tool_without_call_id": ("generate", {"messages": [{"role": "tool", "content": "42"}]}),
    "tool_calls_on_user": (
        "generate",
        {"messages": [{"role": "user", "content": "x", "tool_calls": [{"id": "c"}]}]},
    ),
    "max_tokens_zero": ("generate", {"messages": [USER], "max_tokens": 0}),
    "max_tokens_huge": ("generate_stream", {"messages": [USER], "max_tokens": 10_000_000}),
    "temperature_negative": ("generate", {"messages": [USER], "temperature": -0.1}),
    "top_p_above_one": ("generate", {"messages": [USER], "top_p": 1.5}),
    "penalty_out_of_range": ("generate", {"messages": [USER], "presence_penalty": 2.5}),
    "five_stops": ("generate", {"messages": [USER], "stop": ["a", "b", "c", "d", "e"]}),
    "empty_stop": ("generate", {"messages": [USER], "stop": [""]}),
    "tool_bad_name": (
        "generate",
        {"messages": [USER], "tools": [{"type": "function", "function": {"name": "a b"}}]},
    ),
    "tool_schema_not_object": (
        "generate",
        {
            "messages": [USER],
            "tools": [
                {"type": "function", "function": {"name": "f", "parameters": {"type": "string"}}}
            ],
        },
    ),
    "tool_schema_malformed": (
        "generate",
        {
            "messages": [USER],
            "tools": [
                {
                    "type": "function",
                    "function": {
                        "name": "f",
                        "parameters": {"type": "object", "properties": {"a": {"type": 5}}},
                    },
                }
            ],
        },
    ),
    "tool_required_undefined": (
        "generate_stream",
        {
            "messages": [USER],
            "tools": [
                {
                    "type": "function",
                    "function": {
                        "name": "f",
                        "parameters": {"type": "object", "properties": {}, "required": ["x"]},
                    },
                }
            ],
        },
    ),
    "tool_type_not_function": (
        "generate",
        {"messages": [USER], "tools": [{"type": "retrieval", "function": {"name": "f"}}]},
    ),
    "tool_choice_undefined": (
        "generate",
        {
            "messages": [USER],
            "tools": [WEATHER],
            "tool_choice": {"type": "function", "function": {"name": "nope"}},
        },
    ),
    "tool_choice_required_without_tools": (
        "generate",
        {"messages": [USER], "tool_choice": "required"},
    ),
    "response_format_unknown": ("generate", {"messages": [USER], "response_format": {"type": "x"}}),
    "json_schema_without_schema": (
        "generate",
        {"messages": [USER], "response_format": {"type": "json_schema", "json_schema": {}}},
    ),
    "agent_id_too_long": ("generate", {"messages": [USER], "agent_id": "a" * 129}),
    "cache_ttl_too_long": ("generate", {"messages": [USER], "cache": {"ttl_seconds": 10**8}}),
    "embed_no_texts": ("embed", {"texts": []}),
    "embed_blank_text": ("embed", {"texts": ["ok", "  "]}),
    "embed_too_many": ("embed", {"texts": ["x"] * 2049}),
    "embed_dimensions_zero": ("embed", {"texts": ["x"], "dimensions": 0}),
    "embed_agent_id_too_long": ("embed", {"texts": ["x"], "agent_id": "a" * 129}),
    "embed_with_chat_model": ("embed", {"model": "offline", "texts": ["x"]}),
    "generate_with_embedding_model": (
        "generate",
        {"model": "all-minilm-l6-v2", "messages": [USER]},
    ),
}


@pytest.fixture(scope="module")
async def worker(nats_server: EmbeddedNats, valkey: EmbeddedValkey) -> AsyncIterator[Worker]:
    with pytest.MonkeyPatch.context() as mp:
        configure(mp, requests_per_minute=100_000)
        async with running_gateway(nats_server.url, valkey.url) as w:
            yield w


@pytest.fixture(scope="module")
async def conn(nats_server: EmbeddedNats) -> AsyncIterator[NATS]:
    client = await nats.connect(nats_server.url, name="pytest-gateway-bad-input")
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture(scope="module")
async def rdb(valkey: EmbeddedValkey) -> AsyncIterator[redis.asyncio.Redis]:
    client = redis.asyncio.Redis.from_url(valkey.url)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
def tenant() -> str:
    return "b" + uuid.uuid4().hex[:16]


async def send(conn: NATS, tenant: str, op: str, fmt: str, data: bytes) -> Msg:
    return await wire.send(conn, tenant, "gateway", op, fmt, data, timeout=20)


async def assert_nothing_recorded(rdb: redis.asyncio.Redis, conn: NATS, tenant: str) -> None:
    for prefix in (gateway_usage_prefix(tenant), cache_key_prefix(tenant)):
        assert [k async for k in rdb.scan_iter(match=prefix + "*")] == []
    assert await operations(conn, tenant) == []


async def assert_still_serving(conn: NATS, tenant: str) -> None:
    body = {"messages": [USER], "cache": {"skip": True}}
    reply = await send(conn, tenant, "generate", "json", json.dumps(body).encode())
    assert "offline model" in json.loads(reply.data)["message"]["content"], reply.data


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("op", OPS)
async def test_malformed_body_is_400(
    worker: Worker, conn: NATS, rdb: redis.asyncio.Redis, tenant: str, op: str, fmt: str
) -> None:
    """Bytes that are not a body of the declared encoding: 400 INVALID_ARGUMENT."""
    reply = await send(conn, tenant, op, fmt, MALFORMED[fmt])
    assert_error(reply, fmt, 400, "INVALID_ARGUMENT")
    await assert_nothing_recorded(rdb, conn, tenant)


@pytest.mark.parametrize("fmt", ["json", "msgpack"])
@pytest.mark.parametrize("op", OPS)
async def test_unknown_field_is_400(
    worker: Worker, conn: NATS, rdb: redis.asyncio.Redis, tenant: str, op: str, fmt: str
) -> None:
    """A field the contract does not declare is refused, not dropped."""
    body = {**VALID[op], "colour": "red"}
    reply = await send(conn, tenant, op, fmt, wire.encode(fmt, "gateway", op, body))
    assert_error(reply, fmt, 400, "INVALID_ARGUMENT")
    await assert_nothing_recorded(rdb, conn, tenant)


@pytest.mark.parametrize("fmt", ["json", "msgpack"])
@pytest.mark.parametrize("op", OPS)
async def test_wrong_type_is_400(
    worker: Worker, conn: NATS, rdb: redis.asyncio.Redis, tenant: str, op: str, fmt: str
) -> None:
    """A field of the wrong type (or one the operation does not have) is refused."""
    reply = await send(conn, tenant, op, fmt, wire.encode(fmt, "gateway", op, WRONG_TYPE[op]))
    assert_error(reply, fmt, 400, "INVALID_ARGUMENT")
    await assert_nothing_recorded(rdb, conn, tenant)


@pytest.mark.parametrize("case", sorted(SEMANTIC))
async def test_invalid_request_is_400_naming_the_field(
    worker: Worker, conn: NATS, rdb: redis.asyncio.Redis, tenant: str, case: str
) -> None:
    """Each semantically invalid request → 400 (404 for an unknown model), nothing recorded."""
    op, body = SEMANTIC[case]
    reply = await send(conn, tenant, op, "json", json.dumps(body).encode())
    assert_error(reply, "json", 400, "INVALID_ARGUMENT")
    await assert_nothing_recorded(rdb, conn, tenant)
    await assert_still_serving(conn, "ok-" + tenant)


@pytest.mark.parametrize("op", ["generate", "generate_stream", "embed"])
async def test_unknown_model_is_404_listing_the_available_ones(
    worker: Worker, conn: NATS, rdb: redis.asyncio.Redis, tenant: str, op: str
) -> None:
    """A model alias that is not configured → 404 NOT_FOUND with the available aliases."""
    body = {**VALID[op], "model": "gpt-17"}
    reply = await send(conn, tenant, op, "json", json.dumps(body).encode())
    assert_error(reply, "json", 404, "NOT_FOUND")
    assert "offline" in json.loads(reply.data)["details"]["available"]
    await assert_nothing_recorded(rdb, conn, tenant)


@pytest.mark.parametrize("op", ["generate", "embed"])
async def test_request_over_the_worker_body_limit_is_413(
    worker: Worker, conn: NATS, rdb: redis.asyncio.Redis, tenant: str, op: str
) -> None:
    """A body over max_request_bytes (4 MiB) is refused before decoding."""
    big = "y" * (5 * MIB)
    body = (
        {"messages": [{"role": "user", "content": big}]} if op == "generate" else {"texts": [big]}
    )
    reply = await send(conn, tenant, op, "msgpack", wire.encode("msgpack", "gateway", op, body))
    assert_error(reply, "msgpack", 413, "PAYLOAD_TOO_LARGE")
    await assert_nothing_recorded(rdb, conn, tenant)
    await assert_still_serving(conn, tenant)


async def test_metadata_over_16_kib_is_413(
    worker: Worker, conn: NATS, rdb: redis.asyncio.Redis, tenant: str
) -> None:
    """Operation metadata is bounded like LLMOps bounds it."""
    body = {"messages": [USER], "metadata": {"k": "x" * (17 * 1024)}}
    reply = await send(conn, tenant, "generate", "json", json.dumps(body).encode())
    assert_error(reply, "json", 413, "PAYLOAD_TOO_LARGE")
    await assert_nothing_recorded(rdb, conn, tenant)


async def test_semantic_cache_without_postgres_answers_from_the_model(
    worker: Worker, conn: NATS, tenant: str
) -> None:
    """This gateway has no DATABASE_URL: asking for semantic caching still gets a reply."""
    body = {"messages": [USER], "cache": {"semantic": True}}
    for _ in range(2):
        reply = await send(conn, tenant, "generate", "json", json.dumps(body).encode())
        assert "offline model" in json.loads(reply.data)["message"]["content"], reply.data
