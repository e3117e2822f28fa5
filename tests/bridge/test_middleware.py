"""Every route takes the same ASGI path: middleware added to the bridge app applies to the
rpc routes (unary, streaming, refused) as much as to health and docs."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from google.api import http_pb2
from starlette.middleware.cors import CORSMiddleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from aifleet.embedded import EmbeddedNats
from bridge.app import Bridge, create_app
from bridge.routes import RpcRoutes, _binding
from schemas.registry import rpc
from tests.bridge.conftest import bridge_settings, serving
from workers.runtime.worker import Worker

ORIGIN = "https://console.example"


class Stamp:
    """A pure ASGI middleware that records each path it sees and stamps each response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    seen: list[str] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        Stamp.seen.append(scope["path"])

        async def stamped(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message["headers"], (b"x-stamp", b"1")]
            await send(message)

        await self.app(scope, receive, stamped)


@pytest.fixture
async def wrapped(nats_server: EmbeddedNats, fleet: Worker) -> AsyncIterator[httpx.AsyncClient]:
    """The dev bridge with CORS, gzip and the stamp added after creation, as a user would."""
    settings = bridge_settings(nats_server.url)
    app = create_app(settings)
    app.add_middleware(Stamp)
    app.add_middleware(GZipMiddleware, minimum_size=500)
    app.add_middleware(CORSMiddleware, allow_origins=[ORIGIN], allow_methods=["*"])
    Stamp.seen.clear()
    async with serving(settings, app=app) as client:
        yield client


async def test_cors_applies_to_rpc_routes(wrapped: httpx.AsyncClient) -> None:
    """A preflight of an /api route is answered by CORS, and the call carries its header."""
    preflight = await wrapped.options(
        "/api/v1/echo",
        headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST"},
    )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == ORIGIN
    reply = await wrapped.post("/api/v1/echo", json={"text": "hi"}, headers={"Origin": ORIGIN})
    assert reply.status_code == 200
    assert reply.json()["text"] == "hi"
    assert reply.headers["access-control-allow-origin"] == ORIGIN


async def test_gzip_applies_to_rpc_replies(wrapped: httpx.AsyncClient) -> None:
    """A large JSON reply of an rpc route is compressed when the client accepts gzip."""
    text = "compressible " * 200
    raw = await wrapped.send(
        wrapped.build_request(
            "POST", "/api/v1/echo", json={"text": text}, headers={"Accept-Encoding": "gzip"}
        ),
        stream=True,
    )
    body = await raw.aread()  # decoded by httpx; the headers say what was sent
    assert raw.headers["content-encoding"] == "gzip"
    assert int(raw.headers["content-length"]) < len(text)
    assert text in body.decode()


async def test_every_kind_of_route_passes_the_middleware(wrapped: httpx.AsyncClient) -> None:
    """Unary, streaming, a worker's error, a 405, a 404, health and docs: all stamped."""
    calls = [
        wrapped.post("/api/v1/echo", json={"text": "a"}),
        wrapped.post("/api/v1/echo/stream", json={"items": ["a", "b"]}),
        wrapped.get("/api/v1/cache/keys/missing"),
        wrapped.post("/api/v1/echo", json={"bogus": 1}),
        wrapped.get("/api/v1/echo"),
        wrapped.get("/api/v1/nowhere"),
        wrapped.get("/healthz"),
        wrapped.get("/openapi.json"),
    ]
    statuses = []
    for call in calls:
        response = await call
        assert response.headers.get("x-stamp") == "1", response.request.url
        statuses.append(response.status_code)
    assert statuses == [200, 200, 200, 400, 405, 404, 200, 200]
    assert Stamp.seen.count("/api/v1/echo") == 3


@pytest.mark.parametrize("path", ["/healthz", "/docs", "/v1/models/{text}", "/{text=**}"])
def test_an_rpc_route_over_a_path_of_the_bridge_stops_the_start(path: str) -> None:
    """rpc routes are tried first, so one that would take /healthz, /docs or the OpenAI
    surface is refused when the routes are built."""
    echo = rpc("echo", "echo")
    assert echo is not None
    bridge = Bridge(bridge_settings("nats://127.0.0.1:1"))
    bridge.bindings = [*bridge.bindings, _binding(echo, http_pb2.HttpRule(get=path))]
    with pytest.raises(ValueError, match="which the bridge serves"):
        bridge.routes()


def test_the_rpc_routes_come_first() -> None:
    """The route carrying the traffic is the router's first."""
    app = create_app(bridge_settings("nats://127.0.0.1:1"))
    assert isinstance(app.routes[0], RpcRoutes)
    assert not any(isinstance(r, RpcRoutes) for r in app.routes[1:])
