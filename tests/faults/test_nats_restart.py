"""A restarted nats-server: the cache worker reconnects by itself and serves again.

A load loop keeps calling the cache (set then get) through the whole restart. Requests in the
gap fail (no server, or sent before the client noticed the disconnect and lost); once the first
one succeeds again, every later one must succeed — without restarting the worker.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import nats
import pytest

from aifleet.embedded import EmbeddedNats, EmbeddedValkey
from schemas.errors import ServiceError
from schemas.v1.cache_pb2 import GetRequest, GetResponse, SetRequest, SetResponse
from subjects import service_name
from tests.conftest import NatsFactory
from tests.support.fleet import running_worker
from tests.support.polling import eventually
from workers.cache import service as cache
from workers.runtime.client import Client

pytestmark = pytest.mark.faults

DOWN_SECONDS = 1.0
CALL_TIMEOUT = 1.0  # a request lost in the restart costs the loop this much
WAIT = 30.0


@dataclass
class Load:
    """Outcomes of the load loop: (monotonic time, ok) per set+get round trip."""

    outcomes: list[tuple[float, bool]] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)

    def successes_after(self, t: float) -> int:
        return sum(1 for at, ok in self.outcomes if ok and at > t)

    async def reached(self, n: int, since: float) -> bool:
        return self.successes_after(since) >= n


async def run_load(client: Client, tenant: str, load: Load, stop: asyncio.Event) -> None:
    i = 0
    while not stop.is_set():
        i += 1
        key = f"k{i % 50}"
        try:
            stored = await client.call(
                tenant, "cache", "set", SetRequest(key=key, raw=str(i).encode()), SetResponse
            )
            got = await client.call(tenant, "cache", "get", GetRequest(key=key), GetResponse)
            ok = stored.stored and got.found and got.raw == str(i).encode()
            load.outcomes.append((time.monotonic(), ok))
        except ServiceError as exc:
            load.outcomes.append((time.monotonic(), False))
            load.errors[exc.code] = load.errors.get(exc.code, 0) + 1
            await asyncio.sleep(0.02)  # no responders answers at once: don't spin


def kill_and_start_later(server: EmbeddedNats) -> str:
    """SIGKILL, one second with no server at all, then start on the same port and store."""
    server.kill()
    time.sleep(DOWN_SECONDS)
    return server.start()


@pytest.mark.parametrize(
    "restart",
    [
        pytest.param(EmbeddedNats.restart, id="graceful"),
        pytest.param(kill_and_start_later, id="kill-9"),
    ],
)
async def test_cache_worker_serves_again_after_nats_restart_without_restarting(
    nats_factory: NatsFactory, valkey: EmbeddedValkey, restart: Callable[[EmbeddedNats], str]
) -> None:
    """Restarting nats-server under load: the same worker reconnects and every request after
    the first success is answered."""
    server = nats_factory()
    tenant = "t" + uuid.uuid4().hex[:12]
    load, stop = Load(), asyncio.Event()
    caller = await nats.connect(
        server.url,
        name="pytest-load",
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.1,
        connect_timeout=5,
    )
    try:
        async with running_worker([cache.component], server.url, redis_url=valkey.url) as worker:
            assert worker.nc is not None
            client = Client(caller, timeout=CALL_TIMEOUT)
            loop = asyncio.create_task(run_load(client, tenant, load, stop))
            await eventually(
                lambda: load.reached(20, since=0),
                timeout=WAIT,
                what="20 round trips before the restart",
            )
            went_down = time.monotonic()
            await asyncio.to_thread(restart, server)
            came_back = time.monotonic()
            await eventually(
                lambda: load.reached(50, since=came_back),
                timeout=WAIT,
                what="50 round trips after the restart",
            )
            stop.set()
            await loop
            reconnects = worker.nc.stats["reconnects"]
            ping = await caller.request(f"$SRV.PING.{service_name('cache')}", b"", timeout=5)

        first_ok = min(at for at, ok in load.outcomes if ok and at > came_back)
        failed_after_recovery = [at for at, ok in load.outcomes if not ok and at > first_ok]
        assert failed_after_recovery == []
        assert reconnects >= 1
        assert b"aifleet-cache" in ping.data  # still discoverable over micro after reconnecting
        failed = sum(1 for _, ok in load.outcomes if not ok)
        print(
            f"\nnats restart took {came_back - went_down:.2f}s; first success"
            f" {first_ok - came_back:.2f}s after it was back ({first_ok - went_down:.2f}s outage);"
            f" failed round trips {failed} {load.errors}; ok after {load.successes_after(first_ok)}"
        )
    finally:
        stop.set()
        await caller.close()
