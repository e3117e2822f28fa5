"""Request limits: the body (size and time to arrive) and a per-tenant rate.

The body is read from the ASGI channel by the bridge itself, counting as it goes: a declared
`Content-Length` over the limit is refused before a byte is read, a chunked body or one whose
length was understated is cut off at the first chunk past the limit, and a body trickling in
slower than `body_timeout` is cut off with 408. Slow *headers* are the server's business:
bridge/server.py closes connections whose headers do not arrive within `header_timeout`.

The rate limit is an in-process token bucket per tenant (a bridge replica enforces its share;
run N replicas, each tenant gets up to N times the rate). Refusing is O(1) and touches nothing
else, and the 429 is held `rate_limit_delay` before it is sent (bridge/forward.py): a client
retrying at once cannot turn rejections into a flood of the bridge's event loop, so one
tenant's flood costs another tenant little latency.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import OrderedDict
from collections.abc import Mapping

from starlette.types import Receive

from bridge.errors import RequestTimeout
from schemas.errors import BadRequest, PayloadTooLarge, RateLimited


class ClientGone(Exception):
    """The client disconnected before its request was complete: nobody to answer."""


async def read_body(
    headers: Mapping[str, str], receive: Receive, *, limit: int, timeout: float
) -> bytes:
    """The whole body; `headers` maps lower-case names to values."""
    declared = headers.get("content-length")
    if declared is not None:
        if not declared.strip().isdigit():
            raise BadRequest("invalid Content-Length")
        if int(declared) > limit:
            raise _too_large(limit)
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(timeout):
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise ClientGone
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > limit:
                    raise _too_large(limit)
                chunks.append(chunk)
                if not message.get("more_body", False):
                    break
    except TimeoutError:
        raise RequestTimeout(
            "the request body did not arrive in time", details={"timeout_seconds": timeout}
        ) from None
    return b"".join(chunks)


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge("request body too large", details={"limit_bytes": limit})


class RateLimiter:
    """Token buckets by tenant: `rate` tokens a second, at most `burst` saved up."""

    def __init__(self, rate: float, burst: int, *, max_tenants: int = 100_000) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.max_tenants = max_tenants
        self._buckets: OrderedDict[str, list[float]] = OrderedDict()

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def take(self, tenant: str) -> None:
        """Spend one token of `tenant`, or raise `RateLimited` saying when to retry."""
        if self.rate <= 0:
            return
        now = time.monotonic()
        bucket = self._buckets.get(tenant)
        if bucket is None:
            bucket = self._buckets[tenant] = [self.burst, now]
            if len(self._buckets) > self.max_tenants:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(tenant)
            bucket[0] = min(self.burst, bucket[0] + (now - bucket[1]) * self.rate)
            bucket[1] = now
        if bucket[0] >= 1.0:
            bucket[0] -= 1.0
            return
        wait = (1.0 - bucket[0]) / self.rate
        raise RateLimited(
            "rate limit exceeded for this tenant",
            details={"retry_after_ms": math.ceil(wait * 1000)},
        )


def retry_after(error: RateLimited) -> str:
    """The `Retry-After` header value (whole seconds, at least 1)."""
    ms = error.details.get("retry_after_ms", 1000)
    return str(max(1, math.ceil(float(ms) / 1000)))
