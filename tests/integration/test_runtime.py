"""The worker runtime, exercised through the echo test component on a real nats-server.

Discovery and honest stats, concurrency and its bound, streaming, error mapping without leaks,
deadlines, body limits, the client's mapping of NATS failures, and configuration errors.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from pydantic import ValidationError

from aifleet.embedded import EmbeddedNats, EmbeddedValkey, free_port
from schemas.codec import JSON_CODEC, MSGPACK_CODEC
from schemas.errors import (
    BadRequest,
    DeadlineExceeded,
    Internal,
    PayloadTooLarge,
    Unavailable,
)
from subjects import (
    HEADER_CONTENT_TYPE,
    HEADER_ERROR,
    HEADER_ERROR_CODE,
    HEADER_STREAM_END,
    HEADER_STREAM_SEQ,
    HEADER_TIMEOUT_MS,
    request_subject,
)
from tests.support import echo
from tests.support.fleet import running_worker
from tests.support.testkit_pb2 import EchoReply, EchoRequest
from workers.runtime.client import Client, raise_for_error
from workers.runtime.config import Settings
from workers.runtime.worker import Worker

REPO = Path(__file__).resolve().parents[2]
SECRET = "secret internal detail"


@pytest.fixture
async def worker(nats_server: EmbeddedNats) -> AsyncIterator[Worker]:
    async with running_worker([echo.component], nats_server.url) as w:
        yield w


@pytest.fixture
def tenant() -> str:
    return "r" + uuid.uuid4().hex[:16]


@pytest.fixture
def client(nc: NATS) -> Client:
    return Client(nc, timeout=5.0)


async def echo_json(nc: NATS, tenant: str, body: dict[str, Any], **headers: str) -> Msg:
    """A request as any client sends it: JSON, no Content-Type."""
    return await nc.request(
        request_subject(tenant, "echo", "echo"),
        json.dumps(body).encode(),
        timeout=5,
        headers=dict(headers) or None,
    )


def error_reply(msg: Msg) -> tuple[str, dict[str, Any]]:
    """(status header, decoded JSON Error body) of an error reply."""
    headers = msg.headers or {}
    assert HEADER_ERROR_CODE in headers, (headers, msg.data[:200])
    return headers[HEADER_ERROR_CODE], json.loads(msg.data)


def no_secret(msg: Msg) -> bool:
    text = msg.data.decode(errors="replace") + json.dumps(msg.headers or {})
    return SECRET not in text and "RuntimeError" not in text and "Traceback" not in text


# -- micro discovery ------------------------------------------------------------------------


async def srv(nc: NATS, subject: str) -> dict[str, Any]:
    reply = await nc.request(subject, b"", timeout=2)
    data: dict[str, Any] = json.loads(reply.data)
    return data


async def test_ping_finds_the_component_by_name_and_by_id(worker: Worker, nc: NATS) -> None:
    """`$SRV.PING`, `$SRV.PING.aifleet-echo` and `$SRV.PING.aifleet-echo.<id>` all answer."""
    service_id = worker.micro[0].id
    by_name = await srv(nc, "$SRV.PING.aifleet-echo")
    by_id = await srv(nc, f"$SRV.PING.aifleet-echo.{service_id}")
    for ping in (by_name, by_id):
        assert ping["type"] == "io.nats.micro.v1.ping_response"
        assert (ping["name"], ping["id"]) == ("aifleet-echo", service_id)
        assert ping["version"]
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox)
    await nc.publish("$SRV.PING", b"", reply=inbox)
    seen = []
    while True:
        seen.append(json.loads((await sub.next_msg(timeout=2)).data))
        if any(p["id"] == service_id for p in seen):
            break
    await sub.unsubscribe()


async def test_info_lists_every_endpoint_with_its_subject(worker: Worker, nc: NATS) -> None:
    """`$SRV.INFO.aifleet-echo` describes both rpcs, their subjects and queue group."""
    info = await srv(nc, "$SRV.INFO.aifleet-echo")
    assert info["type"] == "io.nats.micro.v1.info_response"
    assert info["description"] == "test echo"
    assert info["metadata"]["component"] == "echo"
    endpoints = {ep["name"]: ep for ep in info["endpoints"]}
    assert set(endpoints) == {"echo", "echo_stream"}
    assert endpoints["echo"]["subject"] == "ai.v1.*.req.echo.echo"
    assert endpoints["echo"]["queue_group"] == "echo"
    assert endpoints["echo"]["metadata"]["template"] == "ai.v1.{tenant}.req.echo.echo"
    assert endpoints["echo"]["metadata"]["request"] == "aifleet.testkit.EchoRequest"
    assert endpoints["echo_stream"]["metadata"]["streaming"] == "true"
    assert endpoints["echo"]["metadata"]["streaming"] == "false"


async def test_stats_are_honest(worker: Worker, nc: NATS, client: Client, tenant: str) -> None:
    """Requests, errors, the last error (without internals) and real processing time."""
    service_id = worker.micro[0].id
    for _ in range(3):
        await client.call(tenant, "echo", "echo", EchoRequest(sleep_seconds=0.05), EchoReply)
    with pytest.raises(Internal):
        await client.call(tenant, "echo", "echo", EchoRequest(crash=True), EchoReply)

    stats = await srv(nc, f"$SRV.STATS.aifleet-echo.{service_id}")
    assert stats["type"] == "io.nats.micro.v1.stats_response"
    assert stats["started"].endswith("Z")
    endpoints = {ep["name"]: ep for ep in stats["endpoints"]}
    ep = endpoints["echo"]
    assert (ep["num_requests"], ep["num_errors"]) == (4, 1)
    assert ep["last_error"].startswith("500")
    assert SECRET not in ep["last_error"]
    assert ep["processing_time"] >= 3 * 50_000_000  # ns: the handlers' sleeps are counted
    assert ep["average_processing_time"] == ep["processing_time"] // 4
    assert endpoints["echo_stream"]["num_requests"] == 0

    await client.call(tenant, "echo", "echo", EchoRequest(sleep_seconds=0.05), EchoReply)
    later = await srv(nc, "$SRV.STATS.aifleet-echo")
    ep_later = next(e for e in later["endpoints"] if e["name"] == "echo")
    assert ep_later["num_requests"] == 5
    assert ep_later["processing_time"] >= ep["processing_time"] + 50_000_000


async def test_stats_count_a_bad_request_as_an_error(worker: Worker, nc: NATS, tenant: str) -> None:
    """A request refused at decoding is a request and an error, with its status."""
    reply = await nc.request(request_subject(tenant, "echo", "echo"), b"{nope", timeout=5)
    assert error_reply(reply)[0] == "400"
    stats = await srv(nc, "$SRV.STATS.aifleet-echo")
    ep = next(e for e in stats["endpoints"] if e["name"] == "echo")
    assert (ep["num_requests"], ep["num_errors"]) == (1, 1)
    assert ep["last_error"].startswith("400")


# -- concurrency ----------------------------------------------------------------------------


async def test_handlers_run_concurrently(worker: Worker, client: Client, tenant: str) -> None:
    """10 requests of 0.2 s each finish together, not one after another (10 x 0.2 s = 2 s)."""
    started = time.perf_counter()
    replies = await asyncio.gather(
        *(
            client.call(
                tenant, "echo", "echo", EchoRequest(text=str(i), sleep_seconds=0.2), EchoReply
            )
            for i in range(10)
        )
    )
    elapsed = time.perf_counter() - started
    assert sorted(r.text for r in replies) == sorted(str(i) for i in range(10))
    assert elapsed < 1.0, elapsed


async def test_concurrency_bound_holds(nats_server: EmbeddedNats, nc: NATS, tenant: str) -> None:
    """With concurrency=2, at most 2 handlers run at once: 4 x 0.2 s take at least 0.4 s."""
    async with running_worker([echo.component], nats_server.url, concurrency=2) as worker:
        server = worker.servers[0]
        client = Client(nc, timeout=5.0)
        peak = 0

        async def watch() -> None:
            nonlocal peak
            while True:
                peak = max(peak, server.inflight)
                await asyncio.sleep(0.01)

        watcher = asyncio.create_task(watch())
        started = time.perf_counter()
        await asyncio.gather(
            *(
                client.call(tenant, "echo", "echo", EchoRequest(sleep_seconds=0.2), EchoReply)
                for _ in range(4)
            )
        )
        elapsed = time.perf_counter() - started
        watcher.cancel()
    assert elapsed >= 0.4, elapsed
    assert peak == 2


# -- streaming ------------------------------------------------------------------------------


async def test_stream_replies_arrive_in_order_and_end(
    worker: Worker, client: Client, tenant: str
) -> None:
    """One message per item with Aifleet-Stream-Seq 1..n, then an empty end-of-stream message."""
    req = EchoRequest(items=["a", "b", "c"])
    raw = [
        msg
        async for msg in client.stream_raw(
            request_subject(tenant, "echo", "echo_stream"),
            req.SerializeToString(),
            {HEADER_CONTENT_TYPE: "application/protobuf"},
            5.0,
        )
    ]
    assert [(m.headers or {}).get(HEADER_STREAM_SEQ) for m in raw] == ["1", "2", "3", "4"]
    assert [EchoReply.FromString(m.data).text for m in raw[:3]] == ["a", "b", "c"]
    assert [(m.headers or {}).get(HEADER_STREAM_END) for m in raw] == [None, None, None, "1"]
    assert raw[-1].data == b""
    assert all(HEADER_ERROR_CODE not in (m.headers or {}) for m in raw)

    typed = [r async for r in client.stream(tenant, "echo", "echo_stream", req, EchoReply)]
    assert [(r.text, r.tenant) for r in typed] == [("a", tenant), ("b", tenant), ("c", tenant)]


async def test_stream_uses_the_request_encoding(worker: Worker, nc: NATS, tenant: str) -> None:
    """A msgpack stream request gets msgpack items, each labelled with its Content-Type."""
    client = Client(nc, codec=MSGPACK_CODEC, timeout=5.0)
    req = EchoRequest(items=["x", "y"])
    raw = [
        m
        async for m in client.stream_raw(
            request_subject(tenant, "echo", "echo_stream"),
            MSGPACK_CODEC.encode(req),
            {HEADER_CONTENT_TYPE: "application/msgpack"},
            5.0,
        )
    ]
    assert {(m.headers or {}).get(HEADER_CONTENT_TYPE) for m in raw} == {"application/msgpack"}
    assert [MSGPACK_CODEC.decode(EchoReply, m.data).text for m in raw[:2]] == ["x", "y"]


async def test_empty_stream_is_just_the_end(worker: Worker, client: Client, tenant: str) -> None:
    """No items: a single end-of-stream message with sequence 1."""
    items = [
        r async for r in client.stream(tenant, "echo", "echo_stream", EchoRequest(), EchoReply)
    ]
    assert items == []


async def test_error_mid_stream_ends_the_stream_with_an_error(
    worker: Worker, client: Client, tenant: str
) -> None:
    """Items already sent stay sent; the last message carries the 500 and Stream-End."""
    req = EchoRequest(items=["a", "b"], crash=True)
    raw = [
        m
        async for m in client.stream_raw(
            request_subject(tenant, "echo", "echo_stream"),
            req.SerializeToString(),
            {HEADER_CONTENT_TYPE: "application/protobuf"},
            5.0,
        )
    ]
    assert len(raw) == 3
    assert [EchoReply.FromString(m.data).text for m in raw[:2]] == ["a", "b"]
    last = raw[-1].headers or {}
    assert (last.get(HEADER_ERROR_CODE), last.get(HEADER_STREAM_END)) == ("500", "1")
    assert [(m.headers or {}).get(HEADER_STREAM_SEQ) for m in raw] == ["1", "2", "3"]
    assert all(no_secret(m) for m in raw)

    received: list[str] = []

    async def consume() -> None:
        async for item in client.stream(tenant, "echo", "echo_stream", req, EchoReply):
            received.append(item.text)

    with pytest.raises(Internal) as raised:
        await consume()
    assert received == ["a", "b"]
    assert SECRET not in raised.value.message


# -- errors ---------------------------------------------------------------------------------


async def test_handler_exception_is_500_without_leaking(
    worker: Worker, nc: NATS, client: Client, tenant: str
) -> None:
    """An unexpected exception answers 500 INTERNAL; its text never reaches the caller."""
    reply = await echo_json(nc, tenant, {"crash": True})
    status, body = error_reply(reply)
    assert status == "500"
    assert (body["code"], body["retryable"]) == ("INTERNAL", False)
    assert (reply.headers or {})[HEADER_ERROR] == body["message"]
    assert no_secret(reply)
    with pytest.raises(Internal) as raised:
        await client.call(tenant, "echo", "echo", EchoRequest(crash=True), EchoReply)
    assert raised.value.status == 500
    assert SECRET not in str(raised.value)


async def test_error_reply_uses_the_request_encoding(worker: Worker, nc: NATS, tenant: str) -> None:
    """A msgpack request gets its Error body in msgpack, labelled so."""
    reply = await nc.request(
        request_subject(tenant, "echo", "echo"),
        MSGPACK_CODEC.encode(EchoRequest(crash=True)),
        timeout=5,
        headers={HEADER_CONTENT_TYPE: "application/msgpack"},
    )
    headers = reply.headers or {}
    assert headers[HEADER_ERROR_CODE] == "500"
    assert headers[HEADER_CONTENT_TYPE] == "application/msgpack"
    assert msgpack.unpackb(reply.data)["code"] == "INTERNAL"


async def test_worker_keeps_serving_after_a_crash(
    worker: Worker, client: Client, tenant: str
) -> None:
    """A crashing handler takes nothing else down."""
    with pytest.raises(Internal):
        await client.call(tenant, "echo", "echo", EchoRequest(crash=True), EchoReply)
    reply = await client.call(tenant, "echo", "echo", EchoRequest(text="still"), EchoReply)
    assert reply.text == "still"


async def test_deadline_header_is_enforced_with_504(worker: Worker, nc: NATS, tenant: str) -> None:
    """Aifleet-Timeout-Ms: 100 and a 2 s handler → 504 DEADLINE_EXCEEDED after ~0.1 s."""
    started = time.perf_counter()
    reply = await echo_json(nc, tenant, {"sleep_seconds": 2}, **{HEADER_TIMEOUT_MS: "100"})
    elapsed = time.perf_counter() - started
    status, body = error_reply(reply)
    assert status == "504"
    assert (body["code"], body["retryable"]) == ("DEADLINE_EXCEEDED", True)
    assert elapsed < 1.5, elapsed


async def test_client_raises_the_workers_deadline_error(
    worker: Worker, client: Client, tenant: str
) -> None:
    """Through the client the worker's 504 becomes DeadlineExceeded."""
    with pytest.raises(DeadlineExceeded) as raised:
        await client.call(
            tenant,
            "echo",
            "echo",
            EchoRequest(sleep_seconds=2),
            EchoReply,
            headers={HEADER_TIMEOUT_MS: "100"},
        )
    assert raised.value.status == 504
    assert raised.value.retryable is True


