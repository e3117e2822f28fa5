"""An llm_operation event JetStream does not take is kept in Redis and published later, once."""

from __future__ import annotations

import redis.asyncio

from subjects import GATEWAY_OUTBOX_KEY, STREAM_EVENTS
from subjects.streams import provision_streams
from tests.conftest import NatsFactory, ValkeyFactory
from tests.support.gateway import ask, connected, generate, operations, running_gateway
from tests.support.polling import eventually
from workers.runtime.client import Client


async def test_event_survives_a_missing_events_stream(
    nats_factory: NatsFactory, valkey_factory: ValkeyFactory
) -> None:
    """With AI_EVENTS gone the call still answers; its event waits in Redis and is stored once
    with the operation's id when the stream is back."""
    server, valkey = nats_factory(), valkey_factory()
    tenant = "outbox"
    rdb = redis.asyncio.Redis.from_url(valkey.url)
    try:
        async with running_gateway(server.url, valkey.url), connected(server.url) as nc:
            js = nc.jetstream()
            await js.delete_stream(STREAM_EVENTS)
            reply = await generate(
                Client(nc, timeout=20), tenant, ask("keep me", cache={"skip": True})
            )
            assert "offline model" in reply.message.content
            assert await rdb.llen(GATEWAY_OUTBOX_KEY) == 1

            await provision_streams(js)
            stored = await eventually(
                lambda: operations(nc, tenant), timeout=15, what="the kept event in AI_EVENTS"
            )
            assert [event.id for _, event in stored] == [reply.id]
            assert await rdb.llen(GATEWAY_OUTBOX_KEY) == 0
    finally:
        await rdb.aclose()
