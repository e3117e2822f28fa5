"""The cache component end to end: real worker, real NATS + JetStream, real Valkey."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import msgpack
import pytest
import redis.asyncio
from google.protobuf import json_format, struct_pb2
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from aifleet.embedded import EmbeddedNats, EmbeddedValkey
from schemas.codec import JSON_CODEC, MSGPACK_CODEC, PROTOBUF_CODEC, Codec
from schemas.v1.cache_pb2 import (
    CacheInvalidatedEvent,
    ClearRequest,
    ClearResponse,
    DeleteRequest,
    DeleteResponse,
    GetRequest,
    GetResponse,
    InvalidateRequest,
    InvalidateResponse,
    SetRequest,
    SetResponse,
    StatsRequest,
    StatsResponse,
)
from subjects import (
    HEADER_CONTENT_TYPE,
    HEADER_ERROR_CODE,
    HEADER_MESSAGE_TYPE,
    HEADER_MSG_ID,
    STREAM_EVENTS,
    cache_key_prefix,
    event_subject,
    request_subject,
)
from tests.support.fleet import running_worker
from workers.cache import service as cache
from workers.runtime.client import Client
from workers.runtime.worker import Worker


@pytest.fixture
async def worker(nats_server: EmbeddedNats, valkey: EmbeddedValkey) -> AsyncIterator[Worker]:
    async with running_worker([cache.component], nats_server.url, redis_url=valkey.url) as w:
        yield w


@pytest.fixture
async def rdb(valkey: EmbeddedValkey) -> AsyncIterator[redis.asyncio.Redis]:
    """A direct client to the same Valkey, to check what the worker really stored."""
    client = redis.asyncio.Redis.from_url(valkey.url)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
def tenant() -> str:
    return "c" + uuid.uuid4().hex[:16]


@pytest.fixture
def client(nc: NATS) -> Client:
    return Client(nc, timeout=5.0)


def json_value(data: Any) -> struct_pb2.Value:
    out = struct_pb2.Value()
    json_format.ParseDict(data, out)
    return out


async def cache_set(client: Client, tenant: str, req: SetRequest) -> SetResponse:
    return await client.call(tenant, "cache", "set", req, SetResponse)


async def cache_get(client: Client, tenant: str, key: str) -> GetResponse:
    return await client.call(tenant, "cache", "get", GetRequest(key=key), GetResponse)


async def stored_keys(rdb: redis.asyncio.Redis, tenant: str) -> set[str]:
    prefix = cache_key_prefix(tenant)
    return {k.decode()[len(prefix) :] async for k in rdb.scan_iter(match=prefix + "*")}


async def read_events(nc: NATS, tenant: str) -> list[Msg]:
    """Every `evt.cache.invalidated` event of the tenant stored in AI_EVENTS, oldest first."""
    js = nc.jetstream()
    subject = event_subject(tenant, "cache", "invalidated")
    info = await js.stream_info(STREAM_EVENTS, subjects_filter=subject)
    count = (info.state.subjects or {}).get(subject, 0)
    if not count:
        return []
    sub = await js.subscribe(subject, ordered_consumer=True)
    try:
        return [await sub.next_msg(timeout=2.0) for _ in range(count)]
    finally:
        await sub.unsubscribe()


async def test_set_then_get_returns_the_json_value(
    worker: Worker, client: Client, tenant: str
) -> None:
    """A JSON value stored with set comes back from get, without expiry by default."""
    value = json_value({"answer": 42, "tags": ["a", None, True], "nested": {"x": "y"}})
    stored = await cache_set(client, tenant, SetRequest(key="k", value=value))
    assert stored.stored is True
    got = await cache_get(client, tenant, "k")
    assert got.found is True
    assert got.WhichOneof("payload") == "value"
    assert got.value == value
    assert got.ttl_ms == 0


async def test_a_json_null_is_stored_and_returned_as_a_value(
    worker: Worker, client: Client, tenant: str
) -> None:
    """null is a value like any other: found, with a value payload."""
    await cache_set(client, tenant, SetRequest(key="n", value=json_value(None)))
    got = await cache_get(client, tenant, "n")
    assert got.found is True
    assert got.WhichOneof("payload") == "value"
    assert got.value.WhichOneof("kind") == "null_value"


async def test_get_of_a_missing_key_is_a_miss_not_an_error(
    worker: Worker, client: Client, tenant: str
) -> None:
    """A miss answers found=false with no payload."""
    got = await cache_get(client, tenant, "never-set")
    assert got.found is False
    assert got.WhichOneof("payload") is None


async def test_raw_bytes_round_trip_byte_for_byte(
    worker: Worker, client: Client, tenant: str, rdb: redis.asyncio.Redis
) -> None:
    """Opaque bytes (every byte value, not UTF-8) come back exactly, as raw."""
    raw = bytes(range(256)) * 4
    await cache_set(client, tenant, SetRequest(key="blob", raw=raw))
    got = await cache_get(client, tenant, "blob")
    assert got.WhichOneof("payload") == "raw"
    assert got.raw == raw
    assert await stored_keys(rdb, tenant) == {"blob"}


@pytest.mark.parametrize("codec", [PROTOBUF_CODEC, MSGPACK_CODEC, JSON_CODEC], ids=repr)
async def test_the_typed_client_works_in_every_encoding(
    worker: Worker, nc: NATS, tenant: str, codec: Codec
) -> None:
    """The Python client speaks each codec, raw and value payloads alike."""
    client = Client(nc, codec=codec, timeout=5.0)
    await cache_set(client, tenant, SetRequest(key="v", value=json_value([1, "two"])))
    await cache_set(client, tenant, SetRequest(key="r", raw=b"\x00\xff"))
    assert (await cache_get(client, tenant, "v")).value == json_value([1, "two"])
    assert (await cache_get(client, tenant, "r")).raw == b"\x00\xff"


async def test_plain_nats_client_speaks_msgpack(worker: Worker, nc: NATS, tenant: str) -> None:
    """A client in any language: a msgpack map in, a msgpack map out."""
    headers = {HEADER_CONTENT_TYPE: "application/msgpack"}
    body = msgpack.packb({"key": "m", "value": {"a": [1, 2.5, "x"]}, "ttl_seconds": 60})
    reply = await nc.request(request_subject(tenant, "cache", "set"), body, 5, headers=headers)
    assert msgpack.unpackb(reply.data) == {"stored": True}
    reply = await nc.request(
        request_subject(tenant, "cache", "get"), msgpack.packb({"key": "m"}), 5, headers=headers
    )
    got = msgpack.unpackb(reply.data)
    assert got["found"] is True
    assert got["value"] == {"a": [1, 2.5, "x"]}
    assert 0 < got["ttl_ms"] <= 60_000


async def test_plain_nats_client_speaks_msgpack_raw_bytes(
    worker: Worker, nc: NATS, tenant: str
) -> None:
    """msgpack carries raw values as binary both ways."""
    headers = {HEADER_CONTENT_TYPE: "application/msgpack"}
    body = msgpack.packb({"key": "b", "raw": b"\x00\x01\xfe\xff"}, use_bin_type=True)
    await nc.request(request_subject(tenant, "cache", "set"), body, 5, headers=headers)
    reply = await nc.request(
        request_subject(tenant, "cache", "get"), msgpack.packb({"key": "b"}), 5, headers=headers
    )
    assert msgpack.unpackb(reply.data)["raw"] == b"\x00\x01\xfe\xff"


async def test_plain_nats_client_speaks_protobuf(worker: Worker, nc: NATS, tenant: str) -> None:
    """Binary protobuf with Content-Type application/protobuf."""
    headers = {HEADER_CONTENT_TYPE: "application/protobuf"}
    req = SetRequest(key="p", value=json_value({"b": False}))
    reply = await nc.request(
        request_subject(tenant, "cache", "set"), req.SerializeToString(), 5, headers=headers
    )
    assert SetResponse.FromString(reply.data).stored is True
    reply = await nc.request(
        request_subject(tenant, "cache", "get"),
        GetRequest(key="p").SerializeToString(),
        5,
        headers=headers,
    )
    got = GetResponse.FromString(reply.data)
    assert (got.found, got.value) == (True, json_value({"b": False}))


async def test_plain_nats_client_speaks_json_without_content_type(
    worker: Worker, nc: NATS, tenant: str
) -> None:
    """Like `nats req`: no headers at all means JSON, in and out."""
    body = json.dumps({"key": "j", "value": "text"}).encode()
    reply = await nc.request(request_subject(tenant, "cache", "set"), body, 5)
    assert json.loads(reply.data) == {"stored": True}
    reply = await nc.request(request_subject(tenant, "cache", "get"), b'{"key": "j"}', 5)
    assert json.loads(reply.data) == {"found": True, "value": "text", "ttl_ms": "0"}
    body = json.dumps({"key": "raw", "raw": "AAH+/w=="}).encode()
    await nc.request(request_subject(tenant, "cache", "set"), body, 5)
    reply = await nc.request(request_subject(tenant, "cache", "get"), b'{"key": "raw"}', 5)
    assert json.loads(reply.data)["raw"] == "AAH+/w=="


async def test_stats_with_an_empty_body_like_nats_req(
    worker: Worker, nc: NATS, tenant: str
) -> None:
    """`nats req ai.v1.<t>.req.cache.stats ''` works: an empty body is the empty request."""
    reply = await nc.request(request_subject(tenant, "cache", "stats"), b"", 5)
    assert reply.headers is None or HEADER_ERROR_CODE not in reply.headers
    assert json.loads(reply.data) == {"hits": "0", "misses": "0", "keys": "0"}


async def test_ttl_is_honoured(
    worker: Worker, client: Client, tenant: str, rdb: redis.asyncio.Redis
) -> None:
    """An entry set with ttl_seconds=0.2 reports its remaining time, then is gone."""
    await cache_set(client, tenant, SetRequest(key="t", value=json_value(1), ttl_seconds=0.2))
    got = await cache_get(client, tenant, "t")
    assert got.found is True
    assert 0 < got.ttl_ms <= 200
    assert 0 < await rdb.pttl(cache_key_prefix(tenant) + "t") <= 200
    await asyncio.sleep(0.3)
    assert (await cache_get(client, tenant, "t")).found is False
    assert await stored_keys(rdb, tenant) == set()


async def test_fractional_ttl_below_a_millisecond_still_expires(
    worker: Worker, client: Client, tenant: str, rdb: redis.asyncio.Redis
) -> None:
    """A tiny positive TTL is rounded up to 1 ms, never to 'no expiry'."""
    await cache_set(client, tenant, SetRequest(key="tiny", value=json_value(1), ttl_seconds=1e-6))
    await asyncio.sleep(0.02)
    assert (await cache_get(client, tenant, "tiny")).found is False


async def test_only_if_absent_does_not_overwrite(
    worker: Worker, client: Client, tenant: str
) -> None:
    """only_if_absent stores the first value and refuses the second; a plain set overwrites."""
    first = await cache_set(
        client, tenant, SetRequest(key="k", value=json_value("first"), only_if_absent=True)
    )
    second = await cache_set(
        client, tenant, SetRequest(key="k", value=json_value("second"), only_if_absent=True)
    )
    assert (first.stored, second.stored) == (True, False)
    assert (await cache_get(client, tenant, "k")).value == json_value("first")
    third = await cache_set(client, tenant, SetRequest(key="k", value=json_value("third")))
    assert third.stored is True
    assert (await cache_get(client, tenant, "k")).value == json_value("third")


async def test_set_replaces_a_value_with_raw_and_drops_the_ttl(
    worker: Worker, client: Client, tenant: str
) -> None:
    """A later set replaces payload kind and expiry (no TTL named → none)."""
    await cache_set(client, tenant, SetRequest(key="k", value=json_value(1), ttl_seconds=60))
    await cache_set(client, tenant, SetRequest(key="k", raw=b"r"))
    got = await cache_get(client, tenant, "k")
    assert (got.WhichOneof("payload"), got.raw, got.ttl_ms) == ("raw", b"r", 0)


async def test_delete_removes_one_entry(
    worker: Worker, client: Client, tenant: str, rdb: redis.asyncio.Redis
) -> None:
    """delete answers deleted=true once, then false; the other keys stay."""
    await cache_set(client, tenant, SetRequest(key="a", value=json_value(1)))
    await cache_set(client, tenant, SetRequest(key="b", value=json_value(2)))
    first = await client.call(tenant, "cache", "delete", DeleteRequest(key="a"), DeleteResponse)
    again = await client.call(tenant, "cache", "delete", DeleteRequest(key="a"), DeleteResponse)
    assert (first.deleted, again.deleted) == (True, False)
    assert (await cache_get(client, tenant, "a")).found is False
    assert await stored_keys(rdb, tenant) == {"b"}


async def test_invalidate_by_pattern_touches_only_matching_keys(
    worker: Worker, client: Client, tenant: str, rdb: redis.asyncio.Redis
) -> None:
    """A glob removes exactly the keys it matches."""
    for key in ("user:1", "user:2", "user:10", "users", "session:1", "xuser:1"):
        await cache_set(client, tenant, SetRequest(key=key, value=json_value(key)))
    removed = await client.call(
        tenant, "cache", "invalidate", InvalidateRequest(pattern="user:?"), InvalidateResponse
    )
    assert removed.removed == 2
    assert await stored_keys(rdb, tenant) == {"user:10", "users", "session:1", "xuser:1"}
    removed = await client.call(
        tenant, "cache", "invalidate", InvalidateRequest(pattern="user*"), InvalidateResponse
    )
    assert removed.removed == 2
    assert await stored_keys(rdb, tenant) == {"session:1", "xuser:1"}
    assert (await cache_get(client, tenant, "session:1")).value == json_value("session:1")


async def test_invalidate_treats_escaped_glob_characters_literally(
    worker: Worker, client: Client, tenant: str, rdb: redis.asyncio.Redis
) -> None:
    """`\\*` matches a literal star only."""
    for key in ("a*", "ab"):
        await cache_set(client, tenant, SetRequest(key=key, value=json_value(1)))
    removed = await client.call(
        tenant, "cache", "invalidate", InvalidateRequest(pattern="a\\*"), InvalidateResponse
    )
    assert removed.removed == 1
    assert await stored_keys(rdb, tenant) == {"ab"}


async def test_invalidate_removes_more_keys_than_one_scan_batch(
    worker: Worker, client: Client, tenant: str, rdb: redis.asyncio.Redis
) -> None:
    """Pattern removal walks the whole keyspace of the tenant, not just one SCAN page."""
    prefix = cache_key_prefix(tenant)
    await rdb.mset({f"{prefix}bulk:{i}": b"v1" for i in range(2500)})
    removed = await client.call(
        tenant, "cache", "invalidate", InvalidateRequest(pattern="bulk:*"), InvalidateResponse
    )
    assert removed.removed == 2500
    assert await stored_keys(rdb, tenant) == set()


async def test_clear_removes_every_entry_and_resets_stats(
    worker: Worker, client: Client, tenant: str, rdb: redis.asyncio.Redis
) -> None:
    """clear empties the tenant's cache and its hit/miss counters."""
    for key in ("a", "b", "c"):
        await cache_set(client, tenant, SetRequest(key=key, value=json_value(1)))
    await cache_get(client, tenant, "a")
    await cache_get(client, tenant, "zz")
    cleared = await client.call(tenant, "cache", "clear", ClearRequest(), ClearResponse)
    assert cleared.removed == 3
    assert await stored_keys(rdb, tenant) == set()
    stats = await client.call(tenant, "cache", "stats", StatsRequest(), StatsResponse)
    assert (stats.hits, stats.misses, stats.keys) == (0, 0, 0)