async def test_request_over_max_request_bytes_is_413(
    nats_server: EmbeddedNats, nc: NATS, tenant: str
) -> None:
    """A body over the worker's limit is refused with 413; one under it is served."""
    async with running_worker([echo.component], nats_server.url, max_request_bytes=1024):
        client = Client(nc, codec=JSON_CODEC, timeout=5.0)
        with pytest.raises(PayloadTooLarge) as raised:
            await client.call(tenant, "echo", "echo", EchoRequest(text="x" * 2000), EchoReply)
        assert raised.value.status == 413
        assert raised.value.details == {"limit_bytes": 1024}
        ok = await client.call(tenant, "echo", "echo", EchoRequest(text="x" * 500), EchoReply)
        assert ok.text == "x" * 500


async def test_bad_body_maps_to_bad_request_in_the_client(
    worker: Worker, nc: NATS, tenant: str
) -> None:
    """The worker's 400 names the offending field and comes back as BadRequest."""
    subject = request_subject(tenant, "echo", "echo")
    reply = await nc.request(subject, b'{"bogus": 1}', timeout=5)
    status, body = error_reply(reply)
    assert (status, body["code"]) == ("400", "INVALID_ARGUMENT")
    assert "bogus" in body["message"]
    with pytest.raises(BadRequest) as raised:
        raise_for_error(reply, JSON_CODEC)
    assert raised.value.message == body["message"]


