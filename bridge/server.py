"""Serving the bridge with uvicorn: `aifleet bridge`, and inside `aifleet up`.

uvicorn has no time limit on the arrival of request headers (its keep-alive timer only runs
between requests), so a client sending headers a byte at a time could hold a connection
forever. The protocol here closes any connection whose request headers are not complete within
`header_timeout` of the connection opening or of the request's first byte; the body's own limit
is enforced by the app (bridge/limits.py). The listening socket is bound here, so a port in
use or a refused address is a clear error at start, not an exit from inside the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Generator
from typing import Any

import uvicorn
from starlette.applications import Starlette
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from bridge.app import create_app
from bridge.config import BridgeSettings


class HeaderTimeoutProtocol(HttpToolsProtocol):
    """httptools protocol that closes connections whose headers arrive too slowly."""

    header_timeout = 10.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timer: asyncio.TimerHandle | None = None

    def _arm(self) -> None:
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(self.header_timeout, self._expire)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _expire(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            self.transport.close()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[arg-type]
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()


def protocol(header_timeout: float) -> type[HeaderTimeoutProtocol]:
    return type(  # a subclass per timeout: uvicorn instantiates the class it is given
        "HeaderTimeoutProtocol", (HeaderTimeoutProtocol,), {"header_timeout": header_timeout}
    )


class _QuietSignals(uvicorn.Server):
    """A server that leaves signal handling to its host process (`aifleet up`)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def bind(host: str, port: int) -> socket.socket:
    """A listening socket; OSError (address in use, not available) names the address."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host.strip("[]"), port))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.setblocking(False)
    return sock


def server(
    settings: BridgeSettings, *, app: Starlette | None = None, handle_signals: bool = True
) -> uvicorn.Server:
    """A uvicorn server for the bridge app (no access log: the bridge logs what matters)."""
    config = uvicorn.Config(
        app or create_app(settings),
        host=settings.host,
        port=settings.port,
        http=protocol(settings.header_timeout),
        lifespan="on",
        log_config=None,
        log_level="warning",
        access_log=False,
        server_header=False,
        proxy_headers=False,
        timeout_graceful_shutdown=5,
    )
    return (uvicorn.Server if handle_signals else _QuietSignals)(config)


async def serve(server: uvicorn.Server, sock: socket.socket) -> None:
    """Serve until the server is told to exit; a failed start raises instead of exiting."""
    try:
        await server.serve(sockets=[sock])
    except SystemExit as exc:
        raise RuntimeError("the bridge failed to start") from exc


def address(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


DEV_WARNING = (
    "AUTHENTICATION IS OFF (dev mode): anyone who can reach {url} acts as any tenant "
    "through the X-Tenant-ID header. Loopback only; never expose this port."
)


async def run_bridge(settings: BridgeSettings, say: Any) -> None:
    """`aifleet bridge`: serve until SIGINT/SIGTERM. `say` prints to the operator."""
    app = create_app(settings)  # refuses auth off on a non-loopback address
    sock = bind(settings.host, settings.port)
    url = address(sock)
    if settings.dev_mode:
        say(f"[bold red]{DEV_WARNING.format(url=url)}[/bold red]")
    say(f"bridge listening on {url} (NATS {settings.nats_url}); docs at {url}/docs")
    await serve(server(settings, app=app), sock)


class Embedded:
    """The bridge inside another process's event loop (`aifleet up`): bound at once, served
    by `run()`, stopped by `stop()`."""

    def __init__(self, settings: BridgeSettings) -> None:
        settings.check_bind()
        self.settings = settings
        self.sock = bind(settings.host, settings.port)
        self.url = address(self.sock)
        self._server: uvicorn.Server | None = None

    async def run(self, nats_url: str | None = None, components: list[str] | None = None) -> None:
        """Serve until `stop()`; `components` are what /readyz requires (those running)."""
        update: dict[str, object] = {}
        if nats_url is not None:
            update["nats_url"] = nats_url
        if components is not None:
            update["components"] = components
        self.settings = self.settings.model_copy(update=update)
        self._server = server(self.settings, handle_signals=False)
        await serve(self._server, self.sock)

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        else:
            self.sock.close()
