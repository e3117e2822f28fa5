"""Limits: bodies too large or too slow, headers too slow, and per-tenant rates — checked on
raw sockets where an HTTP client would hide what goes over the wire."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from aifleet.embedded import EmbeddedNats
from tests.bridge.conftest import Spy, bridge_settings, serving
from workers.runtime.worker import Worker

LIMIT = 4096


@pytest.fixture
async def limited(nats_server: EmbeddedNats, fleet: Worker) -> AsyncIterator[httpx.AsyncClient]:
    settings = bridge_settings(
        nats_server.url,
        max_body_bytes=LIMIT,
        body_timeout=0.5,
        header_timeout=0.5,
        rate_per_second=5,
        rate_burst=5,
    )
    async with serving(settings) as client:
        yield client


async def connect(client: httpx.AsyncClient) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    url = client.base_url
    assert url.host
    assert url.port
    return await asyncio.open_connection(url.host, url.port)


def head(method: str, path: str, *lines: str) -> bytes:
    text = f"{method} {path} HTTP/1.1\r\nHost: bridge\r\nX-Tenant-ID: limits\r\n"
    return (text + "".join(f"{line}\r\n" for line in lines) + "\r\n").encode()


async def response_of(reader: asyncio.StreamReader, timeout: float = 2.0) -> tuple[int, bytes]:
    """Status and the rest of what the server sent before closing."""
    data = await asyncio.wait_for(reader.read(65536), timeout)
    status = int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/1.1 ") else 0
    return status, data


async def closed_within(reader: asyncio.StreamReader, timeout: float) -> bool:
    """True when the server closes the connection (EOF or reset) within `timeout`."""
    try:
        async with asyncio.timeout(timeout):
            while await reader.read(65536):
                pass
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True
    return True


async def test_declared_oversized_body_is_413_before_it_is_sent(
    limited: httpx.AsyncClient, spy: Callable[[], Any]
) -> None:
    """A Content-Length over the limit is answered 413 (and closed) with no body sent."""
    reader, writer = await connect(limited)
    writer.write(
        head(
            "PUT",
            "/api/v1/cache/keys/k",
            "Content-Type: application/json",
            "Content-Length: 9999999",
        )
    )
    await writer.drain()
    status, data = await response_of(reader)
    writer.close()
    assert status == 413
    assert b"PAYLOAD_TOO_LARGE" in data
    assert b"connection: close" in data.lower()
    seen: Spy = await spy()
    assert seen.subjects == []


async def test_oversized_body_through_a_client_is_413(limited: httpx.AsyncClient) -> None:
    """A plain client sending a large JSON body gets 413 with the limit in the details."""
    response = await limited.put("/api/v1/cache/keys/k", json={"value": "x" * (2 * LIMIT)})
    assert response.status_code == 413
    assert response.json()["details"] == {"limit_bytes": LIMIT}


async def test_chunked_body_is_cut_off_at_the_limit(
    limited: httpx.AsyncClient, spy: Callable[[], Any]
) -> None:
    """A chunked body with no declared length is refused as soon as it passes the limit."""
    reader, writer = await connect(limited)
    writer.write(head("POST", "/api/v1/echo", "Transfer-Encoding: chunked"))
    chunk = b"x" * 1024
    sent = 0
    status = 0
    for _ in range(64):
        writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        await writer.drain()
        sent += len(chunk)
        try:
            status, _ = await response_of(reader, timeout=0.05)
            break
        except TimeoutError:
            continue
    writer.close()
    assert status == 413
    assert sent <= LIMIT + 2 * len(chunk)
    assert (await spy()).subjects == []


async def test_a_body_trickling_in_is_cut_off_with_408(limited: httpx.AsyncClient) -> None:
    """Slowloris on the body: bytes keep coming, but not the whole body within body_timeout."""
    reader, writer = await connect(limited)
    writer.write(head("POST", "/api/v1/echo", "Content-Length: 1000"))
    started = time.monotonic()

    async def trickle() -> None:
        for _ in range(40):
            writer.write(b" ")
            await writer.drain()
            await asyncio.sleep(0.05)

    feeding = asyncio.create_task(trickle())
    status, data = await response_of(reader)
    took = time.monotonic() - started
    feeding.cancel()
    writer.close()
    assert status == 408
    assert b"REQUEST_TIMEOUT" in data
    assert 0.45 <= took < 1.5


async def test_an_overstated_content_length_is_cut_off(limited: httpx.AsyncClient) -> None:
    """A body shorter than its Content-Length (the client then waits) ends in 408, not a hang."""
    reader, writer = await connect(limited)
    writer.write(head("POST", "/api/v1/echo", "Content-Length: 100") + b'{"text": "hi"}')
    await writer.drain()
    status, _ = await response_of(reader)
    writer.close()
    assert status == 408


async def test_headers_trickling_in_are_cut_off(limited: httpx.AsyncClient) -> None:
    """Slowloris on the headers: the connection is closed once header_timeout passes."""
    reader, writer = await connect(limited)
    started = time.monotonic()

    async def trickle() -> None:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: bridge\r\n")
        for _ in range(60):
            writer.write(b"X")
            await writer.drain()
            await asyncio.sleep(0.05)

    feeding = asyncio.create_task(trickle())
    assert await closed_within(reader, 2.0)
    took = time.monotonic() - started
    feeding.cancel()
    writer.close()
    assert 0.45 <= took < 1.5


async def test_a_silent_connection_is_closed(limited: httpx.AsyncClient) -> None:
    """A connection that never sends a request does not hold a slot past header_timeout."""
    reader, writer = await connect(limited)
    assert await closed_within(reader, 2.0)
    writer.close()


async def test_keep_alive_connections_still_work(limited: httpx.AsyncClient) -> None:
    """The header timer does not close a connection between timely requests."""
    for _ in range(3):
        assert (await limited.get("/healthz")).status_code == 200
        await asyncio.sleep(0.3)


async def test_tenant_over_its_rate_gets_429_while_others_succeed(
    limited: httpx.AsyncClient, spy: Callable[[], Any]
) -> None:
    """A flood from one tenant is refused with 429 + Retry-After; another tenant is served."""
    calm_latency: list[float] = []

    async def flood() -> list[httpx.Response]:
        return list(
            await asyncio.gather(
                *(
                    limited.post("/api/v1/echo", json={}, headers={"X-Tenant-ID": "flood"})
                    for _ in range(60)
                )
            )
        )

    async def calm() -> list[int]:
        statuses = []
        for _ in range(4):
            started = time.monotonic()
            response = await limited.post("/api/v1/echo", json={}, headers={"X-Tenant-ID": "calm"})
            calm_latency.append(time.monotonic() - started)
            statuses.append(response.status_code)
        return statuses

    flooded, calm_statuses = await asyncio.gather(flood(), calm())
    limited_ones = [r for r in flooded if r.status_code == 429]
    assert calm_statuses == [200] * 4
    assert sum(r.status_code == 200 for r in flooded) <= 7  # burst of 5, plus what refilled
    assert len(limited_ones) >= 50
    assert limited_ones[0].headers["retry-after"] == "1"
    body = limited_ones[0].json()
    assert (body["code"], body["retryable"]) == ("RATE_LIMITED", True)
    assert 0 < body["details"]["retry_after_ms"] <= 200
    seen: Spy = await spy()
    assert seen.subjects.count("ai.v1.flood.req.echo.echo") <= 7
    print(f"calm tenant p50 during the flood: {statistics.median(calm_latency) * 1000:.1f} ms")


async def test_a_client_ignoring_retry_after_gets_one_rejection_per_delay(
    nats_server: EmbeddedNats, fleet: Worker
) -> None:
    """Each 429 is held `rate_limit_delay` before it is sent: 8 connections retrying at once for
    1 s get at most 8 x (1 s / 0.25 s + 1) answers, however fast they retry."""
    settings = bridge_settings(
        nats_server.url, rate_per_second=1, rate_burst=1, rate_limit_delay=0.25
    )
    async with serving(settings) as client:
        statuses: list[int] = []
        deadline = time.monotonic() + 1.0

        async def loop() -> None:
            while time.monotonic() < deadline:
                started = time.monotonic()
                response = await client.post(
                    "/api/v1/echo", json={}, headers={"X-Tenant-ID": "ignores-retry-after"}
                )
                statuses.append(response.status_code)
                if response.status_code == 429:
                    assert time.monotonic() - started >= 0.25

        await asyncio.gather(*(loop() for _ in range(8)))
    assert statuses.count(429) >= 8
    assert len(statuses) <= 8 * (1 / 0.25 + 1) + 2