async def test_tenant_comes_from_the_subject(worker: Worker, nc: NATS, tenant: str) -> None:
    """Whatever headers say, the handler sees the subject's tenant."""
    reply = await echo_json(nc, tenant, {"text": "t"}, **{"X-Tenant-ID": "someone-else"})
    assert json.loads(reply.data)["tenant"] == tenant


# -- the client -----------------------------------------------------------------------------


async def test_client_maps_no_responders_to_unavailable(client: Client, tenant: str) -> None:
    """Nobody serving the subject → 503 Unavailable, retryable."""
    with pytest.raises(Unavailable) as raised:
        await client.call(tenant, "nowhere", "echo", EchoRequest(), EchoReply, timeout=2)
    assert (raised.value.status, raised.value.retryable) == (503, True)


async def test_client_stream_maps_no_responders_to_unavailable(client: Client, tenant: str) -> None:
    """A stream to nobody fails fast with Unavailable, not a timeout."""
    started = time.perf_counter()
    with pytest.raises(Unavailable):
        async for _ in client.stream(tenant, "nowhere", "x", EchoRequest(), EchoReply, timeout=2):
            pass
    assert time.perf_counter() - started < 1.5


async def test_client_maps_a_timeout_to_deadline_exceeded(
    nc: NATS, client: Client, tenant: str
) -> None:
    """A responder that never answers → 504 DeadlineExceeded after the client's timeout."""
    silent = await nc.subscribe(request_subject(tenant, "silent", "op"))
    try:
        started = time.perf_counter()
        with pytest.raises(DeadlineExceeded) as raised:
            await client.call(tenant, "silent", "op", EchoRequest(), EchoReply, timeout=0.2)
        assert 0.15 <= time.perf_counter() - started < 1.5
        assert (raised.value.status, raised.value.retryable) == (504, True)
    finally:
        await silent.unsubscribe()


