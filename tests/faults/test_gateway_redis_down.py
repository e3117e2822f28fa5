"""The gateway with Valkey down and back: 503 retryable at once (its limits live there), then
serving again by itself; nothing is counted or answered from a cache while it is down."""

from __future__ import annotations

import time

import pytest

from schemas.errors import Unavailable
from tests.conftest import NatsFactory, ValkeyFactory
from tests.support.gateway import ask, connected, generate, running_gateway
from tests.support.polling import eventually
from workers.runtime.client import Client

pytestmark = pytest.mark.faults


async def test_gateway_answers_503_while_redis_is_down_then_recovers(
    nats_factory: NatsFactory, valkey_factory: ValkeyFactory
) -> None:
    """Limits cannot be checked without Redis: 503 retryable within the dependency timeout,
    never a provider call that no limit admitted; served again once Valkey is back."""
    server, valkey = nats_factory(), valkey_factory()
    async with running_gateway(server.url, valkey.url), connected(server.url) as nc:
        client = Client(nc, timeout=10)
        await generate(client, "redis-down", ask("before"))
        valkey.stop()
        for _ in range(3):
            started = time.monotonic()
            with pytest.raises(Unavailable) as refused:
                await generate(client, "redis-down", ask("during", cache={"skip": True}))
            assert refused.value.retryable
            assert time.monotonic() - started < 3.0
        valkey.start()

        async def served() -> bool:
            try:
                await generate(client, "redis-down", ask("after", cache={"skip": True}))
            except Unavailable:
                return False
            return True

        await eventually(served, timeout=20, what="the gateway serving again")
