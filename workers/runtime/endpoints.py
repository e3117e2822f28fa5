"""Request-reply endpoints: claim → decode → execute → settle, for every rpc of a component.

A subscription callback only claims a slot and starts a task, so requests run concurrently up
to the component's bound (nats.micro alone runs one at a time per endpoint), and the stats the
micro protocol reports measure the real work.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from google.protobuf.message import Message
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from opentelemetry import context as otel_context
from opentelemetry.trace import SpanKind, Status, StatusCode, set_span_in_context

from schemas.codec import JSON_CODEC, Codec, codec_for
from schemas.errors import Internal, PayloadTooLarge, ServiceError
from schemas.registry import Rpc
from subjects import (
    HEADER_CONTENT_TYPE,
    HEADER_ERROR,
    HEADER_ERROR_CODE,
    HEADER_STREAM_END,
    HEADER_STREAM_SEQ,
    HEADER_TIMEOUT_MS,
    listen_subject,
    queue_group,
    template,
    tenant_of,
)
from workers.runtime.client import Client
from workers.runtime.context import Context
from workers.runtime.events import EventPublisher
from workers.runtime.failures import as_service_error
from workers.runtime.logs import get_logger
from workers.runtime.telemetry import (
    Labels,
    extract,
    provider_tracer,
    request_duration,
    requests_total,
)

Handler = Callable[[Context, Any], Any]
MAX_TIMEOUT = 600.0
DEADLINE_MARGIN = 0.05  # seconds


class Endpoint:
    """One rpc served over request-reply, with the counters `$SRV.STATS` reports."""

    def __init__(self, rpc: Rpc, handler: Handler) -> None:
        self.rpc = rpc
        self.handler = handler
        self.subject = listen_subject("req", rpc.component, rpc.op)
        self.queue_group = queue_group(rpc.component)
        self.template = template("req", rpc.component, rpc.op)
        self.labels = Labels(rpc.component, rpc.op, "req")
        # The server span's attributes that do not depend on the request, built once.
        self.span_attributes: dict[str, str] = {
            "messaging.system": "nats",
            "messaging.destination.template": self.template,
            "rpc.system": "aifleet",
            "rpc.service": rpc.method.containing_service.full_name,
            "rpc.method": rpc.method.name,
        }
        self.num_requests = 0
        self.num_errors = 0
        self.processing_time = 0  # ns, summed over requests
        self.last_error = ""

    def reset(self) -> None:
        self.num_requests = self.num_errors = self.processing_time = 0
        self.last_error = ""


class RequestServer:
    """Serves one component's endpoints with a shared bound on in-flight handlers."""

    def __init__(
        self,
        nc: NATS,
        endpoints: list[Endpoint],
        *,
        concurrency: int,
        default_timeout: float,
        max_request_bytes: int,
        client: Client,
        events: EventPublisher,
        tracing: bool,
    ) -> None:
        self.nc = nc
        self.endpoints = endpoints
        self._slots = asyncio.Semaphore(concurrency)
        self._default_timeout = default_timeout
        self._max_bytes = max_request_bytes
        self._client = client
        self._events = events
        self._tracing = tracing
        self._tracer = provider_tracer() if tracing else None
        self._subs: list[Subscription] = []
        self._inflight: set[asyncio.Task[None]] = set()
        self._log = get_logger()

    async def start(self) -> None:
        for ep in self.endpoints:
            claim = functools.partial(self._claim, ep)
            self._subs.append(await self.nc.subscribe(ep.subject, queue=ep.queue_group, cb=claim))

    async def stop(self, timeout: float) -> int:
        """Take no new requests, let in-flight ones finish; returns how many were cut off."""
        for sub in self._subs:
            await sub.drain()  # type: ignore[no-untyped-call]
        self._subs.clear()
        if self._inflight:
            _, pending = await asyncio.wait(set(self._inflight), timeout=timeout)
            for task in pending:
                task.cancel()
            return len(pending)
        return 0

    @property
    def inflight(self) -> int:
        return len(self._inflight)

    # -- claim ------------------------------------------------------------------------------

    async def _claim(self, ep: Endpoint, msg: Msg) -> None:
        await self._slots.acquire()
        task = asyncio.create_task(self._serve(ep, msg))
        self._inflight.add(task)
        task.add_done_callback(self._settled)

    def _settled(self, task: asyncio.Task[None]) -> None:
        self._inflight.discard(task)
        self._slots.release()

    # -- decode, execute, settle ------------------------------------------------------------

    async def _serve(self, ep: Endpoint, msg: Msg) -> None:
        started = time.perf_counter_ns()
        headers = msg.headers or {}
        codec = JSON_CODEC
        timeout = self._default_timeout
        outcome = "ok"
        sent = Sent()
        try:
            codec = codec_for(headers.get(HEADER_CONTENT_TYPE))
            tenant = tenant_of(msg.subject)
            if len(msg.data) > self._max_bytes:
                raise PayloadTooLarge(
                    "request body too large", details={"limit_bytes": self._max_bytes}
                )
            timeout = _timeout(headers, self._default_timeout)
            request = codec.decode(ep.rpc.request, msg.data)
            ctx = Context(
                tenant=tenant,
                component=ep.rpc.component,
                op=ep.rpc.op,
                headers=headers,
                deadline=time.monotonic() + timeout,
                client=self._client,
                events=self._events,
            )
            if self._tracing:
                await self._traced(ep, ctx, request, msg, codec, timeout, sent)
            else:
                await self._execute(ep, ctx, request, msg, codec, timeout, sent)
        except Exception as exc:
            deadline_passed = (time.perf_counter_ns() - started) / 1e9 >= timeout
            error, is_bug = as_service_error(exc, deadline_passed=deadline_passed)
            outcome = error.code
            ep.num_errors += 1
            ep.last_error = f"{error.status}:{error.message}"
            if is_bug:
                self._log.error("handler failed", subject=ep.template, exc_info=exc)
            stream_seq = sent.count + 1 if ep.rpc.streaming else None
            await self._reply_error(msg, codec, error, stream_seq=stream_seq)
        finally:
            elapsed = time.perf_counter_ns() - started
            ep.num_requests += 1
            ep.processing_time += elapsed
            labels = ep.labels(outcome)
            requests_total.add(1, labels)
            request_duration.record(elapsed / 1e9, labels)

    async def _traced(
        self,
        ep: Endpoint,
        ctx: Context,
        request: Message,
        msg: Msg,
        codec: Codec,
        timeout: float,
        sent: Sent,
    ) -> None:
        # What `tracer.start_as_current_span(...)` does (current while the handler runs, ended on
        # the way out, exceptions neither recorded nor turned into a status by the SDK), spelled
        # out: with the proxy tracer's and the SDK's generator context managers it cost ~5 µs
        # more a request (a quarter of the span's own cost; benchmarks/README.md).
        assert self._tracer is not None
        span = self._tracer.start_span(
            ep.template,
            context=extract(ctx.headers),
            kind=SpanKind.SERVER,
            attributes={**ep.span_attributes, "aifleet.tenant": ctx.tenant},
            record_exception=False,
            set_status_on_exception=False,
        )
        token = otel_context.attach(set_span_in_context(span))
        try:
            await self._execute(ep, ctx, request, msg, codec, timeout, sent)
        except Exception as exc:
            error, _ = as_service_error(exc, deadline_passed=ctx.remaining() <= 0)
            span.set_attribute("aifleet.error.code", error.code)
            span.set_attribute("rpc.response.status_code", error.status)
            if error.status >= 500:
                span.set_status(Status(StatusCode.ERROR, error.code))
            raise
        finally:
            otel_context.detach(token)
            span.end()

    async def _execute(
        self,
        ep: Endpoint,
        ctx: Context,
        request: Message,
        msg: Msg,
        codec: Codec,
        timeout: float,
        sent: Sent,
    ) -> None:
        async with asyncio.timeout(timeout):
            if ep.rpc.streaming:
                await self._stream(ep, ep.handler(ctx, request), msg, codec, sent)
                return
            response = await ep.handler(ctx, request)
        if not isinstance(response, ep.rpc.response):
            raise Internal(f"handler returned {type(response).__name__}")
        if msg.reply:
            await self.nc.publish(msg.reply, codec.encode(response))

    async def _stream(
        self, ep: Endpoint, items: AsyncIterator[Message], msg: Msg, codec: Codec, sent: Sent
    ) -> None:
        async for item in items:
            if not isinstance(item, ep.rpc.response):
                raise Internal(f"stream yielded {type(item).__name__}")
            if msg.reply:
                await self.nc.publish(
                    msg.reply,
                    codec.encode(item),
                    headers={
                        HEADER_CONTENT_TYPE: codec.content_type,
                        HEADER_STREAM_SEQ: str(sent.count + 1),
                    },
                )
            sent.count += 1
        if msg.reply:
            await self.nc.publish(
                msg.reply,
                b"",
                headers={
                    HEADER_CONTENT_TYPE: codec.content_type,
                    HEADER_STREAM_SEQ: str(sent.count + 1),
                    HEADER_STREAM_END: "1",
                },
            )

    async def _reply_error(
        self, msg: Msg, codec: Codec, error: ServiceError, *, stream_seq: int | None
    ) -> None:
        if not msg.reply:
            return
        await publish_error(self.nc, msg.reply, codec, error, stream_seq=stream_seq)


