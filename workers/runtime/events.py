"""Publishing events to AI_EVENTS: protobuf body, self-describing headers, deduplicated.

Each event carries `Aifleet-Type` (the message's full proto name) so any consumer, in any
language, can decode it, and a unique `Nats-Msg-Id` so a retried publish is stored once.
"""

from __future__ import annotations

import uuid

from google.protobuf.message import Message
from nats.js import JetStreamContext

from schemas.codec import PROTOBUF
from subjects import (
    HEADER_CONTENT_TYPE,
    HEADER_MESSAGE_TYPE,
    HEADER_MSG_ID,
    HEADER_TIMEOUT_MS,
    event_subject,
)
from workers.runtime.telemetry import inject


class EventPublisher:
    def __init__(self, js: JetStreamContext, *, timeout: float = 5.0) -> None:
        self._js = js
        self._timeout = timeout

    async def emit(
        self,
        tenant: str,
        component: str,
        event: str,
        message: Message,
        headers: dict[str, str] | None = None,
        *,
        msg_id: str | None = None,
    ) -> int:
        """Store one event; returns its stream sequence. `msg_id` makes a retry idempotent."""
        out = dict(headers or {})
        out.pop(HEADER_TIMEOUT_MS, None)
        out[HEADER_CONTENT_TYPE] = PROTOBUF
        out[HEADER_MESSAGE_TYPE] = message.DESCRIPTOR.full_name
        out[HEADER_MSG_ID] = msg_id or uuid.uuid4().hex
        inject(out)
        ack = await self._js.publish(
            event_subject(tenant, component, event),
            message.SerializeToString(),
            timeout=self._timeout,
            headers=out,
        )
        return int(ack.seq)
