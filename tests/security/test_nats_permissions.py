"""The tenant-permissions example of nats-server.conf isolates tenants on a real nats-server.

The block between the markers is uncommented exactly as an operator would do it, so what the
shipped file documents is what is proven: a tenant reaches its own subjects and its own reply
inbox, nothing else. "Nothing reaches" is proven with an ordered control message: the probe is
sent first, an allowed message after it on the same connection, and NATS keeps per-connection
order, so once the control message has arrived the probe would have arrived before it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeoutError

from aifleet.embedded import EmbeddedNats

CONF = Path(__file__).resolve().parents[2] / "nats-server.conf"
BEGIN = "# --- tenant-permissions example: begin ---"
END = "# --- tenant-permissions example: end ---"
PASSWORDS = {
    "fleet": "fleet-example-password",
    "tenant-a": "tenant-a-example-password",
    "tenant-b": "tenant-b-example-password",
}
INBOX_PREFIXES = {"fleet": "_INBOX", "tenant-a": "_INBOX_a", "tenant-b": "_INBOX_b"}
WAIT = 2.0  # seconds; only ever waited in full when a test is about to fail
DENIED = 0.3  # seconds a request to a forbidden subject is given before it counts as unanswered


def config_with_example_enabled(text: str) -> str:
    """The config file with the leading "# " stripped from every line between the markers."""
    lines = text.splitlines()
    begin, end = lines.index(BEGIN), lines.index(END)
    example = lines[begin + 1 : end]
    assert example, "the tenant-permissions example is empty"
    bad = [line for line in example if not line.startswith("# ")]
    assert not bad, f"example lines not prefixed with '# ': {bad}"
    return "\n".join([*lines[:begin], *(line[2:] for line in example), *lines[end + 1 :]]) + "\n"


@dataclass
class Conn:
    """A client connection plus the asynchronous errors the server reported to it."""

    nc: NATS
    errors: list[Exception] = field(default_factory=list)

    def violations(self) -> list[str]:
        """Permission violations, lower-cased as nats-py reports them."""
        return [str(e).lower() for e in self.errors if "permissions violation" in str(e).lower()]


Connect = Callable[[str], Awaitable[Conn]]


async def settle(nc: NATS) -> None:
    """Return once the server has processed everything this client sent so far.

    nats-py 2.16's flush() writes its PING straight to the socket, ahead of commands still in
    the client's write buffer, so its PONG alone does not prove earlier SUB/PUB were processed.
    While the first flush waits, the writer task sends the buffer; the second PING follows it.
    """
    await nc.flush()
    await nc.flush()


@pytest.fixture(scope="module")
def secured_nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedNats]:
    """A nats-server running nats-server.conf with the tenant example uncommented."""
    workdir = tmp_path_factory.mktemp("nats-secured")
    config = workdir / "nats-server.conf"
    config.write_text(config_with_example_enabled(CONF.read_text()))
    server = EmbeddedNats(workdir / "store", config=config)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def connect(secured_nats: EmbeddedNats) -> AsyncIterator[Connect]:
    """Open connections as a configured user (with its inbox prefix); all closed afterwards."""
    opened: list[Conn] = []

    async def _connect(user: str) -> Conn:
        conn = Conn(nc=NATS())

        async def record(exc: Exception) -> None:
            conn.errors.append(exc)

        await conn.nc.connect(
            secured_nats.url,
            user=user,
            password=PASSWORDS[user],
            inbox_prefix=INBOX_PREFIXES[user],
            error_cb=record,
            allow_reconnect=False,
            name=f"security-{user}",
        )
        opened.append(conn)
        return conn

    yield _connect
    for conn in opened:
        await conn.nc.close()


def test_shipped_config_keeps_the_example_commented_out() -> None:
    """The shipped file defines no accounts; uncommenting the example defines them."""
    text = CONF.read_text()
    live = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    assert not any("accounts" in line for line in live)
    assert "accounts {" in config_with_example_enabled(text).splitlines()


@pytest.mark.parametrize(
    "credentials",
    [
        {},
        {"user": "tenant-a", "password": "wrong"},
        {"user": "tenant-a", "password": "tenant-b-example-password"},
    ],
    ids=["anonymous", "wrong-password", "other-tenants-password"],
)
async def test_clients_without_valid_credentials_are_refused(
    secured_nats: EmbeddedNats, credentials: dict[str, str]
) -> None:
    """With the accounts defined, no client connects without its own user's password."""

    async def quiet(exc: Exception) -> None:
        pass

    with pytest.raises(nats.errors.Error, match="Authorization Violation"):
        await nats.connect(
            secured_nats.url,
            allow_reconnect=False,
            max_reconnect_attempts=0,
            connect_timeout=2,
            error_cb=quiet,
            **credentials,
        )


