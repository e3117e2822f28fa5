"""Operation events JetStream did not take, kept in Redis and published again.

By the time an `llm_operation` event is published the caller has its reply, and the provider may
have charged for it: a JetStream outage must not lose the record. An event whose publish fails
goes to a Redis list shared by the gateway replicas; every replica re-publishes the oldest
entries with their original Nats-Msg-Id until JetStream takes them (a repeat inside the
duplicate window is stored once, and LLMOps is idempotent by id after that).
"""

from __future__ import annotations

import asyncio

import msgpack
import redis.asyncio

from schemas.v1.llmops_pb2 import LlmOperationEvent
from subjects import GATEWAY_OUTBOX_KEY
from subjects.events import GATEWAY_LLM_OPERATION
from workers.runtime.events import EventPublisher
from workers.runtime.logs import get_logger


class EventOutbox:
    def __init__(
        self, client: redis.asyncio.Redis, events: EventPublisher, *, interval: float = 2.0
    ) -> None:
        self._redis = client
        self._events = events
        self.interval = interval
        self._log = get_logger(component="gateway")

    async def keep(self, tenant: str, event: LlmOperationEvent, headers: dict[str, str]) -> None:
        entry = msgpack.packb(
            {"tenant": tenant, "event": event.SerializeToString(), "headers": headers}
        )
        await self._redis.rpush(GATEWAY_OUTBOX_KEY, entry)

    async def flush(self) -> int:
        """Publish kept events oldest first; stop at the first failure. Returns how many went.

        An entry leaves the list only after JetStream acknowledged it: a crash in between
        publishes it again, under the same Nats-Msg-Id."""
        sent = 0
        while (entry := await self._redis.lindex(GATEWAY_OUTBOX_KEY, 0)) is not None:
            kept = msgpack.unpackb(entry)
            event = LlmOperationEvent.FromString(kept["event"])
            await self._events.emit(
                kept["tenant"], GATEWAY_LLM_OPERATION, event, kept["headers"], msg_id=event.id
            )
            await self._redis.lrem(GATEWAY_OUTBOX_KEY, 1, entry)  # type: ignore[arg-type]
            sent += 1
        return sent

    async def run(self) -> None:
        """Flush every `interval` seconds for as long as the gateway runs."""
        while True:
            await asyncio.sleep(self.interval)
            try:
                sent = await self.flush()
            except Exception as exc:  # JetStream or Redis still down: the next round retries
                self._log.warning("kept llm_operation events not published yet", error=repr(exc))
            else:
                if sent:
                    self._log.info("kept llm_operation events published", events=sent)
