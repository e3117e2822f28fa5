"""`create_app(settings)`: the Starlette app, its routes and the NATS connection it owns.

Routes are built once, at creation, from every registered service's http annotations. Every
route, rpc routes included, takes the same ASGI path through Starlette's middleware stack and
router, so a middleware added to the app (`app.add_middleware(CORSMiddleware, ...)` before it
serves) applies to `/api` routes too (its cost: benchmarks/README.md, "The bridge's middleware
path"). The NATS connection is opened by the lifespan (or, on Lambda where no lifespan runs,
by the first request) in the background: the process serves `/healthz` at once, `/readyz`
says when NATS and the components are there, and a request arriving before the connection
gets 503.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from nats.aio.client import Client as NATS
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Match, Route

from bridge.auth import authenticator
from bridge.config import BridgeSettings
from bridge.docs import docs_routes
from bridge.errors import error_response, http_exception_handler, service_error_handler
from bridge.forward import Forwarder
from bridge.health import healthz, readyz
from bridge.limits import RateLimiter
from bridge.openai import openai_routes
from bridge.openapi import document
from bridge.routes import RpcRoutes, bindings
from bridge.upload import MultipartUpload
from schemas.errors import Internal, ServiceError, Unavailable
from schemas.registry import services
from workers.runtime import connection
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
        try:
            nc = await connection.connect(
                self.settings.nats_url,
                name=CONNECTION_NAME,
                connect_timeout=2,
                log=log,
                closing=lambda: self._closing,
            )
        except Exception as exc:  # e.g. a malformed URL: retrying cannot help
            log.error("bridge cannot connect to nats", error=str(exc)[:200])
            return
        self.nc = nc
        self._client = Client(nc)
        log.info("bridge connected to nats")

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
        """The rpc routes first (they carry the traffic), then the bridge's own; an rpc path
        that would take one of the bridge's own stops the start."""
        # The one rpc with an endpoint of its own: multipart file uploads (bridge/upload.py).
        rpc = RpcRoutes(self.bindings, MultipartUpload(self.forwarder, self.client))
        own = self._own_routes()
        for route in own:
            path = route.path.split("{", 1)[0] + "x" if "{" in route.path else route.path
            probe = {"type": "http", "path": path, "raw_path": path.encode(), "method": "GET"}
            if rpc.matches(probe)[0] is not Match.NONE:
                raise ValueError(f"an rpc route takes {route.path}, which the bridge serves")
        return [rpc, *own]

    def _own_routes(self) -> list[Route]:
        routes = [
            Route("/healthz", healthz, methods=["GET"]),
            Route(
                "/readyz",
                readyz(lambda: self.nc, self.components, self.settings.readiness_timeout),
                methods=["GET"],
            ),
        ]
        if self.settings.docs:
            routes += docs_routes(document(self.bindings, self.settings))
        routes += openai_routes(self.forwarder)
        return routes


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

    app = Starlette(
        routes=bridge.routes(),
        lifespan=lifespan,
        exception_handlers={
            HTTPException: http_exception_handler,
            ServiceError: service_error_handler,
            Exception: _internal,
        },
    )
    app.state.bridge = bridge
    return app
