"""Valkey down and back: the cache answers 503 retryable in time, then serves again by itself.

The worker is never restarted: the Redis client reconnects once Valkey is back on its port.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator

import nats
import psutil
import pytest
from google.protobuf.message import Message
from nats.aio.client import Client as NATS

from aifleet.embedded import EmbeddedNats
from schemas.errors import ServiceError
from schemas.v1.cache_pb2 import GetRequest, GetResponse, SetRequest, SetResponse
from tests.conftest import NatsFactory, ValkeyFactory
from tests.support.fleet import running_worker
from tests.support.polling import eventually
from workers.cache import service as cache
from workers.runtime.client import Client

pytestmark = pytest.mark.faults

DEADLINE = 2.0  # the caller's timeout, sent to the worker as Aifleet-Timeout-Ms
CALLS = 20
WAIT = 20.0


@pytest.fixture
def cache_nats(nats_factory: NatsFactory) -> EmbeddedNats:
    return nats_factory()


@pytest.fixture
async def caller(cache_nats: EmbeddedNats) -> AsyncIterator[NATS]:
    nc = await nats.connect(cache_nats.url, name="pytest-caller", connect_timeout=5)
    try:
        yield nc
    finally:
        await nc.close()


async def round_trip(client: Client, tenant: str, i: int) -> bool:
    """set then get of one key; True when the value comes back."""
    value = f"v{i}".encode()
    stored = await client.call(
        tenant, "cache", "set", SetRequest(key=f"k{i}", raw=value), SetResponse
    )
    got = await client.call(tenant, "cache", "get", GetRequest(key=f"k{i}"), GetResponse)
    return stored.stored and got.found and got.raw == value


async def test_cache_answers_503_retryable_within_the_deadline_while_valkey_is_down(
    cache_nats: EmbeddedNats, caller: NATS, valkey_factory: ValkeyFactory
) -> None:
    """Every call while Valkey is stopped is a 503 retryable reply before the caller's deadline;
    Valkey started again on its port → calls succeed, same worker."""
    valkey = valkey_factory()
    tenant = "t" + uuid.uuid4().hex[:12]
    client = Client(caller, timeout=DEADLINE)
    async with running_worker([cache.component], cache_nats.url, redis_url=valkey.url):
        assert await round_trip(client, tenant, 0)
        await asyncio.to_thread(valkey.stop)

        replies: list[tuple[float, ServiceError | None]] = []
        requests: list[tuple[str, Message, type[Message]]] = [
            ("set", SetRequest(key="k", raw=b"v"), SetResponse),
            ("get", GetRequest(key="k"), GetResponse),
        ]
        for i in range(CALLS):
            op, request, response = requests[i % 2]
            began = time.monotonic()
            try:
                await client.call(tenant, "cache", op, request, response)
                error = None
            except ServiceError as exc:
                error = exc
            replies.append((time.monotonic() - began, error))

        await asyncio.to_thread(valkey.start)
        recovered_from = time.monotonic()

        async def serves() -> bool:
            try:
                return await round_trip(client, tenant, 1)
            except ServiceError:
                return False

        await eventually(serves, timeout=WAIT, what="a round trip after Valkey is back")
        recovered_in = time.monotonic() - recovered_from
        after = [await round_trip(client, tenant, i) for i in range(2, 2 + CALLS)]

    unavailable = [
        e
        for _, e in replies
        if e is not None and (e.status, e.code, e.retryable) == (503, "UNAVAILABLE", True)
    ]
    assert len(unavailable) == CALLS, [e for _, e in replies]
    latencies = [t for t, _ in replies]
    assert max(latencies) < DEADLINE
    assert after == [True] * CALLS
    print(
        f"\nValkey down: {CALLS} calls, all 503 retryable,"
        f" latency max {max(latencies) * 1000:.1f} ms"
        f" (median {sorted(latencies)[CALLS // 2] * 1000:.1f} ms, deadline {DEADLINE}s);"
        f" serving again {recovered_in:.2f}s after Valkey was back"
    )


def listener_pid(port: int) -> int:
    """The process listening on a loopback TCP port (the Valkey server)."""
    for conn in psutil.net_connections("tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.laddr.port == port and conn.pid:
            return int(conn.pid)
    raise LookupError(f"nothing listens on port {port}")


HUNG_DEPENDENCY_TIMEOUT = 1.0
HUNG_DEADLINE = 1.8  # more than one dependency_timeout, less than two


async def test_cache_answers_503_within_one_dependency_timeout_while_valkey_hangs(
    cache_nats: EmbeddedNats, caller: NATS, valkey_factory: ValkeyFactory
) -> None:
    """A Valkey that accepts connections but never answers (SIGSTOP) costs one
    dependency_timeout, then a 503 retryable reply; SIGCONT → calls succeed, same worker."""
    valkey = valkey_factory()
    pid = listener_pid(valkey.port)
    tenant = "t" + uuid.uuid4().hex[:12]
    client = Client(caller, timeout=HUNG_DEADLINE)
    async with running_worker(
        [cache.component],
        cache_nats.url,
        redis_url=valkey.url,
        dependency_timeout=HUNG_DEPENDENCY_TIMEOUT,
    ):
        assert await round_trip(client, tenant, 0)
        os.kill(pid, signal.SIGSTOP)
        replies: list[tuple[float, ServiceError | None]] = []
        try:
            for _ in range(3):
                began = time.monotonic()
                try:
                    await client.call(tenant, "cache", "get", GetRequest(key="k0"), GetResponse)
                    error = None
                except ServiceError as exc:
                    error = exc
                replies.append((time.monotonic() - began, error))
        finally:
            os.kill(pid, signal.SIGCONT)
        after = [await round_trip(client, tenant, i) for i in range(1, 6)]

    outcomes = [(e.status, e.code, e.retryable) if e else None for _, e in replies]
    assert outcomes == [(503, "UNAVAILABLE", True)] * 3, [str(e) for _, e in replies]
    assert after == [True] * 5
    print(
        f"\nValkey hung: 503 after {', '.join(f'{t:.2f}s' for t, _ in replies)}"
        f" (dependency_timeout {HUNG_DEPENDENCY_TIMEOUT}s, deadline {HUNG_DEADLINE}s)"
    )
