"""The long-lived NATS connection of a worker process or of the bridge.

It reconnects forever once up (a restarted nats-server never needs a restart of the process),
retrying every 0.25 s, and says so once per outage rather than once per attempt.
"""

from __future__ import annotations

from collections.abc import Callable

import nats
import structlog
from nats.aio.client import Client as NATS

from workers.runtime.slim_imports import allow_websocket

RECONNECT_WAIT = 0.25


async def connect(
    url: str,
    *,
    name: str,
    connect_timeout: float,
    log: structlog.typing.FilteringBoundLogger,
    closing: Callable[[], bool] = lambda: False,
) -> NATS:
    """Connect (the first attempt retries until it succeeds: bound it with a timeout) and keep
    the connection up. `closing` tells a disconnect the process asked for from an outage."""
    quiet = False

    async def on_error(exc: Exception) -> None:
        nonlocal quiet
        if not quiet:  # one line per outage, not one per reconnect attempt
            log.warning("nats error", error=str(exc)[:200] or type(exc).__name__)
            quiet = True

    async def on_disconnect() -> None:
        if not closing():
            log.warning("nats disconnected")

    async def on_reconnect() -> None:
        nonlocal quiet
        quiet = False
        log.info("nats reconnected")

    allow_websocket(url)
    return await nats.connect(
        url,
        name=name,
        allow_reconnect=True,
        max_reconnect_attempts=-1,
        reconnect_time_wait=RECONNECT_WAIT,
        connect_timeout=connect_timeout,
        error_cb=on_error,
        disconnected_cb=on_disconnect,
        reconnected_cb=on_reconnect,
    )
