"""What a handler knows about the request it serves: `ctx` in `async def op(ctx, req)`."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, TypeVar

from google.protobuf.message import Message

from subjects import HEADER_REQUEST_ID, HEADER_TIMEOUT_MS, HEADER_USER_ID
from workers.runtime.logs import get_logger
from workers.runtime.telemetry import TRACE_HEADERS

if TYPE_CHECKING:
    import structlog

    from workers.runtime.client import Client
    from workers.runtime.events import EventPublisher

M = TypeVar("M", bound=Message)


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

    async def call(self, component: str, op: str, request: Message, response: type[M]) -> M:
        """Call another component for the same tenant, within this request's deadline."""
        return await self._client.call(
            self.tenant,
            component,
            op,
            request,
            response,
            headers=self.forward_headers(),
            timeout=self.remaining(),
        )

    async def emit(self, event: str, message: Message, *, msg_id: str | None = None) -> None:
        """Publish `ai.v1.<tenant>.evt.<component>.<event>` to AI_EVENTS; `msg_id` (its
        Nats-Msg-Id) makes a repeated publish of the same event stored once."""
        await self._events.emit(
            self.tenant, self.component, event, message, self.forward_headers(), msg_id=msg_id
        )
