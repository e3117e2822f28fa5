"""The process's shared clients: bounded pools that make a burst wait instead of failing."""

from __future__ import annotations

import asyncio
import uuid

import pytest
import redis.asyncio
from nats.aio.client import Client as NATS

from aifleet.embedded import EmbeddedPostgres, EmbeddedValkey
from workers.runtime.config import Settings
from workers.runtime.resources import Resources


async def test_a_burst_beyond_the_redis_pool_waits_for_a_connection(
    nc: NATS, valkey: EmbeddedValkey
) -> None:
    """40 concurrent blocking commands on a 2-connection pool all succeed, on 2 connections."""
    settings = Settings(redis_url=valkey.url, redis_max_connections=2)
    resources = Resources(nc, settings)
    client = resources.redis()
    name = f"test-resources-{uuid.uuid4().hex}"
    await client.client_setname(name)
    try:
        # Each BLPOP holds its connection for 20 ms: 40 of them need 0.4 s on 2 connections.
        results = await asyncio.gather(
            *(client.blpop([f"{name}:missing"], timeout=0.02) for _ in range(40))
        )
        assert results == [None] * 40
        assert len(client.connection_pool._in_use_connections) == 0
        assert client.connection_pool.max_connections == 2
        async with redis.asyncio.Redis.from_url(valkey.url) as observer:
            clients = await observer.client_list()
        ours = [c for c in clients if c.get("name") == name or c.get("cmd") == "blpop"]
        assert len(ours) <= 2
    finally:
        await resources.close()


async def test_the_redis_pool_wait_is_bounded_by_the_dependency_timeout(
    nc: NATS, valkey: EmbeddedValkey
) -> None:
    """With the only connection taken, a command fails after dependency_timeout, not hangs."""
    settings = Settings(redis_url=valkey.url, redis_max_connections=1, dependency_timeout=0.3)
    resources = Resources(nc, settings)
    client = resources.redis()
    pool = client.connection_pool
    try:
        taken = await pool.get_connection()  # type: ignore[no-untyped-call]
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(redis.exceptions.ConnectionError):
            await client.set(f"later-{uuid.uuid4().hex}", "1")
        assert 0.25 <= loop.time() - started < 2.0
        await pool.release(taken)
        assert await client.set(f"later-{uuid.uuid4().hex}", "1")
    finally:
        await resources.close()


async def test_the_postgres_pool_takes_its_size_from_the_settings(
    nc: NATS, postgres: EmbeddedPostgres
) -> None:
    """AIFLEET_POSTGRES_POOL_SIZE sets the most connections the process opens."""
    resources = Resources(nc, Settings(database_url=postgres.dsn, postgres_pool_size=3))
    try:
        pool = await resources.postgres()
        assert pool.get_max_size() == 3
    finally:
        await resources.close()
