"""Bridge fixtures: real nats-server, Valkey and workers; the bridge served by real uvicorn on a
free loopback port in the test's event loop; a NATS spy counting what reaches `ai.v1.>`."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import jwt
import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from starlette.applications import Starlette

from aifleet.embedded import EmbeddedNats, EmbeddedValkey
from bridge.config import BridgeSettings
from bridge.server import address, bind, serve, server
from tests.conftest import NATS_CONFIG
from tests.support import echo  # registers the echo service: its routes exist in these tests
from tests.support.fleet import running_worker
from workers.cache import service as cache
from workers.runtime.component import Component
from workers.runtime.worker import Worker

SECRET = "test-secret-that-is-long-enough-for-hs256!"
ISSUER = "https://issuer.test"
AUDIENCE = "aifleet-api"


def bridge_settings(nats_url: str, **overrides: Any) -> BridgeSettings:
    """Dev-mode settings unless told otherwise; nothing is read from the environment."""
    values: dict[str, Any] = {
        "nats_url": nats_url,
        "host": "127.0.0.1",
        "port": 0,
        "auth": "off",
        "components": ["cache", "echo"],
        **overrides,
    }
    return BridgeSettings.model_validate(values)


def jwt_settings(nats_url: str, **overrides: Any) -> BridgeSettings:
    values: dict[str, Any] = {
        "auth": "jwt",
        "jwt_secret": SECRET,
        "jwt_issuer": ISSUER,
        "jwt_audience": AUDIENCE,
        **overrides,
    }
    return bridge_settings(nats_url, **values)


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "user-1",
        "tenant": "acme",
        "iat": now,
        "nbf": now - 5,
        "exp": now + 300,
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def hs256(**overrides: Any) -> str:
    return jwt.encode(claims(**overrides), SECRET, algorithm="HS256")


@contextlib.asynccontextmanager
async def serving(
    settings: BridgeSettings, *, wait_connected: bool = True, app: Starlette | None = None
) -> AsyncIterator[httpx.AsyncClient]:
    """The bridge (`app`, else one made from `settings`) on a free port, and an HTTP client
    pointed at it."""
    sock = bind("127.0.0.1", 0)
    srv = server(settings, app=app, handle_signals=False)
    task = asyncio.create_task(serve(srv, sock))
    while not srv.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.005)
    app = srv.config.loaded_app
    try:
        async with httpx.AsyncClient(base_url=address(sock), timeout=10) as client:
            # The NATS connection is made in the background: wait for it like a readiness probe.
            bridge = _bridge_state(app)
            for _ in range(400 if wait_connected else 0):
                if bridge.nc is not None and bridge.nc.is_connected:
                    break
                await asyncio.sleep(0.005)
            yield client
    finally:
        srv.should_exit = True
        await task


@contextlib.contextmanager
def threaded_bridge(
    components: list[Component], nats_url: str, *, redis_url: str | None = None, **settings: Any
) -> Iterator[str]:
    """Workers and a dev-mode bridge on an event loop of their own (a thread), for synchronous
    clients (schemathesis, a browser driver); yields the bridge's URL once it is ready."""
    ready = threading.Event()
    state: dict[str, Any] = {}

    async def main() -> None:
        stop = state["stop"] = asyncio.Event()
        state["loop"] = asyncio.get_running_loop()
        overrides = {"redis_url": redis_url} if redis_url else {}
        async with running_worker(components, nats_url, **overrides):
            sock = bind("127.0.0.1", 0)
            names = [c.name for c in components]
            srv = server(
                bridge_settings(nats_url, components=names, **settings), handle_signals=False
            )
            task = asyncio.create_task(serve(srv, sock))
            while not srv.started:
                await asyncio.sleep(0.005)
            state["url"] = address(sock)
            ready.set()
            await stop.wait()
            srv.should_exit = True
            await task

    thread = threading.Thread(target=lambda: asyncio.run(main()), daemon=True)
    thread.start()
    assert ready.wait(30), "bridge did not start"
    for _ in range(200):
        if httpx.get(state["url"] + "/readyz").status_code == 200:
            break
        time.sleep(0.01)
    try:
        yield str(state["url"])
    finally:
        state["loop"].call_soon_threadsafe(state["stop"].set)
        thread.join(30)


def _bridge_state(app: Any) -> Any:
    while not hasattr(app, "state"):
        app = app.app  # uvicorn wraps the app in its proxy-header / message-logger layers
    return app.state.bridge


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedNats]:
    """The bridge tests' own nats-server: their session-wide workers must not answer requests
    of tests elsewhere that expect to be alone on theirs."""
    server = EmbeddedNats(tmp_path_factory.mktemp("bridge-nats"), config=NATS_CONFIG)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
async def fleet(nats_server: EmbeddedNats, valkey: EmbeddedValkey) -> AsyncIterator[Worker]:
    """The cache and echo components serving the bridge tests' nats-server."""
    async with running_worker(
        [cache.component, echo.component], nats_server.url, redis_url=valkey.url
    ) as worker:
        yield worker


@pytest.fixture
async def dev_bridge(nats_server: EmbeddedNats, fleet: Worker) -> AsyncIterator[httpx.AsyncClient]:
    """A dev-mode bridge (auth off, loopback) in front of the fleet."""
    async with serving(bridge_settings(nats_server.url)) as client:
        yield client


class Spy:
    """Every message published under ai.v1.> while it listens."""

    def __init__(self) -> None:
        self.messages: list[Msg] = []

    async def cb(self, msg: Msg) -> None:
        self.messages.append(msg)

    @property
    def subjects(self) -> list[str]:
        return [m.subject for m in self.messages]


@pytest.fixture
async def spy(nc: NATS) -> AsyncIterator[Callable[[], Any]]:
    """`await spy()` → the messages seen on ai.v1.> so far (after a round trip to the server)."""
    seen = Spy()
    sub = await nc.subscribe("ai.v1.>", cb=seen.cb)
    await nc.flush()

    async def collected() -> Spy:
        await nc.flush()
        await asyncio.sleep(0.05)
        return seen

    try:
        yield collected
    finally:
        await sub.unsubscribe()
