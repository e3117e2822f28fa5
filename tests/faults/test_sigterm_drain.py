"""SIGTERM drains: every request a worker took gets its reply, then the process exits 0.

The worker is a real process (`tests.support.run_worker` with the echo component). Requests
are on the server's side of the wire before the signal (the client settles first), and each
handler sleeps, so all of them are in flight when SIGTERM arrives.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import nats
import pytest
from nats.aio.client import Client as NATS

from aifleet.embedded import EmbeddedNats
from schemas.errors import ServiceError, Unavailable
from tests.conftest import NatsFactory
from tests.faults.conftest import Spawn
from tests.support.testkit_pb2 import EchoReply, EchoRequest
from workers.runtime.client import Client
from workers.runtime.worker import settle

pytestmark = pytest.mark.faults

IN_FLIGHT = 20
HANDLER_SECONDS = 0.5
TIMEOUT = 15.0  # the client's deadline; a drained request is answered long before it


@pytest.fixture
def echo_nats(nats_factory: NatsFactory) -> EmbeddedNats:
    return nats_factory()


@pytest.fixture
async def nc(echo_nats: EmbeddedNats) -> AsyncIterator[NATS]:
    client = await nats.connect(echo_nats.url, name="pytest-caller", connect_timeout=5)
    try:
        yield client
    finally:
        await client.close()


async def test_sigterm_answers_every_in_flight_request_and_exits_zero(
    echo_nats: EmbeddedNats, nc: NATS, spawn_worker: Spawn
) -> None:
    """20 requests in flight at SIGTERM all get their successful reply; exit code 0; then
    no responders."""
    worker = await spawn_worker(
        ["tests.support.echo"], {"NATS_URL": echo_nats.url, "AIFLEET_DRAIN_TIMEOUT": "10"}
    )
    client = Client(nc, timeout=TIMEOUT)
    replied_at: dict[int, float] = {}

    async def call(i: int) -> EchoReply:
        reply = await client.call(
            "drain",
            "echo",
            "echo",
            EchoRequest(text=f"r{i}", sleep_seconds=HANDLER_SECONDS),
            EchoReply,
        )
        replied_at[i] = time.monotonic()
        return reply

    calls = [asyncio.create_task(call(i)) for i in range(IN_FLIGHT)]
    await asyncio.sleep(0)  # every call task has written its request
    await settle(nc)  # ... and the server has routed them all to the worker
    signalled_at = time.monotonic()
    worker.terminate()
    results = await asyncio.gather(*calls, return_exceptions=True)
    exit_code = await worker.wait(timeout=TIMEOUT)
    exited_at = time.monotonic()

    failures = [r for r in results if not isinstance(r, EchoReply)]
    assert failures == []
    assert sorted(r.text for r in results if isinstance(r, EchoReply)) == sorted(
        f"r{i}" for i in range(IN_FLIGHT)
    )
    assert len([t for t in replied_at.values() if t > signalled_at]) == IN_FLIGHT
    assert exit_code == 0, worker.log()

    after: list[ServiceError] = []
    for i in range(5):
        try:
            await client.call("drain", "echo", "echo", EchoRequest(text=f"late{i}"), EchoReply)
        except ServiceError as exc:
            after.append(exc)
    assert [type(e) for e in after] == [Unavailable] * 5
    assert all(e.status == 503 and e.retryable for e in after)
    print(
        f"\nSIGTERM → last reply {max(replied_at.values()) - signalled_at:.2f}s,"
        f" exit {exited_at - signalled_at:.2f}s"
    )