async def test_client_refuses_a_deadline_already_passed(client: Client, tenant: str) -> None:
    """A zero timeout is a DeadlineExceeded without sending anything."""
    with pytest.raises(DeadlineExceeded):
        await client.call(tenant, "echo", "echo", EchoRequest(), EchoReply, timeout=0)


# -- configuration --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("AIFLEET_CONCURRENCY", "0"),
        ("AIFLEET_CONCURRENCY", "many"),
        ("AIFLEET_REQUEST_TIMEOUT", "0"),
        ("AIFLEET_MAX_REQUEST_BYTES", "10"),
        ("AIFLEET_DRAIN_TIMEOUT", "-1"),
        ("AIFLEET_JOB_MAX_DELIVER", "0"),
        ("AIFLEET_JOB_BACKOFF", "[-1]"),
        ("AIFLEET_JOB_BACKOFF", "[]"),
        ("AIFLEET_LOG_LEVEL", "LOUD"),
        ("AIFLEET_LOG_FORMAT", "xml"),
    ],
)
def test_invalid_environment_values_raise(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    """Settings refuse an invalid variable instead of running with a surprise."""
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError):
        Settings()


def test_valid_environment_values_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    """AIFLEET_* and the usual NATS_URL are read; the log level is case-insensitive."""
    monkeypatch.setenv("AIFLEET_CONCURRENCY", "3")
    monkeypatch.setenv("AIFLEET_LOG_LEVEL", "debug")
    monkeypatch.setenv("NATS_URL", "nats://example:4222")
    s = Settings()
    assert (s.concurrency, s.log_level, s.nats_url) == (3, "DEBUG", "nats://example:4222")


