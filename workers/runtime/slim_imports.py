"""nats-py and structlog imported without optional extras a worker never uses.

Both import an optional library at import time whenever it is installed (it is, in any
environment that also has litellm or the CLI): nats-py imports aiohttp for its WebSocket
transport (~10 MiB resident), which only `ws://` and `wss://` servers use; structlog imports
rich (~5 MiB) for pretty tracebacks, which the fleet's logs never use (`format_exc_info` turns
exceptions into text before any renderer sees them). Together that is a fifth of an idle cache
worker. Imported before anything else imports them, this module loads both with the extra
unimportable, then makes it importable again for everyone else (litellm's aiohttp, the CLI's
rich); `allow_websocket` gives nats-py its aiohttp back before a connection to a WebSocket URL.
A process that imported them earlier keeps their own behaviour.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

WEBSOCKET_SCHEMES = ("ws://", "wss://")


def import_without(module: str, extra: str) -> None:
    """Import `module` while `import extra` fails, then undo that for later importers."""
    if module in sys.modules or extra in sys.modules:
        return
    sys.modules[extra] = None  # type: ignore[assignment]  # makes `import extra` raise
    try:
        importlib.import_module(module)
    finally:
        del sys.modules[extra]


def allow_websocket(servers: str | list[str]) -> None:
    """Give nats-py's WebSocket transport its aiohttp when any server URL needs it."""
    urls = [servers] if isinstance(servers, str) else servers
    if not any(url.strip().lower().startswith(WEBSOCKET_SCHEMES) for url in urls):
        return
    import nats.aio.transport

    transport: Any = nats.aio.transport  # its `aiohttp` is a private module-level name
    if transport.aiohttp is None:
        transport.aiohttp = importlib.import_module("aiohttp")


import_without("nats.aio.transport", "aiohttp")
import_without("structlog", "rich")
