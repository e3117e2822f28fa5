"""`/healthz`: the process answers. `/readyz`: NATS is connected and every configured component
has at least one instance answering NATS micro discovery (`$SRV.PING.aifleet-<component>`)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from nats.aio.client import Client as NATS
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from bridge.errors import error_response
from schemas.errors import Unavailable
from subjects import service_name


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


def readyz(
    connection: Callable[[], NATS | None], components: list[str], timeout: float
) -> Callable[[Request], Awaitable[Response]]:
    async def ready(request: Request) -> Response:
        nc = connection()
        if nc is None or not nc.is_connected:
            return error_response(Unavailable("not connected to NATS", details={"nats": False}))
        answers = await asyncio.gather(*(_ping(nc, c, timeout) for c in components))
        found = dict(zip(components, answers, strict=True))
        missing = sorted(c for c, ok in found.items() if not ok)
        if missing:
            return error_response(
                Unavailable(
                    "no instance answers for some components",
                    details={"nats": True, "missing": missing},
                )
            )
        return JSONResponse({"status": "ready", "components": sorted(components)})

    return ready


async def _ping(nc: NATS, component: str, timeout: float) -> bool:
    """True when at least one instance of the component answers a micro PING."""
    try:
        await nc.request(f"$SRV.PING.{service_name(component)}", b"", timeout=timeout)
    except (NoRespondersError, NatsTimeout, TimeoutError):
        return False
    return True