def run_cli(
    *args: str, env: dict[str, str], entry: tuple[str, ...] = ("-m", "aifleet.cli")
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("AIFLEET_")}
    return subprocess.run(
        [sys.executable, *entry, *args],
        env={**clean, **env},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_worker_command_exits_2_naming_an_invalid_runtime_variable(
    nats_server: EmbeddedNats,
) -> None:
    """`aifleet worker cache` with AIFLEET_CONCURRENCY=0 stops at once, naming the variable."""
    done = run_cli("worker", "cache", env={"AIFLEET_CONCURRENCY": "0", "NATS_URL": nats_server.url})
    assert done.returncode == 2, done.stderr[-2000:]
    assert "AIFLEET_CONCURRENCY" in done.stderr
    assert "Traceback" not in done.stderr


def test_worker_command_exits_2_naming_an_invalid_component_variable(
    nats_server: EmbeddedNats, valkey: EmbeddedValkey
) -> None:
    """A component's own setting (AIFLEET_CACHE_MAX_VALUE_BYTES) fails the same clear way."""
    done = run_cli(
        "worker",
        "cache",
        env={
            "AIFLEET_CACHE_MAX_VALUE_BYTES": "lots",
            "NATS_URL": nats_server.url,
            "REDIS_URL": valkey.url,
        },
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert "AIFLEET_CACHE_MAX_VALUE_BYTES" in done.stderr
    assert "Traceback" not in done.stderr


def run_entry_point(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The installed `aifleet` script's entry, reporting whether the full CLI was imported."""
    script = (
        "import sys\nfrom aifleet.launch import main\nsys.argv = ['aifleet', *sys.argv[1:]]\n"
        "try:\n    main()\nexcept SystemExit as exc:\n"
        "    print(exc.code, 'typer' in sys.modules, 'rich' in sys.modules)\n"
    )
    return run_cli(*args, env=env, entry=("-c", script))


def test_worker_entry_point_runs_without_the_interactive_cli(nats_server: EmbeddedNats) -> None:
    """`aifleet worker cache` never imports typer or rich, and names a bad variable (exit 2)."""
    done = run_entry_point("worker", "cache", env={"AIFLEET_CONCURRENCY": "0"})
    assert done.stdout.split() == ["2", "False", "False"], done.stderr[-2000:]
    assert "AIFLEET_CONCURRENCY" in done.stderr
    assert "Traceback" not in done.stderr


def test_worker_entry_point_names_an_unknown_component() -> None:
    """An unknown component name is exit 2 with the known names, before any connection."""
    done = run_entry_point("worker", "cahce", env={})
    assert done.stdout.split()[0] == "2", done.stderr[-2000:]
    assert "cahce" in done.stderr
    assert "Traceback" not in done.stderr


def test_worker_entry_point_unreachable_nats_is_exit_3() -> None:
    """NATS down at start: exit 3 naming the URL, not a traceback."""
    done = run_entry_point(
        "worker",
        "cache",
        env={"NATS_URL": f"nats://127.0.0.1:{free_port()}", "AIFLEET_NATS_CONNECT_TIMEOUT": "1"},
    )
    assert done.stdout.split()[0] == "3", (done.stdout, done.stderr[-2000:])
    assert "Traceback" not in done.stderr


def test_entry_point_hands_everything_else_to_the_full_cli() -> None:
    """`aifleet worker --help` (an option) is the typer CLI's help."""
    done = run_entry_point("worker", "--help", env={})
    assert done.stdout.split()[-3:] == ["0", "True", "True"], done.stderr[-2000:]
    assert "Run components in this process" in done.stdout
