"""What a component stored in AI_EVENTS, read back as a test checks it."""

from __future__ import annotations

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from subjects import STREAM_EVENTS, event_subject
from subjects.events import EventName


async def stored_events(nc: NATS, tenant: str, event: EventName) -> list[Msg]:
    """Every `event` of the tenant stored in AI_EVENTS, oldest first."""
    js = nc.jetstream()
    subject = event_subject(tenant, event.component, event.event)
    info = await js.stream_info(STREAM_EVENTS, subjects_filter=subject)
    count = (info.state.subjects or {}).get(subject, 0)
    if not count:
        return []
    sub = await js.subscribe(subject, ordered_consumer=True)
    try:
        return [await sub.next_msg(timeout=2.0) for _ in range(count)]
    finally:
        await sub.unsubscribe()
