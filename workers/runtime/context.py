"""What a handler knows about the request it serves: `ctx` in `async def op(ctx, req)`."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from google.protobuf.message import Message

from schemas.contracts import Method, Req, Res, Streaming, Unary
from subjects import HEADER_REQUEST_ID, HEADER_TIMEOUT_MS, HEADER_USER_ID
from subjects.events import EventName
from workers.runtime.logs import get_logger
from workers.runtime.telemetry import TRACE_HEADERS

if TYPE_CHECKING:
    import structlog

    from workers.runtime.client import Client
    from workers.runtime.events import EventPublisher


class Context:
    """Tenant (always from the subject), caller, deadline, logger and clients of one request."""

    __slots__ = (
        "_client",
        "_events",
        "_log",
        "attempt",
        "component",
        "deadline",
        "headers",
        "message_id",
        "op",
        "tenant",
    )

    def __init__(
        self,
        *,
        tenant: str,
        component: str,
        op: str,
        headers: dict[str, str],
        deadline: float,
        client: Client,
        events: EventPublisher,
        message_id: str | None = None,
        attempt: int = 1,
    ) -> None:
        self.tenant = tenant
        self.component = component
        self.op = op
        self.headers = headers
        self.deadline = deadline  # time.monotonic() value
        self.message_id = message_id  # jobs: Nats-Msg-Id (or stream sequence), the idempotency key
        self.attempt = attempt  # jobs: delivery count
        self._client = client
        self._events = events
        self._log: structlog.typing.FilteringBoundLogger | None = None

    @property
    def user_id(self) -> str | None:
        return self.headers.get(HEADER_USER_ID)

    @property
    def request_id(self) -> str | None:
        return self.headers.get(HEADER_REQUEST_ID)

    @property
    def log(self) -> structlog.typing.FilteringBoundLogger:
        """A logger bound with tenant, op, request and trace id (built on first use)."""
        if self._log is None:
            bound: dict[str, Any] = {
                "tenant": self.tenant,
                "component": self.component,
                "op": self.op,
            }
            if self.request_id:
                bound["request_id"] = self.request_id
            traceparent = self.headers.get("traceparent", "")
            if traceparent.count("-") == 3:
                bound["trace_id"] = traceparent.split("-")[1]
            self._log = get_logger(**bound)
        return self._log

    def remaining(self) -> float:
        """Seconds left before the caller stops waiting."""
        return max(0.0, self.deadline - time.monotonic())

    def forward_headers(self) -> dict[str, str]:
        """Headers a call made on behalf of this request carries on: trace, ids, deadline."""
        out = {
            k: self.headers[k]
            for k in (*TRACE_HEADERS, HEADER_REQUEST_ID, HEADER_USER_ID)
            if k in self.headers
        }
        out[HEADER_TIMEOUT_MS] = str(int(self.remaining() * 1000))
        return out

    async def call(self, method: Unary[Req, Res], request: Req) -> Res:
        """Call another component for the same tenant, within this request's deadline:
        `await ctx.call(CacheService.Get, GetRequest(key="k"))`."""
        return await self._client.call_rpc(
            self.tenant,
            method,
            request,
            headers=self.forward_headers(),
            timeout=self.remaining(),
        )

    def stream(self, method: Streaming[Req, Res], request: Req) -> AsyncIterator[Res]:
        """A server-streaming call of another component, within this request's deadline."""
        return self._client.stream_rpc(
            self.tenant,
            method,
            request,
            headers=self.forward_headers(),
            timeout=self.remaining(),
        )

    async def enqueue(self, method: Method[Req, Any], request: Req, *, msg_id: str) -> int:
        """Publish a JetStream job for the same tenant (`ai.v1.<tenant>.job.<component>.<op>`);
        `msg_id` is its Nats-Msg-Id, so an enqueue repeated within the duplicate window stores
        one job. Returns the job's stream sequence."""
        return await self._events.enqueue(
            self.tenant, method, request, self.forward_headers(), msg_id=msg_id
        )

    async def emit(self, event: EventName, message: Message, *, msg_id: str | None = None) -> None:
        """Publish `ai.v1.<tenant>.evt.<component>.<event>` to AI_EVENTS; `msg_id` (its
        Nats-Msg-Id) makes a repeated publish of the same event stored once. A component
        publishes only its own events."""
        if event.component != self.component:
            raise ValueError(f"{self.component} cannot publish {event}")
        await self._events.emit(self.tenant, event, message, self.forward_headers(), msg_id=msg_id)