async def test_stats_count_hits_misses_and_live_keys(
    worker: Worker, client: Client, tenant: str
) -> None:
    """Every get is a hit or a miss; keys counts the entries alive now."""
    await cache_set(client, tenant, SetRequest(key="a", value=json_value(1)))
    await cache_set(client, tenant, SetRequest(key="b", raw=b"2"))
    for key in ("a", "a", "b", "nope", "nope", "nada"):
        await cache_get(client, tenant, key)
    stats = await client.call(tenant, "cache", "stats", StatsRequest(), StatsResponse)
    assert (stats.hits, stats.misses, stats.keys) == (3, 3, 2)


async def test_invalidation_events_land_in_ai_events(
    worker: Worker, client: Client, nc: NATS, tenant: str
) -> None:
    """Each removal publishes one typed `evt.cache.invalidated` with a unique Nats-Msg-Id."""
    for key in ("k", "p:1", "p:2", "rest"):
        await cache_set(client, tenant, SetRequest(key=key, value=json_value(1)))
    await client.call(tenant, "cache", "delete", DeleteRequest(key="k"), DeleteResponse)
    await client.call(tenant, "cache", "delete", DeleteRequest(key="absent"), DeleteResponse)
    await client.call(
        tenant, "cache", "invalidate", InvalidateRequest(pattern="p:*"), InvalidateResponse
    )
    await client.call(
        tenant, "cache", "invalidate", InvalidateRequest(pattern="none:*"), InvalidateResponse
    )
    await client.call(tenant, "cache", "clear", ClearRequest(), ClearResponse)

    events = await read_events(nc, tenant)
    decoded = [CacheInvalidatedEvent.FromString(m.data) for m in events]
    assert [(e.reason, e.pattern, e.removed) for e in decoded] == [
        ("delete", "k", 1),
        ("invalidate", "p:*", 2),
        ("clear", "*", 1),
    ]
    for msg in events:
        assert msg.subject == event_subject(tenant, "cache", "invalidated")
        assert msg.headers is not None
        assert msg.headers[HEADER_MESSAGE_TYPE] == "aifleet.v1.CacheInvalidatedEvent"
        assert msg.headers[HEADER_CONTENT_TYPE] == "application/protobuf"
        assert "Aifleet-Timeout-Ms" not in msg.headers
    ids = [(m.headers or {}).get(HEADER_MSG_ID) for m in events]
    assert all(ids)
    assert len(set(ids)) == len(ids)


async def test_keys_are_stored_under_the_calling_tenants_prefix(
    worker: Worker, client: Client, tenant: str, rdb: redis.asyncio.Redis
) -> None:
    """Keys land under the calling tenant's prefix and nowhere else."""
    await cache_set(client, tenant, SetRequest(key="only", value=json_value(1)))
    names = {k.decode() async for k in rdb.scan_iter(match=f"*{tenant}*")}
    assert names == {cache_key_prefix(tenant) + "only"}
