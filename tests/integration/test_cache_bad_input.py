"""Bad input to every cache operation: the documented error, nothing written, still serving.

The error contract (DESIGN §2): headers `Nats-Service-Error-Code` (400/413) and
`Nats-Service-Error`, body `aifleet.v1.Error` in the request's encoding, `retryable=false`.
"Nothing written" is checked with a direct client: no Redis key names the tenant afterwards.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import msgpack
import nats
import pytest
import redis.asyncio
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from aifleet.embedded import EmbeddedNats, EmbeddedValkey
from schemas.v1.cache_pb2 import SetRequest
from subjects import HEADER_CONTENT_TYPE, HEADER_ERROR_CODE
from tests.support import wire
from tests.support.fleet import running_worker
from tests.support.wire import assert_error
from workers.cache import service as cache
from workers.runtime.worker import Worker

OPS = ["get", "set", "delete", "invalidate", "clear", "stats"]
FORMATS = ["json", "msgpack", "protobuf"]
MIB = 1024 * 1024

# A valid request body per op, and one with a field of the wrong type (or, for ops without
# fields, a body that is not a map at all).
VALID: dict[str, dict[str, Any]] = {
    "get": {"key": "k"},
    "set": {"key": "k", "value": {"a": 1}},
    "delete": {"key": "k"},
    "invalidate": {"pattern": "k*"},
    "clear": {},
    "stats": {},
}
WRONG_TYPE: dict[str, Any] = {
    "get": {"key": 5},
    "set": {"key": "k", "value": 1, "ttl_seconds": "soon"},
    "delete": {"key": ["k"]},
    "invalidate": {"pattern": 7},
    "clear": [],
    "stats": ["x"],
}
MALFORMED = {
    "json": b'{"key": ',
    "msgpack": b"\xc1",
    "protobuf": b"\xff\xff\xff",
}


@pytest.fixture(scope="module")
async def worker(nats_server: EmbeddedNats, valkey: EmbeddedValkey) -> AsyncIterator[Worker]:
    """One worker for the module: each test also proves it still serves after bad input."""
    async with running_worker([cache.component], nats_server.url, redis_url=valkey.url) as w:
        yield w


@pytest.fixture(scope="module")
async def conn(nats_server: EmbeddedNats) -> AsyncIterator[NATS]:
    client = await nats.connect(nats_server.url, name="pytest-bad-input")
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


def encode(fmt: str, op: str, body: Any) -> bytes:
    return wire.encode(fmt, "cache", op, body)


async def send(conn: NATS, tenant: str, op: str, fmt: str, data: bytes) -> Msg:
    return await wire.send(conn, tenant, "cache", op, fmt, data, timeout=5)


async def keys_naming(rdb: redis.asyncio.Redis, token: str) -> list[bytes]:
    return [k async for k in rdb.scan_iter(match=f"*{token}*", count=1000)]


async def assert_nothing_written(rdb: redis.asyncio.Redis, tenant: str) -> None:
    """No entry and no hit/miss counter was written for the tenant."""
    assert await keys_naming(rdb, tenant) == []


async def assert_still_serving(conn: NATS, tenant: str) -> None:
    """A good request right after the bad one is answered normally."""
    reply = await send(conn, tenant, "set", "json", b'{"key": "ok", "value": true}')
    assert json.loads(reply.data) == {"stored": True}
    reply = await send(conn, tenant, "get", "json", b'{"key": "ok"}')
    assert json.loads(reply.data) == {"found": True, "value": True, "ttl_ms": "0"}


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("op", OPS)
async def test_malformed_body_is_400(
    worker: Worker, conn: NATS, rdb: redis.asyncio.Redis, tenant: str, op: str, fmt: str
) -> None:
    """Bytes that are not a body of the declared encoding: 400 INVALID_ARGUMENT."""
    reply = await send(conn, tenant, op, fmt, MALFORMED[fmt])
    assert_error(reply, fmt, 400, "INVALID_ARGUMENT")
    await assert_nothing_written(rdb, tenant)
    await assert_still_serving(conn, tenant)


@pytest.mark.parametrize("fmt", ["json", "msgpack"])
@pytest.mark.parametrize("op", OPS)
async def test_unknown_field_is_400(
    worker: Worker, conn: NATS, rdb: redis.asyncio.Redis, tenant: str, op: str, fmt: str
) -> None:
    """A field the contract does not declare is refused, not dropped."""
    body = {**VALID[op], "colour": "red"}
    reply = await send(conn, tenant, op, fmt, encode(fmt, op, body))
    assert_error(reply, fmt, 400, "INVALID_ARGUMENT")
    await assert_nothing_written(rdb, tenant)
    await assert_still_serving(conn, tenant)


@pytest.mark.parametrize("fmt", ["json", "msgpack"])
@pytest.mark.parametrize("op", OPS)
async def test_wrong_type_is_400(
    worker: Worker, conn: NATS, rdb: redis.asyncio.Redis, tenant: str, op: str, fmt: str
) -> None:
    """A field of the wrong type (or a body that is not a map) is refused."""
    reply = await send(conn, tenant, op, fmt, encode(fmt, op, WRONG_TYPE[op]))
    assert_error(reply, fmt, 400, "INVALID_ARGUMENT")
    await assert_nothing_written(rdb, tenant)
    await assert_still_serving(conn, tenant)


@pytest.mark.parametrize("shape", ["uppercase", "too_long", "leading_dash", "leading_underscore"])
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("op", OPS)
async def test_invalid_tenant_token_in_the_subject_is_400(
    worker: Worker, conn: NATS, rdb: redis.asyncio.Redis, op: str, fmt: str, shape: str
) -> None:
    """A request under a tenant token outside the grammar is refused before any effect."""
    unique = uuid.uuid4().hex
    bad = {
        "uppercase": "T" + unique.upper()[:16],
        "too_long": unique + unique,  # 64 characters
        "leading_dash": "-" + unique[:16],
        "leading_underscore": "_" + unique[:16],
    }[shape]
    reply = await send(conn, bad, op, fmt, encode(fmt, op, VALID[op]))
    assert_error(reply, fmt, 400, "INVALID_ARGUMENT")
    assert await keys_naming(rdb, bad) == []
    assert await keys_naming(rdb, bad.lower().lstrip("-_")) == []
    await assert_still_serving(conn, "ok-" + unique[:16])


@pytest.mark.parametrize("fmt", FORMATS)
async def test_value_over_the_limit_is_413_and_not_stored(
    worker: Worker, conn: NATS, rdb: redis.asyncio.Redis, tenant: str, fmt: str
) -> None:
    """A 2 MB value against the 1 MiB default limit: 413 PAYLOAD_TOO_LARGE."""
    if fmt == "json":
        data = encode(fmt, "set", {"key": "big", "value": "x" * (2 * MIB)})
    elif fmt == "msgpack":
        data = encode(fmt, "set", {"key": "big", "raw": b"\x01" * (2 * MIB)})
    else:
        data = SetRequest(key="big", raw=b"\x01" * (2 * MIB)).SerializeToString()
    reply = await send(conn, tenant, "set", fmt, data)
    assert_error(reply, fmt, 413, "PAYLOAD_TOO_LARGE")
    await assert_nothing_written(rdb, tenant)
    await assert_still_serving(conn, tenant)


async def test_value_exactly_at_the_limit_is_stored_one_byte_more_is_not(
    worker: Worker, conn: NATS, rdb: redis.asyncio.Redis, tenant: str
) -> None:
    """The limit is inclusive: 1 MiB is stored, 1 MiB + 1 byte is 413."""
    at = msgpack.packb({"key": "at", "raw": b"\x02" * MIB}, use_bin_type=True)
    reply = await send(conn, tenant, "set", "msgpack", at)
    assert msgpack.unpackb(reply.data) == {"stored": True}
    over = msgpack.packb({"key": "over", "raw": b"\x02" * (MIB + 1)}, use_bin_type=True)
    reply = await send(conn, tenant, "set", "msgpack", over)
    assert_error(reply, "msgpack", 413, "PAYLOAD_TOO_LARGE")
    assert [k.decode() for k in await keys_naming(rdb, tenant)] == [
        f"aifleet:cache:{{{tenant}}}:at"
    ]


async def test_request_over_the_worker_body_limit_is_413(
    worker: Worker, conn: NATS, rdb: redis.asyncio.Redis, tenant: str
) -> None:
    """A body over max_request_bytes (4 MiB default) is refused before decoding."""
    data = SetRequest(key="k", raw=b"\x03" * (5 * MIB)).SerializeToString()
    reply = await send(conn, tenant, "set", "protobuf", data)
    assert_error(reply, "protobuf", 413, "PAYLOAD_TOO_LARGE")
    await assert_nothing_written(rdb, tenant)
    await assert_still_serving(conn, tenant)


BAD_KEYS = {
    "empty": "",
    "nul": "a\x00b",
    "newline": "a\nb",
    "carriage_return": "a\rb",
    "escape": "\x1b[31mred",
    "delete_char": "a\x7f",
    "too_long": "k" * 513,
    "too_long_multibyte": "é" * 257,
}


@pytest.mark.parametrize("name", list(BAD_KEYS))
@pytest.mark.parametrize("op", ["get", "set", "delete"])
async def test_bad_key_is_400(
    worker: Worker, conn: NATS, rdb: redis.asyncio.Redis, tenant: str, op: str, name: str
) -> None:
    """Empty keys, control characters and keys over 512 bytes are refused."""
    body = {**VALID[op], "key": BAD_KEYS[name]}
    reply = await send(conn, tenant, op, "json", json.dumps(body).encode())
    assert_error(reply, "json", 400, "INVALID_ARGUMENT")
    await assert_nothing_written(rdb, tenant)
    await assert_still_serving(conn, tenant)


@pytest.mark.parametrize("name", list(BAD_KEYS))
async def test_bad_pattern_is_400(
    worker: Worker, conn: NATS, rdb: redis.asyncio.Redis, tenant: str, name: str
) -> None:
    """invalidate applies the same rules to its pattern."""
    reply = await send(
        conn, tenant, "invalidate", "json", json.dumps({"pattern": BAD_KEYS[name]}).encode()
    )
    assert_error(reply, "json", 400, "INVALID_ARGUMENT")
    await assert_still_serving(conn, tenant)


@pytest.mark.parametrize("op", ["get", "set", "delete"])
async def test_missing_key_is_400(
    worker: Worker, conn: NATS, rdb: redis.asyncio.Redis, tenant: str, op: str
) -> None:
    """A request without its key is refused (the proto default "" is not a key)."""
    body = {k: v for k, v in VALID[op].items() if k != "key"}
    reply = await send(conn, tenant, op, "msgpack", msgpack.packb(body))
    assert_error(reply, "msgpack", 400, "INVALID_ARGUMENT")
    await assert_nothing_written(rdb, tenant)


async def test_key_of_exactly_512_bytes_is_accepted(
    worker: Worker, conn: NATS, rdb: redis.asyncio.Redis, tenant: str
) -> None:
    """The key limit is inclusive."""
    body = {"key": "k" * 512, "value": 1}
    reply = await send(conn, tenant, "set", "json", json.dumps(body).encode())
    assert json.loads(reply.data) == {"stored": True}
    assert len(await keys_naming(rdb, tenant)) == 1


BAD_TTLS: dict[str, tuple[str, Any]] = {
    "negative": ("json", -1),
    "tiny_negative": ("json", -1e-9),
    "nan_json": ("json", "NaN"),
    "nan_msgpack": ("msgpack", float("nan")),
    "infinity_json": ("json", "Infinity"),
    "minus_infinity_json": ("json", "-Infinity"),
    "infinity_msgpack": ("msgpack", float("inf")),
    "over_a_year": ("json", 365 * 86_400 + 1),
    "huge": ("msgpack", 1e300),
}


@pytest.mark.parametrize("name", list(BAD_TTLS))
async def test_bad_ttl_is_400(
    worker: Worker, conn: NATS, rdb: redis.asyncio.Redis, tenant: str, name: str
) -> None:
    """Negative, NaN, infinite and over-the-maximum TTLs are refused."""
    fmt, ttl = BAD_TTLS[name]
    body = {"key": "k", "value": 1, "ttl_seconds": ttl}
    reply = await send(conn, tenant, "set", fmt, encode(fmt, "set", body))
    assert_error(reply, fmt, 400, "INVALID_ARGUMENT")
    await assert_nothing_written(rdb, tenant)
    await assert_still_serving(conn, tenant)


@pytest.mark.parametrize("fmt", FORMATS)
async def test_set_without_value_or_raw_is_400(
    worker: Worker, conn: NATS, rdb: redis.asyncio.Redis, tenant: str, fmt: str
) -> None:
    """A set must carry one of value or raw."""
    reply = await send(conn, tenant, "set", fmt, encode(fmt, "set", {"key": "k", "ttl_seconds": 5}))
    assert_error(reply, fmt, 400, "INVALID_ARGUMENT")
    await assert_nothing_written(rdb, tenant)


async def test_set_with_a_json_null_value_is_stored(
    worker: Worker, conn: NATS, rdb: redis.asyncio.Redis, tenant: str
) -> None:
    """`"value": null` / msgpack nil is the JSON null, a value, not a missing payload."""
    for fmt in ("json", "msgpack"):
        reply = await send(
            conn, tenant, "set", fmt, encode(fmt, "set", {"key": fmt, "value": None})
        )
        assert (reply.headers or {}).get(HEADER_ERROR_CODE) is None, reply.data
        reply = await send(conn, tenant, "get", fmt, encode(fmt, "get", {"key": fmt}))
        got = json.loads(reply.data) if fmt == "json" else msgpack.unpackb(reply.data)
        assert got["found"] is True
        assert "value" in got
        assert got["value"] is None
    assert len(await keys_naming(rdb, tenant)) == 3  # two entries and the hit counter


@pytest.mark.parametrize("content_type", ["text/plain", "application/xml"])
async def test_unsupported_content_type_is_400_in_json(
    worker: Worker, conn: NATS, rdb: redis.asyncio.Redis, tenant: str, content_type: str
) -> None:
    """An encoding the fleet does not speak: 400, answered in JSON."""
    reply = await conn.request(
        f"ai.v1.{tenant}.req.cache.set",
        b'{"key": "k", "value": 1}',
        timeout=5,
        headers={HEADER_CONTENT_TYPE: content_type},
    )
    assert_error(reply, "json", 400, "INVALID_ARGUMENT")
    assert (reply.headers or {}).get(HEADER_CONTENT_TYPE) == "application/json"
    await assert_nothing_written(rdb, tenant)
