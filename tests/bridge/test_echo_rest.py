"""Unary and streaming rpcs of the echo test component, deadlines, no responders, health."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import httpx

from aifleet.embedded import EmbeddedNats, EmbeddedValkey
from bridge.app import CONNECTION_NAME
from tests.bridge.conftest import bridge_settings, serving
from tests.conftest import NatsFactory
from tests.support.fleet import running_worker
from workers.cache import service as cache
from workers.runtime.worker import Worker


def events(text: str) -> list[tuple[str, Any]]:
    """(event name, decoded data) of each Server-Sent Event in a response body."""
    out = []
    for block in text.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        out.append((fields["event"], json.loads(fields["data"])))
    return out


async def test_echo_returns_the_reply_json_as_is(dev_bridge: httpx.AsyncClient) -> None:
    """The reply is the worker's JSON: fields as in the .proto, tenant from the subject."""
    response = await dev_bridge.post(
        "/api/v1/echo",
        json={"text": "hi", "number": "9007199254740993", "counts": {"a": 2}},
        headers={"X-Tenant-ID": "acme"},
    )
    assert response.status_code == 200
    body = response.json()
    assert (body["text"], body["number"], body["tenant"], body["counts"]) == (
        "hi",
        "9007199254740993",
        "acme",
        {"a": "2"},
    )


async def test_a_crashing_handler_is_a_500_without_leaks(dev_bridge: httpx.AsyncClient) -> None:
    """An unexpected exception in a handler is 500 INTERNAL with nothing of its text."""
    response = await dev_bridge.post("/api/v1/echo", json={"crash": True})
    assert response.status_code == 500
    assert response.json() == {"code": "INTERNAL", "message": "internal error", "retryable": False}


async def test_stream_is_served_as_server_sent_events(dev_bridge: httpx.AsyncClient) -> None:
    """Each reply is a `message` event with its sequence id, and `end` comes last."""
    response = await dev_bridge.post("/api/v1/echo/stream", json={"items": ["a", "b", "c"]})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    got = events(response.text)
    assert [(name, data.get("text")) for name, data in got] == [
        ("message", "a"),
        ("message", "b"),
        ("message", "c"),
        ("end", None),
    ]
    assert "id: 1\n" in response.text


async def test_a_stream_failing_midway_sends_an_error_event(dev_bridge: httpx.AsyncClient) -> None:
    """Replies already sent stay sent; the failure is an `error` event, then `end`."""
    response = await dev_bridge.post("/api/v1/echo/stream", json={"items": ["a"], "crash": True})
    got = events(response.text)
    assert [name for name, _ in got] == ["message", "error", "end"]
    assert got[1][1]["code"] == "INTERNAL"


async def test_stream_errors_before_the_first_event_are_plain_http(
    dev_bridge: httpx.AsyncClient,
) -> None:
    """A stream whose first reply is an error answers with that error's status and JSON."""
    response = await dev_bridge.post("/api/v1/echo/stream", json={"bogus": 1})
    assert response.status_code == 400
    assert response.json()["code"] == "INVALID_ARGUMENT"


def _stream_subs(nats_server: EmbeddedNats) -> int:
    """Reply-inbox subscriptions the bridge's NATS connection holds right now."""
    url = f"{nats_server.monitor_url}/connz?subs=detail&limit=1024"
    conns = httpx.get(url).json()["connections"] or []
    subs = [
        s["subject"]
        for c in conns
        if c.get("name") == CONNECTION_NAME
        for s in c.get("subscriptions_list_detail") or []
    ]
    return sum(1 for s in subs if s.startswith("_INBOX.") and not s.endswith(".*"))


async def test_client_disconnect_stops_the_upstream_stream(
    dev_bridge: httpx.AsyncClient, nats_server: EmbeddedNats
) -> None:
    """Closing the SSE response mid-stream removes the bridge's inbox subscription."""
    before = _stream_subs(nats_server)
    items = [str(i) for i in range(100)]
    async with dev_bridge.stream(
        "POST", "/api/v1/echo/stream", json={"items": items, "sleep_seconds": 0.05}
    ) as response:
        async for line in response.aiter_lines():
            if line.startswith("data:"):
                break
        assert _stream_subs(nats_server) == before + 1
    deadline = time.monotonic() + 2
    while _stream_subs(nats_server) != before and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    assert _stream_subs(nats_server) == before


async def test_a_handler_that_never_answers_is_504_at_the_deadline(
    dev_bridge: httpx.AsyncClient,
) -> None:
    """Aifleet-Timeout-Ms shortens the deadline; the bridge answers 504 when it passes."""
    started = time.monotonic()
    response = await dev_bridge.post(
        "/api/v1/echo", json={"sleep_seconds": 30}, headers={"Aifleet-Timeout-Ms": "300"}
    )
    took = time.monotonic() - started
    assert response.status_code == 504
    assert response.json()["code"] == "DEADLINE_EXCEEDED"
    assert response.json()["retryable"] is True
    # The worker answers a little before the deadline (its safety margin), never after it.
    assert 0.25 <= took < 0.8


async def test_stopped_cache_worker_gives_503_within_100ms(
    nats_factory: NatsFactory, valkey: EmbeddedValkey, tmp_path: Path
) -> None:
    """With no cache instance left, REST calls get 503 UNAVAILABLE at once; /readyz says so."""
    server = nats_factory()
    async with serving(bridge_settings(server.url, components=["cache"])) as client:
        async with running_worker([cache.component], server.url, redis_url=valkey.url):
            assert (await client.get("/api/v1/cache/stats")).status_code == 200
            assert (await client.get("/readyz")).status_code == 200
        took = []
        for _ in range(5):
            started = time.monotonic()
            response = await client.get("/api/v1/cache/stats")
            took.append(time.monotonic() - started)
            assert response.status_code == 503
            assert response.json()["code"] == "UNAVAILABLE"
        assert max(took) < 0.1, took
        ready = await client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["details"]["missing"] == ["cache"]


async def test_healthz_and_readyz(dev_bridge: httpx.AsyncClient, fleet: Worker) -> None:
    """/healthz answers; /readyz is 200 while every configured component has an instance."""
    assert (await dev_bridge.get("/healthz")).json() == {"status": "ok"}
    ready = await dev_bridge.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["components"] == ["cache", "echo"]


async def test_readyz_is_503_before_nats_is_reachable(tmp_path: Path) -> None:
    """A bridge whose NATS is unreachable still serves /healthz, and /readyz and rpcs say 503."""
    async with serving(bridge_settings("nats://127.0.0.1:1"), wait_connected=False) as client:
        assert (await client.get("/healthz")).status_code == 200
        assert (await client.get("/readyz")).status_code == 503
        started = time.monotonic()
        response = await client.post("/api/v1/echo", json={})
        assert response.status_code == 503
        assert time.monotonic() - started < 0.1