@pytest.mark.parametrize(
    ("pattern", "probe"),
    [
        ("ai.v1.b.>", "ai.v1.b.evt.cache.updated"),
        ("ai.v1.b.evt.>", "ai.v1.b.evt.cache.updated"),
        ("ai.v1.*.evt.>", "ai.v1.b.evt.cache.updated"),
        ("ai.v1.a.req.>", "ai.v1.a.req.cache.get"),
        ("_INBOX.>", "_INBOX.fleetrequester.1"),
        ("_INBOX_b.>", "_INBOX_b.requester.1"),
        (">", "ai.v1.b.req.cache.get"),
    ],
)
async def test_tenant_cannot_subscribe_outside_its_events_and_inbox(
    connect: Connect, pattern: str, probe: str
) -> None:
    """A forbidden subscription is reported as a violation and receives nothing."""
    fleet, tenant = await connect("fleet"), await connect("tenant-a")
    forbidden = await tenant.nc.subscribe(pattern)
    control = await tenant.nc.subscribe("ai.v1.a.evt.control")
    await settle(tenant.nc)

    for _ in range(3):
        await fleet.nc.publish(probe, b"secret")
    await fleet.nc.publish("ai.v1.a.evt.control", b"control")
    await settle(fleet.nc)

    assert (await control.next_msg(timeout=WAIT)).data == b"control"
    assert forbidden.pending_msgs == 0
    assert tenant.violations() == [
        f'nats: permissions violation for subscription to "{pattern}"'.lower()
    ]


@pytest.mark.parametrize(
    "subject",
    [
        "ai.v1.b.req.cache.get",  # a request as tenant b
        "ai.v1.b.job.ingest.run",  # a job as tenant b
        "ai.v1.a.evt.cache.updated",  # a forged event of its own tenant
        "_INBOX_b.requester.1",  # a forged reply into tenant b's inbox
        "$JS.API.STREAM.LIST",  # the JetStream API
    ],
)
async def test_tenant_cannot_publish_outside_its_requests_and_jobs(
    connect: Connect, subject: str
) -> None:
    """A forbidden publish is reported as a violation and never reaches any subscriber."""
    fleet, tenant = await connect("fleet"), await connect("tenant-a")
    everything = await fleet.nc.subscribe(">")
    await settle(fleet.nc)

    await tenant.nc.publish(subject, b"forged")
    await tenant.nc.publish("ai.v1.a.req.cache.get", b"control")
    await settle(tenant.nc)

    first = await everything.next_msg(timeout=WAIT)
    assert (first.subject, first.data) == ("ai.v1.a.req.cache.get", b"control")
    assert everything.pending_msgs == 0
    assert tenant.violations() == [
        f'nats: permissions violation for publish to "{subject}"'.lower()
    ]


async def test_tenant_request_under_other_tenant_gets_no_reply(connect: Connect) -> None:
    """A request as tenant b, answered by a live responder, never reaches it."""
    fleet, tenant = await connect("fleet"), await connect("tenant-a")
    received: list[Msg] = []

    async def respond(msg: Msg) -> None:
        received.append(msg)
        await msg.respond(b"tenant b data")

    await fleet.nc.subscribe("ai.v1.b.req.cache.get", queue="cache", cb=respond)
    await settle(fleet.nc)

    with pytest.raises(NatsTimeoutError):
        await tenant.nc.request("ai.v1.b.req.cache.get", b"{}", timeout=DENIED)
    assert received == []
    assert len(tenant.violations()) == 1


