"""nats-py without its WebSocket transport's aiohttp, unless a ws:// server asks for it.

nats-py imports aiohttp at import time whenever it is installed (it is in any environment that
also has litellm), although only `ws://` and `wss://` servers use it: ~10 MiB resident in every
worker process, a sixth of an idle cache worker. Imported before anything else imports nats, this
module leaves the transport's `aiohttp` unset; `allow_websocket` sets it before a connection to a
WebSocket URL. A process that imported nats earlier keeps nats-py's own behaviour.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

WEBSOCKET_SCHEMES = ("ws://", "wss://")


def import_without_aiohttp() -> None:
    """Import nats-py's transports with `import aiohttp` failing, then undo that for others."""
    if "nats" in sys.modules or "aiohttp" in sys.modules:
        return
    sys.modules["aiohttp"] = None  # type: ignore[assignment]  # makes `import aiohttp` raise
    try:
        import nats.aio.transport  # noqa: F401
    finally:
        del sys.modules["aiohttp"]


def allow_websocket(servers: str | list[str]) -> None:
    """Give nats-py's WebSocket transport its aiohttp when any server URL needs it."""
    urls = [servers] if isinstance(servers, str) else servers
    if not any(url.strip().lower().startswith(WEBSOCKET_SCHEMES) for url in urls):
        return
    import nats.aio.transport

    transport: Any = nats.aio.transport  # its `aiohttp` is a private module-level name
    if transport.aiohttp is None:
        transport.aiohttp = importlib.import_module("aiohttp")


import_without_aiohttp()
