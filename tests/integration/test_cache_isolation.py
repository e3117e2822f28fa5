"""Tenant isolation in the cache: what tenant a stores, tenant b can neither see nor remove.

The tenant is the subject token; b uses the very same key names as a, and also tries keys and
patterns that spell a's Redis key names, so a prefix mix-up anywhere would show.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio
from google.protobuf import struct_pb2
from nats.aio.client import Client as NATS

from aifleet.embedded import EmbeddedNats, EmbeddedValkey
from schemas.v1.cache_pb2 import (
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
from subjects import STREAM_EVENTS, cache_key_prefix, cache_stats_key, event_subject
from tests.support.fleet import running_worker
from workers.cache import service as cache
from workers.runtime.client import Client
from workers.runtime.worker import Worker

KEYS = ("k1", "k2", "user:1")


@pytest.fixture
async def worker(nats_server: EmbeddedNats, valkey: EmbeddedValkey) -> AsyncIterator[Worker]:
    async with running_worker([cache.component], nats_server.url, redis_url=valkey.url) as w:
        yield w


@pytest.fixture
async def rdb(valkey: EmbeddedValkey) -> AsyncIterator[redis.asyncio.Redis]:
    client = redis.asyncio.Redis.from_url(valkey.url)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
def tenants() -> tuple[str, str]:
    """Two fresh tenants; b's token is a prefix of a's, the closest a mix-up can get."""
    b = "i" + uuid.uuid4().hex[:12]
    return b + "a", b


@pytest.fixture
async def client(nc: NATS, worker: Worker, tenants: tuple[str, str]) -> Client:
    """A client, with tenant a's entries already stored."""
    c = Client(nc, timeout=5.0)
    a, _ = tenants
    for key in KEYS:
        value = struct_pb2.Value(string_value=f"a's {key}")
        await c.call(a, "cache", "set", SetRequest(key=key, value=value), SetResponse)
    return c


async def a_keys(rdb: redis.asyncio.Redis, tenant: str) -> set[str]:
    prefix = cache_key_prefix(tenant)
    return {k.decode()[len(prefix) :] async for k in rdb.scan_iter(match=prefix + "*")}


async def assert_a_untouched(client: Client, rdb: redis.asyncio.Redis, a: str) -> None:
    assert await a_keys(rdb, a) == set(KEYS)
    for key in KEYS:
        got = await client.call(a, "cache", "get", GetRequest(key=key), GetResponse)
        assert (got.found, got.value.string_value) == (True, f"a's {key}")


async def test_other_tenant_cannot_get(
    client: Client, rdb: redis.asyncio.Redis, tenants: tuple[str, str]
) -> None:
    """b's get of a's key names, or of a's full Redis key names, is a miss."""
    a, b = tenants
    for key in (*KEYS, cache_key_prefix(a) + "k1", f"}}:{a}:k1", "*"):
        got = await client.call(b, "cache", "get", GetRequest(key=key), GetResponse)
        assert got.found is False, key
        assert got.WhichOneof("payload") is None


async def test_other_tenant_cannot_delete(
    client: Client, rdb: redis.asyncio.Redis, tenants: tuple[str, str]
) -> None:
    """b's delete of a's key names removes nothing of a's."""
    a, b = tenants
    for key in (*KEYS, cache_key_prefix(a) + "k1"):
        got = await client.call(b, "cache", "delete", DeleteRequest(key=key), DeleteResponse)
        assert got.deleted is False, key
    await assert_a_untouched(client, rdb, a)


@pytest.mark.parametrize("pattern", ["*", "k*", "user:*", "*k1", "*{*}*", "?*"])
async def test_other_tenant_cannot_invalidate(
    client: Client, rdb: redis.asyncio.Redis, tenants: tuple[str, str], pattern: str
) -> None:
    """b's invalidate, even with "*", only ever reaches b's own entries."""
    a, b = tenants
    await client.call(b, "cache", "set", SetRequest(key="k1", raw=b"b's"), SetResponse)
    got = await client.call(
        b, "cache", "invalidate", InvalidateRequest(pattern=pattern), InvalidateResponse
    )
    assert got.removed <= 1
    await assert_a_untouched(client, rdb, a)


async def test_other_tenant_cannot_clear(
    client: Client, rdb: redis.asyncio.Redis, tenants: tuple[str, str]
) -> None:
    """b's clear empties b's cache and leaves a's whole, a's counters included."""
    a, b = tenants
    await client.call(a, "cache", "get", GetRequest(key="k1"), GetResponse)
    await client.call(b, "cache", "set", SetRequest(key="k1", raw=b"b's"), SetResponse)
    got = await client.call(b, "cache", "clear", ClearRequest(), ClearResponse)
    assert got.removed == 1
    assert await rdb.hget(cache_stats_key(a), "hits") == b"1"
    await assert_a_untouched(client, rdb, a)


async def test_same_key_names_hold_separate_values(
    client: Client, rdb: redis.asyncio.Redis, tenants: tuple[str, str]
) -> None:
    """b writing a's key names stores b's own entries; each tenant reads its own."""
    a, b = tenants
    for key in KEYS:
        await client.call(b, "cache", "set", SetRequest(key=key, raw=b"b"), SetResponse)
    for key in KEYS:
        got = await client.call(b, "cache", "get", GetRequest(key=key), GetResponse)
        assert got.raw == b"b"
    await assert_a_untouched(client, rdb, a)


async def test_other_tenant_stats_do_not_see_a(
    client: Client, rdb: redis.asyncio.Redis, tenants: tuple[str, str]
) -> None:
    """b's stats count none of a's keys, hits or misses."""
    a, b = tenants
    await client.call(a, "cache", "get", GetRequest(key="k1"), GetResponse)
    await client.call(a, "cache", "get", GetRequest(key="missing"), GetResponse)
    b_stats = await client.call(b, "cache", "stats", StatsRequest(), StatsResponse)
    assert (b_stats.hits, b_stats.misses, b_stats.keys) == (0, 0, 0)
    a_stats = await client.call(a, "cache", "stats", StatsRequest(), StatsResponse)
    assert (a_stats.hits, a_stats.misses, a_stats.keys) == (1, 1, len(KEYS))


async def test_invalidation_events_go_to_the_acting_tenant_only(
    client: Client, nc: NATS, tenants: tuple[str, str]
) -> None:
    """b's clear publishes under b's event subject; nothing appears under a's."""
    a, b = tenants
    await client.call(b, "cache", "clear", ClearRequest(), ClearResponse)
    js = nc.jetstream()
    for tenant, expected in ((a, 0), (b, 1)):
        subject = event_subject(tenant, "cache", "invalidated")
        info = await js.stream_info(STREAM_EVENTS, subjects_filter=subject)
        assert (info.state.subjects or {}).get(subject, 0) == expected