async def test_tenant_request_reply_on_own_subject(connect: Connect) -> None:
    """Tenant a gets the fleet responder's reply, delivered on its private inbox prefix."""
    fleet, tenant = await connect("fleet"), await connect("tenant-a")
    reply_subjects: list[str] = []

    async def respond(msg: Msg) -> None:
        reply_subjects.append(msg.reply)
        await msg.respond(b"hit:" + msg.data)

    await fleet.nc.subscribe("ai.v1.a.req.cache.get", queue="cache", cb=respond)
    await settle(fleet.nc)

    replies = [
        await tenant.nc.request("ai.v1.a.req.cache.get", f"k{i}".encode(), timeout=WAIT)
        for i in range(3)
    ]
    assert [r.data for r in replies] == [b"hit:k0", b"hit:k1", b"hit:k2"]
    assert len(reply_subjects) == 3
    assert all(s.startswith("_INBOX_a.") for s in reply_subjects), reply_subjects
    assert tenant.errors == []


async def test_tenant_receives_own_events_only(connect: Connect) -> None:
    """A subscription to ai.v1.a.evt.> gets every event of tenant a and none of tenant b."""
    fleet, tenant = await connect("fleet"), await connect("tenant-a")
    events = await tenant.nc.subscribe("ai.v1.a.evt.>")
    await settle(tenant.nc)

    for i in range(3):
        await fleet.nc.publish(f"ai.v1.b.evt.cache.updated.{i}", b"b")
        await fleet.nc.publish(f"ai.v1.a.evt.cache.updated.{i}", b"a")
    await fleet.nc.publish("ai.v1.a.evt.control", b"end")
    await settle(fleet.nc)

    got = [await events.next_msg(timeout=WAIT) for _ in range(4)]
    assert [m.subject for m in got] == [
        "ai.v1.a.evt.cache.updated.0",
        "ai.v1.a.evt.cache.updated.1",
        "ai.v1.a.evt.cache.updated.2",
        "ai.v1.a.evt.control",
    ]
    assert events.pending_msgs == 0
    assert tenant.errors == []


async def test_tenant_publishes_jobs_to_jetstream_only_under_own_tenant(connect: Connect) -> None:
    """Tenant a's job is stored and acked on its inbox; a job as tenant b is never stored."""
    fleet, tenant = await connect("fleet"), await connect("tenant-a")
    fleet_js = fleet.nc.jetstream()
    await fleet_js.add_stream(name="SECURITY_JOBS", subjects=["ai.v1.*.job.>"])
    try:
        tenant_js = tenant.nc.jetstream(timeout=WAIT)
        ack = await tenant_js.publish(
            "ai.v1.a.job.ingest.run", b"{}", headers={"Nats-Msg-Id": "job-a-1"}
        )
        assert (ack.stream, ack.seq) == ("SECURITY_JOBS", 1)

        with pytest.raises(NatsTimeoutError):
            await tenant_js.publish("ai.v1.b.job.ingest.run", b"{}", timeout=DENIED)
        with pytest.raises(NatsTimeoutError):
            await tenant.nc.request("$JS.API.STREAM.PURGE.SECURITY_JOBS", b"", timeout=DENIED)

        info = await fleet_js.stream_info("SECURITY_JOBS")
        assert info.state.messages == 1
        stored = await fleet_js.get_msg("SECURITY_JOBS", seq=1)
        assert stored.subject == "ai.v1.a.job.ingest.run"
        assert len(tenant.violations()) == 2
    finally:
        await fleet_js.delete_stream("SECURITY_JOBS")


async def test_tenants_cannot_read_each_others_replies(connect: Connect) -> None:
    """While tenant b's request is answered, tenant a gets neither the request nor the reply."""
    fleet, tenant_a, tenant_b = (
        await connect("fleet"),
        await connect("tenant-a"),
        await connect("tenant-b"),
    )

    async def respond(msg: Msg) -> None:
        await msg.respond(b"b's secret")

    await fleet.nc.subscribe("ai.v1.b.req.cache.get", cb=respond)
    await settle(fleet.nc)
    snoops = [await tenant_a.nc.subscribe(p) for p in ("_INBOX_b.>", "_INBOX.>", "ai.v1.b.>")]
    control = await tenant_a.nc.subscribe("ai.v1.a.evt.control")
    await settle(tenant_a.nc)

    reply = await tenant_b.nc.request("ai.v1.b.req.cache.get", b"{}", timeout=WAIT)
    assert reply.data == b"b's secret"
    await fleet.nc.publish("ai.v1.a.evt.control", b"control")
    await settle(fleet.nc)

    assert (await control.next_msg(timeout=WAIT)).data == b"control"
    assert [s.pending_msgs for s in snoops] == [0, 0, 0]
    assert len(tenant_a.violations()) == 3
    assert tenant_b.errors == []
