"""What the CLI does over NATS: call an operation, show discovery, streams and past events."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import re
import sys
from typing import Any

import nats
from google.protobuf import descriptor_pool, json_format, message_factory
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js.api import ConsumerConfig, DeliverPolicy
from rich.console import Console
from rich.table import Table

from schemas import registry
from schemas.codec import codec_for
from schemas.errors import ServiceError
from subjects import (
    HEADER_CONTENT_TYPE,
    HEADER_ERROR_CODE,
    HEADER_MESSAGE_TYPE,
    HEADER_MSG_ID,
    HEADER_STREAM_END,
    HEADER_TIMEOUT_MS,
    HEADER_USER_ID,
    STREAM_EVENTS,
    filter_subject,
    is_valid_tenant,
    request_subject,
)
from subjects.streams import provision_streams
from workers.runtime.client import Client
from workers.runtime.config import Settings

out = Console()
err = Console(stderr=True)


async def _connect(settings: Settings) -> NATS:
    try:
        return await nats.connect(
            settings.nats_url, connect_timeout=2, max_reconnect_attempts=0, allow_reconnect=False
        )
    except Exception as exc:
        err.print(f"[red]cannot reach NATS at {settings.nats_url}[/red] ({type(exc).__name__})")
        raise SystemExit(3) from None


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
    nc = await _connect(settings)
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


async def _gather(nc: NATS, subject: str, wait: float) -> list[dict[str, Any]]:
    """Every answer to a discovery request that arrives within `wait` seconds."""
    inbox = nc.new_inbox()
    answers: list[dict[str, Any]] = []

    async def collect(msg: Msg) -> None:
        try:
            answers.append(json.loads(msg.data))
        except ValueError:
            return

    sub = await nc.subscribe(inbox, cb=collect)
    await nc.publish(subject, b"", reply=inbox)
    await asyncio.sleep(wait)
    await sub.unsubscribe()
    return answers


async def show_status(settings: Settings, wait: float) -> int:
    nc = await _connect(settings)
    try:
        infos, stats = await asyncio.gather(
            _gather(nc, "$SRV.INFO", wait), _gather(nc, "$SRV.STATS", wait)
        )
    finally:
        await nc.close()
    by_id = {s["id"]: s for s in stats}
    table = Table(title="aifleet components (NATS micro discovery)")
    table.add_column("service", no_wrap=True)
    table.add_column("instance", no_wrap=True)
    table.add_column("op", no_wrap=True)
    for col in ("requests", "errors", "avg ms"):
        table.add_column(col, justify="right", no_wrap=True)
    table.add_column("last error", overflow="fold")
    for info in sorted(infos, key=lambda i: (i.get("name", ""), i.get("id", ""))):
        endpoint_stats = {e["name"]: e for e in by_id.get(info["id"], {}).get("endpoints", [])}
        for ep in info.get("endpoints", []):
            s = endpoint_stats.get(ep["name"], {})
            table.add_row(
                f"{info['name']} {info.get('version', '')}",
                info["id"][-6:],
                ep["name"],
                str(s.get("num_requests", "?")),
                str(s.get("num_errors", "?")),
                f"{s.get('average_processing_time', 0) / 1e6:.2f}",
                (s.get("last_error") or "")[:60],
            )
    if not infos:
        err.print(f"no component answered on {settings.nats_url}")
        return 1
    out.print(table)
    return 0


async def show_streams(settings: Settings) -> int:
    nc = await _connect(settings)
    try:
        reports = await provision_streams(nc.jetstream())
    finally:
        await nc.close()
    table = Table(title="aifleet JetStream streams")
    for col in ("stream", "state", "messages", "bytes", "consumers", "differs from defaults"):
        table.add_column(col)
    for r in reports:
        diffs = "; ".join(f"{k}: ours {a!r}, yours {b!r}" for k, (a, b) in r.differences.items())
        table.add_row(
            r.name,
            "created" if r.created else "exists",
            str(r.messages),
            str(r.bytes),
            str(r.consumers),
            diffs or "-",
        )
    out.print(table)
    return 0


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
    nc = await _connect(settings)
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
