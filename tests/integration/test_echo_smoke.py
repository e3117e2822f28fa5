"""The runtime serves a component end to end (the echo test component)."""

from __future__ import annotations

from aifleet.embedded import EmbeddedNats
from tests.support import echo
from tests.support.fleet import running_worker
from tests.support.testkit_pb2 import EchoReply, EchoRequest
from workers.runtime.client import Client


async def test_echo_round_trips_with_the_subject_tenant(nats_server: EmbeddedNats) -> None:
    """A request is answered by the handler, with the tenant taken from the subject."""
    async with running_worker([echo.component], nats_server.url) as worker:
        assert worker.nc is not None
        reply = await Client(worker.nc).call(
            "acme", "echo", "echo", EchoRequest(text="hi"), EchoReply
        )
    assert (reply.text, reply.tenant) == ("hi", "acme")
