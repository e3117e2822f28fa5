"""The CLI's one NATS connection: made once, fails fast, never reconnects (a command, not a
service)."""

from __future__ import annotations

import nats
from nats.aio.client import Client as NATS
from rich.console import Console

from workers.runtime.config import Settings
from workers.runtime.slim_imports import allow_websocket

err = Console(stderr=True)


async def connect(settings: Settings) -> NATS:
    """Connected within 2 s, or exit status 3 with the URL named."""
    allow_websocket(settings.nats_url)
    try:
        return await nats.connect(
            settings.nats_url, connect_timeout=2, max_reconnect_attempts=0, allow_reconnect=False
        )
    except Exception as exc:
        err.print(f"[red]cannot reach NATS at {settings.nats_url}[/red] ({type(exc).__name__})")
        raise SystemExit(3) from None
