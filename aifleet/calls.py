"""`aifleet call`: one operation over NATS, its reply printed as JSON."""

from __future__ import annotations

import json

from nats.aio.msg import Msg
from rich.console import Console

from aifleet.connection import connect
from schemas import registry
from schemas.errors import ServiceError
from subjects import (
    HEADER_ERROR_CODE,
    HEADER_STREAM_END,
    HEADER_TIMEOUT_MS,
    HEADER_USER_ID,
    is_valid_tenant,
    request_subject,
)
from workers.runtime.client import Client
from workers.runtime.config import Settings

err = Console(stderr=True)


def _print_reply(msg: Msg) -> bool:
    """Print one reply as JSON on stdout, or an error on stderr; True if it was a success."""
    headers = msg.headers or {}
    text = msg.data.decode(errors="replace")
    if HEADER_ERROR_CODE in headers:
        err.print(f"[red]error {headers[HEADER_ERROR_CODE]}[/red]", text, highlight=False)
        return False
    if msg.data:
        print(json.dumps(json.loads(text), indent=2))
    return True


async def call_operation(
    settings: Settings, operation: str, body: str, tenant: str, timeout: float, user: str | None
) -> int:
    component, _, op = operation.partition(".")
    rpc = registry.rpc(component, op)
    if rpc is None:
        known = [f"{c}.{o}" for c, s in registry.services().items() for o in registry.rpcs_of(s)]
        err.print(f"[red]unknown operation {operation!r}[/red]; known: {', '.join(sorted(known))}")
        return 2
    if not is_valid_tenant(tenant):
        err.print(f"[red]invalid tenant {tenant!r}[/red]")
        return 2
    headers = {HEADER_TIMEOUT_MS: str(int(timeout * 1000))}
    if user:
        headers[HEADER_USER_ID] = user
    nc = await connect(settings)
    client = Client(nc)
    subject = request_subject(tenant, component, op)
    try:
        if rpc.streaming:
            ok = True
            async for msg in client.stream_raw(subject, body.encode(), headers, timeout):
                if (msg.headers or {}).get(HEADER_STREAM_END) and not msg.data:
                    break
                ok = _print_reply(msg) and ok
            return 0 if ok else 1
        msg = await client.request(subject, body.encode(), headers, timeout)
        return 0 if _print_reply(msg) else 1
    except ServiceError as exc:
        err.print(f"[red]error {exc.status}[/red] {exc.code}: {exc.message}")
        return 1
    finally:
        await nc.close()
