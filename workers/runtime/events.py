"""Publishing events to AI_EVENTS and jobs to AI_JOBS: protobuf body, deduplicated.

Each event carries `Aifleet-Type` (the message's full proto name) so any consumer, in any
language, can decode it, and a unique `Nats-Msg-Id` so a retried publish is stored once.
"""

from __future__ import annotations

import uuid
from typing import Any

from google.protobuf.message import Message
from nats.js import JetStreamContext

from schemas.codec import PROTOBUF
from schemas.contracts import Method
from subjects import (
    HEADER_CONTENT_TYPE,
    HEADER_MESSAGE_TYPE,
    HEADER_MSG_ID,
    HEADER_TIMEOUT_MS,
    event_subject,
    job_subject,
)
from subjects.events import EventName
from workers.runtime.telemetry import inject


class EventPublisher:
    """Publishes what a component hands to JetStream: its events (AI_EVENTS) and jobs (AI_JOBS)."""

    def __init__(self, js: JetStreamContext, *, timeout: float = 5.0) -> None:
        self._js = js
        self._timeout = timeout

    async def emit(
        self,
        tenant: str,
        event: EventName,
        message: Message,
        headers: dict[str, str] | None = None,
        *,
        msg_id: str | None = None,
    ) -> int:
        """Store one event; returns its stream sequence. `msg_id` makes a retry idempotent."""
        return await self.publish(
            tenant,
            event,
            message.DESCRIPTOR.full_name,
            message.SerializeToString(),
            headers,
            msg_id=msg_id,
        )

    async def publish(
        self,
        tenant: str,
        event: EventName,
        type_name: str,
        payload: bytes,
        headers: dict[str, str] | None = None,
        *,
        msg_id: str | None = None,
    ) -> int:
        """`emit` of an already serialized message (the outbox stores the bytes)."""
        out = dict(headers or {})
        out.pop(HEADER_TIMEOUT_MS, None)
        out[HEADER_CONTENT_TYPE] = PROTOBUF
        out[HEADER_MESSAGE_TYPE] = type_name
        out[HEADER_MSG_ID] = msg_id or uuid.uuid4().hex
        inject(out)
        ack = await self._js.publish(
            event_subject(tenant, event.component, event.event),
            payload,
            timeout=self._timeout,
            headers=out,
        )
        return int(ack.seq)

    async def enqueue(
        self,
        tenant: str,
        method: Method[Any, Any],
        request: Message,
        headers: dict[str, str] | None = None,
        *,
        msg_id: str,
    ) -> int:
        """Store one job for `method`'s component; returns its stream sequence."""
        out = dict(headers or {})
        out.pop(HEADER_TIMEOUT_MS, None)
        out[HEADER_CONTENT_TYPE] = PROTOBUF
        out[HEADER_MSG_ID] = msg_id
        inject(out)
        ack = await self._js.publish(
            job_subject(tenant, method.component, method.op),
            method.check(request).SerializeToString(),
            timeout=self._timeout,
            headers=out,
        )
        return int(ack.seq)
