"""nats-py is imported without aiohttp by the worker kit, and ws:// servers still work."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from aifleet.embedded import free_port
from tests.conftest import NatsFactory

ROUND_TRIP = textwrap.dedent(
    """
    import asyncio, sys
    import structlog
    import workers.runtime
    from workers.runtime.connection import connect

    assert "aiohttp" not in sys.modules, "the kit imported aiohttp"

    async def main(url: str) -> None:
        nc = await connect(url, name="t", connect_timeout=5, log=structlog.get_logger())
        async def echo(msg):
            await msg.respond(msg.data)
        await nc.subscribe("echo", cb=echo)
        reply = await nc.request("echo", b"over " + url.encode(), timeout=5)
        print(reply.data.decode(), "aiohttp" in sys.modules)
        await nc.close()

    asyncio.run(main(sys.argv[1]))
    """
)


def round_trip(url: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", ROUND_TRIP, url], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()[0]  # then the log line of the close


def test_worker_kit_connects_over_tcp_without_aiohttp(nats_factory: NatsFactory) -> None:
    """A nats:// connection works and never loads aiohttp (10 MiB per process)."""
    server = nats_factory()
    assert round_trip(server.url) == f"over {server.url} False"


def test_websocket_url_brings_aiohttp_back(nats_factory: NatsFactory, tmp_path: Path) -> None:
    """A ws:// server gets nats-py's WebSocket transport, with aiohttp loaded for it."""
    port = free_port()
    config = tmp_path / "ws.conf"
    config.write_text(f'websocket {{\n  listen: "127.0.0.1:{port}"\n  no_tls: true\n}}\n')
    nats_factory(config=config)
    url = f"ws://127.0.0.1:{port}"
    assert round_trip(url) == f"over {url} True"
