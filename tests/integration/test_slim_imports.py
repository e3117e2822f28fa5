"""The worker kit imports nats-py without aiohttp and structlog without rich; ws:// still works."""

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
    import workers.runtime
    import structlog
    from workers.runtime.connection import connect

    assert "aiohttp" not in sys.modules, "the kit imported aiohttp"
    assert "rich" not in sys.modules, "the kit imported rich"

    async def main(url: str) -> None:
        nc = await connect(url, name="t", connect_timeout=5, log=structlog.get_logger())
        async def echo(msg):
            await msg.respond(msg.data)
        await nc.subscribe("echo", cb=echo)
        reply = await nc.request("echo", b"over " + url.encode(), timeout=5)
        structlog.get_logger().info("logged without rich", n=1)
        print(reply.data.decode(), "aiohttp" in sys.modules, "rich" in sys.modules)
        await nc.close()

    asyncio.run(main(sys.argv[1]))
    """
)


def round_trip(url: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", ROUND_TRIP, url], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return next(line for line in done.stdout.splitlines() if line.startswith("over "))


def test_worker_kit_connects_over_tcp_without_aiohttp(nats_factory: NatsFactory) -> None:
    """A nats:// connection works and logs, never loading aiohttp or rich (15 MiB a process)."""
    server = nats_factory()
    assert round_trip(server.url) == f"over {server.url} False False"


def test_websocket_url_brings_aiohttp_back(nats_factory: NatsFactory, tmp_path: Path) -> None:
    """A ws:// server gets nats-py's WebSocket transport, with aiohttp loaded for it."""
    port = free_port()
    config = tmp_path / "ws.conf"
    config.write_text(f'websocket {{\n  listen: "127.0.0.1:{port}"\n  no_tls: true\n}}\n')
    nats_factory(config=config)
    url = f"ws://127.0.0.1:{port}"
    assert round_trip(url) == f"over {url} True False"