class Sent:
    """How many stream messages a request has been sent, so its last one is numbered on."""

    __slots__ = ("count",)

    def __init__(self) -> None:
        self.count = 0


async def publish_error(
    nc: NATS, reply: str, codec: Codec, error: ServiceError, *, stream_seq: int | None = None
) -> None:
    """An error reply in the micro protocol's headers and the fleet's `Error` body; in a stream
    it is the last message (numbered, with the end marker)."""
    headers = {
        HEADER_ERROR_CODE: str(error.status),
        HEADER_ERROR: _header_text(error.message),
        HEADER_CONTENT_TYPE: codec.content_type,
    }
    if stream_seq is not None:
        headers[HEADER_STREAM_SEQ] = str(stream_seq)
        headers[HEADER_STREAM_END] = "1"
    try:
        await nc.publish(reply, codec.encode(error.to_proto()), headers=headers)
    except Exception as exc:  # the connection is gone: nothing more can be said to the caller
        get_logger().warning("error reply not sent", reply_error=type(exc).__name__)


def _header_text(text: str) -> str:
    """Header-safe text: one line, printable characters only (messages may echo input)."""
    return "".join(c if c.isprintable() else "?" for c in " ".join(text.split()))[:200]


def _timeout(headers: dict[str, str], default: float) -> float:
    raw = headers.get(HEADER_TIMEOUT_MS)
    if not raw:
        return default
    try:
        ms = int(raw)
    except ValueError:
        return default
    # Stop a little before the caller does, so that our 504 reaches it before its own timeout.
    seconds = min(max(ms, 1) / 1000, MAX_TIMEOUT)
    return max(seconds - DEADLINE_MARGIN, seconds * 0.9)
