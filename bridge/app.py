"""`create_app(settings)`: the Starlette app, its routes and the NATS connection it owns.

Routes are built once, at creation, from every registered service's http annotations. The NATS
connection is opened by the lifespan (or, on Lambda where no lifespan runs, by the first
request) in the background: the process serves `/healthz` at once, `/readyz` says when NATS
and the components are there, and a request arriving before the connection gets 503.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import nats
from nats.aio.client import Client as NATS
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Match, Route
from starlette.types import Receive, Scope, Send

from bridge.auth import authenticator
from bridge.config import BridgeSettings
from bridge.docs import docs_page
from bridge.errors import JSON, error_response, http_exception_handler, service_error_handler
from bridge.forward import Forwarder
from bridge.health import healthz, readyz
from bridge.limits import RateLimiter
from bridge.openai import openai_routes
from bridge.openapi import document
from bridge.routes import RpcRoute, bindings, rpc_routes
from bridge.upload import MultipartUpload
from schemas.errors import Internal, ServiceError, Unavailable
from schemas.registry import services
from workers.runtime.client import Client
from workers.runtime.logs import get_logger

log = get_logger(component="bridge")
CONNECTION_NAME = "aifleet-bridge"


class Bridge:
    """What the app shares across requests: settings, routes, auth, limits, NATS."""

    def __init__(self, settings: BridgeSettings) -> None:
        self.settings = settings
        self.bindings = bindings(services().values())
        self.auth = authenticator(settings)
        self.limiter = RateLimiter(
            settings.rate_per_second, settings.rate_burst, max_tenants=settings.max_tenants_tracked
        )
        self.forwarder = Forwarder(settings, self.auth, self.limiter, self.client)
        self.components = settings.components or sorted({b.rpc.component for b in self.bindings})
        self.nc: NATS | None = None
        self._client: Client | None = None
        self._connecting: asyncio.Task[None] | None = None
        self._closing = False

    async def start(self) -> None:
        """Begin connecting to NATS (returns at once; reconnects forever afterwards)."""
        if self._connecting is None:
            self._connecting = asyncio.create_task(self._connect())

    async def _connect(self) -> None:
        last = [0.0]

        async def on_error(exc: Exception) -> None:
            if time.monotonic() - last[0] > 10:  # a server that is down errs every 0.25 s
                last[0] = time.monotonic()
                log.warning("nats error", error=str(exc)[:200] or type(exc).__name__)

        async def on_disconnect() -> None:
            if not self._closing:
                log.warning("nats disconnected")

        async def on_reconnect() -> None:
            log.info("nats reconnected")

        try:
            nc = await self._open(on_error, on_disconnect, on_reconnect)
        except Exception as exc:  # e.g. a malformed URL: retrying cannot help
            log.error("bridge cannot connect to nats", error=str(exc)[:200])
            return
        self.nc = nc
        self._client = Client(nc)
        log.info("bridge connected to nats")

    async def _open(self, on_error: Any, on_disconnect: Any, on_reconnect: Any) -> NATS:
        return await nats.connect(
            self.settings.nats_url,
            name=CONNECTION_NAME,
            allow_reconnect=True,
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.25,
            connect_timeout=2,
            error_cb=on_error,
            disconnected_cb=on_disconnect,
            reconnected_cb=on_reconnect,
        )

    async def client(self) -> Client:
        """The NATS client, or 503 when the bridge is not connected (Lambda: connect first)."""
        client = self._client
        if client is not None and client.nc.is_connected:
            return client
        if self._connecting is None:  # no lifespan (Lambda): the first request connects
            task = self._connecting = asyncio.create_task(self._connect())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(task), timeout=5.0)
        client = self._client
        if client is None or not client.nc.is_connected:
            raise Unavailable("the bridge is not connected to NATS")
        return client

    async def close(self) -> None:
        self._closing = True
        if self._connecting is not None and not self._connecting.done():
            self._connecting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._connecting
        if self.nc is not None and not self.nc.is_closed:
            with contextlib.suppress(Exception):
                await self.nc.drain()
        self.nc = None
        self._client = None

    def routes(self) -> list[BaseRoute]:
        routes: list[BaseRoute] = [
            Route("/healthz", healthz, methods=["GET"]),
            Route(
                "/readyz",
                readyz(lambda: self.nc, self.components, self.settings.readiness_timeout),
                methods=["GET"],
            ),
        ]
        if self.settings.docs:
            doc = document(self.bindings, self.settings)
            spec = Response(_dumps(doc), media_type=JSON)
            page = HTMLResponse(docs_page(doc))

            async def openapi(request: Request) -> Response:
                return spec

            async def docs(request: Request) -> Response:
                return page

            routes += [
                Route("/openapi.json", openapi, methods=["GET"]),
                Route("/docs", docs, methods=["GET"]),
            ]
        routes += openai_routes(self.forwarder)
        # The one rpc with a route of its own: a multipart file upload (bridge/upload.py).
        routes += rpc_routes(self.bindings, MultipartUpload(self.forwarder, self.client))
        return routes


class BridgeApp(Starlette):
    """Starlette, with rpc routes dispatched ahead of its middleware: the forwarder answers
    every outcome itself (errors included), so the generic layers only cost time there. Paths
    that match no rpc route with its method take the ordinary way (404, 405, docs, health)."""

    rpc: tuple[RpcRoute, ...] = ()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            for route in self.rpc:
                match, child = route.matches(scope)
                if match is Match.FULL:
                    scope.update(child)
                    await route.handle(scope, receive, send)
                    return
        await super().__call__(scope, receive, send)


def _dumps(doc: object) -> bytes:
    import json

    return json.dumps(doc, separators=(",", ":")).encode()


async def _internal(request: Request, exc: Exception) -> Response:
    log.error("unhandled error", path=request.url.path[:200], exc_info=exc)
    return error_response(Internal("internal error"))


def create_app(settings: BridgeSettings | None = None) -> Starlette:
    """The bridge app; refuses (ConfigError) a configuration it must not run with."""
    settings = settings or BridgeSettings()
    settings.check_bind()
    bridge = Bridge(settings)
    if settings.dev_mode:
        log.warning(
            "AUTHENTICATION IS OFF (dev mode): any caller on this machine acts as any tenant "
            "through the X-Tenant-ID header; never expose this port",
            host=settings.host,
        )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await bridge.start()
        try:
            yield
        finally:
            await bridge.close()

    routes = bridge.routes()
    app = BridgeApp(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={
            HTTPException: http_exception_handler,
            ServiceError: service_error_handler,
            Exception: _internal,
        },
    )
    app.state.bridge = bridge
    app.rpc = tuple(r for r in routes if isinstance(r, RpcRoute))
    return app
