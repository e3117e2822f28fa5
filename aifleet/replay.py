"""`aifleet replay`: events of AI_EVENTS as JSON lines, decoded by their `Aifleet-Type`."""

from __future__ import annotations

import base64
import datetime as dt
import json
import re
import sys
from typing import Any

import nats
from google.protobuf import descriptor_pool, json_format, message_factory
from nats.aio.msg import Msg
from nats.js.api import ConsumerConfig, DeliverPolicy
from rich.console import Console

from aifleet.connection import connect
from schemas import registry
from schemas.codec import codec_for
from schemas.errors import ServiceError
from subjects import (
    HEADER_CONTENT_TYPE,
    HEADER_MESSAGE_TYPE,
    HEADER_MSG_ID,
    STREAM_EVENTS,
    filter_subject,
)
from subjects.streams import provision_streams
from workers.runtime.config import Settings

err = Console(stderr=True)


_AGE = re.compile(r"(\d+(?:\.\d+)?)([smhd])\Z")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_time(text: str, now: dt.datetime | None = None) -> dt.datetime:
    """An ISO 8601 time (UTC if no zone) or an age like `15m`, `2h`, `7d` before now."""
    now = now or dt.datetime.now(dt.UTC)
    age = _AGE.match(text.strip())
    if age:
        return now - dt.timedelta(seconds=float(age[1]) * _UNITS[age[2]])
    moment = dt.datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def event_record(msg: Msg) -> dict[str, Any]:
    """One stored event as a JSON-ready dict, its body decoded by its `Aifleet-Type`."""
    headers = msg.headers or {}
    _, tenant, _, component, event = msg.subject.split(".", 1)[1].split(".", 4)
    meta = msg.metadata
    record: dict[str, Any] = {
        "seq": meta.sequence.stream,
        "time": meta.timestamp.isoformat() if meta.timestamp else None,
        "subject": msg.subject,
        "tenant": tenant,
        "component": component,
        "event": event,
        "type": headers.get(HEADER_MESSAGE_TYPE),
        "msg_id": headers.get(HEADER_MSG_ID),
    }
    try:
        registry.services()  # loads every contract into the descriptor pool
        desc = descriptor_pool.Default().FindMessageTypeByName(headers.get(HEADER_MESSAGE_TYPE, ""))
        cls = message_factory.GetMessageClass(desc)
        decoded = codec_for(headers.get(HEADER_CONTENT_TYPE)).decode(cls, msg.data)
        record["data"] = json_format.MessageToDict(decoded, preserving_proto_field_name=True)
    except (KeyError, ServiceError):
        record["data_base64"] = base64.b64encode(msg.data).decode()
    return record


async def replay_events(
    settings: Settings,
    tenant: str | None,
    component: str | None,
    event: str | None,
    since: str | None,
    until: str | None,
    follow: bool,
) -> int:
    try:
        subject = filter_subject("evt", tenant, component, event)
        start = parse_time(since) if since else None
        stop = parse_time(until) if until else None
    except (ValueError, ServiceError) as exc:
        err.print(f"[red]invalid filter:[/red] {exc}")
        return 2
    nc = await connect(settings)
    js = nc.jetstream()
    try:
        await provision_streams(js)
        config = ConsumerConfig(deliver_policy=DeliverPolicy.ALL)
        if start is not None:
            config = ConsumerConfig(
                deliver_policy=DeliverPolicy.BY_START_TIME, opt_start_time=start
            )
        sub = await js.subscribe(
            subject, stream=STREAM_EVENTS, ordered_consumer=True, config=config
        )
        info = await sub.consumer_info()
        # Nothing pending and nothing delivered yet: no event matches. (Delivered but still in
        # flight to us counts as something: the loop below reads it.)
        delivered = info.delivered.consumer_seq if info.delivered else 0
        if info.num_pending == 0 and not delivered and not follow:
            return 0
        while True:
            try:
                msg = await sub.next_msg(timeout=None if follow else 5.0)
            except nats.errors.TimeoutError:
                return 0
            meta = msg.metadata
            if stop is not None and meta.timestamp and meta.timestamp > stop:
                return 0
            sys.stdout.write(json.dumps(event_record(msg)) + "\n")
            if meta.num_pending == 0 and not follow:
                sys.stdout.flush()
                return 0
    finally:
        await nc.close()
