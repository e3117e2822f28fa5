"""The JetStream consume loop: claim → decode → execute → settle, for a component's jobs
(AI_JOBS) and for the events it consumes (AI_EVENTS); a `Consumption` says which.

Settling is the contract: `ack` only after the handler returned (its effect is committed),
`in_progress` while it runs, `nak(delay)` with backoff on a retryable failure, and on a
permanent one, or after the last attempt, a copy to AI_DLQ with the reason and then `term`.
Handlers make their effect idempotent by `ctx.message_id`, so a redelivery after a crash
changes nothing twice.

A worker that dies during a job's last attempt never settles it: the server delivers it once
more, and that delivery is not run but dead-lettered. Before that, the op's `abandoned`
handler (`<op>_abandoned(ctx, request)` on the component's handler object, if it has one)
is called, so that a status the job left half-way (`processing`) can end as failed. It is
called too when the last attempt ends in a retryable failure (its deadline passed, say).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeout
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig
from nats.js.errors import FetchTimeoutError

from schemas.codec import PROTOBUF, codec_for
from schemas.errors import BadRequest, ServiceError
from subjects import (
    HEADER_CONTENT_TYPE,
    HEADER_DLQ_DELIVERIES,
    HEADER_DLQ_ERROR,
    HEADER_DLQ_MSG_ID,
    HEADER_DLQ_SEQUENCE,
    HEADER_DLQ_SUBJECT,
    HEADER_MESSAGE_TYPE,
    HEADER_MSG_ID,
    STREAM_EVENTS,
    STREAM_JOBS,
    dead_letter_subject,
    event_consumer,
    filter_subject,
    job_consumer,
    listen_subject,
    split,
    tenant_of,
)
from subjects.events import EventName
from subjects.streams import consumer_config, ensure_consumer
from workers.runtime.client import Client
from workers.runtime.config import Settings
from workers.runtime.context import Context
from workers.runtime.endpoints import Endpoint, Handler
from workers.runtime.events import EventPublisher
from workers.runtime.failures import as_service_error
from workers.runtime.logs import get_logger
from workers.runtime.telemetry import Labels, request_duration, requests_total

MAX_ACK_PENDING = 10_000
ABANDON_TIMEOUT = 30.0  # seconds an `abandoned` handler may take


@dataclass(frozen=True)
class Consumption:
    """What one durable pull consumer delivers to a component, and which op handles each message.

    `routes` maps a route key to an op: for jobs the key is the op itself (subject
    `ai.v1.<tenant>.job.<component>.<op>`), for events it is `<component>.<event>` of the
    publishing component (subject `ai.v1.<tenant>.evt.<component>.<event>`).
    """

    kind: str  # "job" or "event"
    stream: str
    durable: str
    filter_subjects: tuple[str, ...]
    routes: Mapping[str, str]

    @classmethod
    def jobs(cls, component: str, ops: frozenset[str]) -> Consumption:
        return cls(
            "job",
            STREAM_JOBS,
            job_consumer(component),
            (listen_subject("job", component),),
            {op: op for op in sorted(ops)},
        )

    @classmethod
    def events(cls, component: str, events: Mapping[EventName, str]) -> Consumption:
        ordered = sorted(events)
        return cls(
            "event",
            STREAM_EVENTS,
            event_consumer(component),
            tuple(filter_subject("evt", None, e.component, e.event) for e in ordered),
            {str(e): events[e] for e in ordered},
        )

    def route(self, subject: str) -> tuple[str, str]:
        """(route key, op) of a message's subject; op is "" when nothing here handles it."""
        found = split(subject)
        if found is None:
            return "", ""
        key = found.name if self.kind == "job" else f"{found.component}.{found.name}"
        return key, self.routes.get(key, "")


class JobRunner:
    """Pulls one component's jobs (or consumed events) and settles each as described above."""

    def __init__(
        self,
        js: JetStreamContext,
        component: str,
        endpoints: list[Endpoint],
        settings: Settings,
        *,
        client: Client,
        events: EventPublisher,
        consumption: Consumption | None = None,
        abandoned: Mapping[str, Handler] | None = None,
    ) -> None:
        self.js = js
        self.component = component
        self.consumption = consumption or Consumption.jobs(
            component, frozenset(ep.rpc.op for ep in endpoints)
        )
        self._ops = {ep.rpc.op: ep for ep in endpoints}
        self._abandoned = dict(abandoned or {})
        self._labels = {
            ep.rpc.op: Labels(component, ep.rpc.op, self.consumption.kind) for ep in endpoints
        }
        self._settings = settings
        self._client = client
        self._events = events
        self._limit = settings.concurrency
        self._inflight: set[asyncio.Task[None]] = set()
        self._room = asyncio.Event()
        self._stopping = False
        self._loop_task: asyncio.Task[None] | None = None
        self._psub: JetStreamContext.PullSubscription | None = None
        self._log = get_logger(component=component)
        # One delivery more than our attempts: if a worker dies during the last attempt, the
        # server still hands the job over once more, and it goes to the dead letters then.
        self._attempts = settings.job_max_deliver
        self._ack_wait = settings.job_ack_wait

    async def start(self) -> None:
        source = self.consumption
        config = consumer_config(
            source.durable,
            source.filter_subjects,
            description=f"aifleet {self.component} {source.kind}s",
            max_deliver=self._attempts + 1,
            ack_wait=self._settings.job_ack_wait,
            # Each replica bounds its own in-flight jobs by fetching only into free slots; the
            # consumer-wide bound only stops a runaway, so it must not cap added replicas.
            max_ack_pending=MAX_ACK_PENDING,
        )
        await ensure_consumer(self.js, source.stream, config)
        info = await self.js.consumer_info(source.stream, source.durable)
        self._follow(info.config)
        psub = self._psub = await self.js.pull_subscribe_bind(
            durable=source.durable, stream=source.stream
        )
        self._loop_task = asyncio.create_task(self._pull(psub))

    def _follow(self, actual: ConsumerConfig) -> None:
        """Settle by the limits the server enforces when an existing consumer predates a change
        of settings: a job must go to the dead letters by the server's last delivery (else it
        stays in AI_JOBS, never delivered again), and the keepalive must beat its ack_wait."""
        attempts, ack_wait = self._settings.job_max_deliver, self._settings.job_ack_wait
        if actual.max_deliver is not None and actual.max_deliver > 0:
            attempts = max(1, min(attempts, actual.max_deliver - 1))
        if actual.ack_wait:
            ack_wait = min(ack_wait, actual.ack_wait)
        if (attempts, ack_wait) != (self._attempts, self._ack_wait):
            self._log.warning(
                "consumer differs from settings; following the consumer",
                consumer=self.consumption.durable,
                max_deliver=actual.max_deliver,
                ack_wait=actual.ack_wait,
                job_max_deliver=self._settings.job_max_deliver,
                job_ack_wait=self._settings.job_ack_wait,
            )
        self._attempts, self._ack_wait = attempts, ack_wait

    async def stop(self, timeout: float) -> int:
        """Stop fetching and let running jobs settle; an unsettled job is simply redelivered."""
        self._stopping = True
        self._room.set()
        if self._loop_task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
        if self._psub is not None:
            # Unsubscribe rather than leave it to the connection's drain: nats-py's fetch takes
            # messages off the queue without task_done(), so draining this subscription waits
            # for the whole drain timeout (30 s) instead of returning.
            with contextlib.suppress(Exception):
                await self._psub.unsubscribe()
            self._psub = None
        if not self._inflight:
            return 0
        _, pending = await asyncio.wait(set(self._inflight), timeout=timeout)
        for task in pending:
            task.cancel()
        return len(pending)

    # -- claim ------------------------------------------------------------------------------

    async def _pull(self, psub: JetStreamContext.PullSubscription) -> None:
        while not self._stopping:
            free = self._limit - len(self._inflight)
            if free <= 0:
                self._room.clear()
                await self._room.wait()
                continue
            try:
                msgs = await psub.fetch(min(free, self._settings.job_batch), timeout=1.0)
            except (TimeoutError, FetchTimeoutError, NatsTimeout):
                continue
            except Exception as exc:  # reconnecting, server restarting: try again shortly
                self._log.warning("job fetch failed", error=type(exc).__name__)
                await asyncio.sleep(0.5)
                continue
            for msg in msgs:
                task = asyncio.create_task(self._settle_one(msg))
                self._inflight.add(task)
                task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._inflight.discard(task)
        self._room.set()

    # -- decode, execute, settle ------------------------------------------------------------

    async def _settle_one(self, msg: Msg) -> None:
        started = time.perf_counter_ns()
        meta = msg.metadata
        key, op = self.consumption.route(msg.subject)
        keepalive = asyncio.create_task(self._keep_alive(msg))
        outcome = "ok"
        try:
            if meta.num_delivered > self._attempts:
                await self._abandon(msg, key, op, meta.num_delivered, meta.sequence.stream)
                raise _OutOfAttempts(meta.num_delivered)
            await self._execute(msg, key, op, meta.num_delivered, meta.sequence.stream)
            await msg.ack_sync(timeout=5.0)
        except Exception as exc:
            outcome = await self._fail(msg, op or key, exc, started)
        finally:
            keepalive.cancel()
            labels = self._labels.get(op)
            if labels is not None:
                requests_total.add(1, labels(outcome))
                request_duration.record((time.perf_counter_ns() - started) / 1e9, labels(outcome))

    async def _execute(self, msg: Msg, key: str, op: str, attempt: int, sequence: int) -> None:
        ep = self._ops.get(op)
        if ep is None:
            raise BadRequest(f"{self.component} has no {self.consumption.kind} operation {key!r}")
        ctx, request = self._decode(msg, ep, key, op, attempt, sequence)
        async with asyncio.timeout(self._settings.job_timeout):
            result: Any = ep.handler(ctx, request)
            if ep.rpc.streaming:
                async for _ in result:
                    pass
            else:
                await result

    async def _abandon(self, msg: Msg, key: str, op: str, attempt: int, sequence: int) -> None:
        """The op's `abandoned` handler for a job out of attempts; its failure is logged (the
        job goes to the dead letters either way)."""
        handler, ep = self._abandoned.get(op), self._ops.get(op)
        if handler is None or ep is None:
            return
        try:
            ctx, request = self._decode(msg, ep, key, op, attempt, sequence)
            async with asyncio.timeout(min(self._settings.job_timeout, ABANDON_TIMEOUT)):
                await handler(ctx, request)
        except Exception as exc:
            self._log.warning("abandoned job not handled", op=op, key=key, error=type(exc).__name__)

    def _decode(
        self, msg: Msg, ep: Endpoint, key: str, op: str, attempt: int, sequence: int
    ) -> tuple[Context, Any]:
        headers = msg.headers or {}
        tenant = tenant_of(msg.subject)
        if self.consumption.kind == "event":
            # Events are protobuf and name their type; one of another type is malformed here.
            wanted = ep.rpc.request.DESCRIPTOR.full_name
            if headers.get(HEADER_MESSAGE_TYPE, wanted) != wanted:
                raise BadRequest(
                    f"event {key} is a {headers.get(HEADER_MESSAGE_TYPE)}, expected {wanted}"
                )
            request = codec_for(headers.get(HEADER_CONTENT_TYPE, PROTOBUF)).decode(
                ep.rpc.request, msg.data
            )
        else:
            request = codec_for(headers.get(HEADER_CONTENT_TYPE)).decode(ep.rpc.request, msg.data)
        ctx = Context(
            tenant=tenant,
            component=self.component,
            op=op,
            headers=headers,
            deadline=time.monotonic() + self._settings.job_timeout,
            client=self._client,
            events=self._events,
            message_id=headers.get(HEADER_MSG_ID) or f"{self.consumption.stream}:{sequence}",
            attempt=attempt,
        )
        return ctx, request

    async def _fail(self, msg: Msg, op: str, exc: Exception, started: int) -> str:
        elapsed = (time.perf_counter_ns() - started) / 1e9
        error, is_bug = as_service_error(exc, deadline_passed=elapsed >= self._settings.job_timeout)
        attempt = msg.metadata.num_delivered
        log = self._log.bind(op=op, attempt=attempt, code=error.code)
        if is_bug:
            log.error("job failed", exc_info=exc)
        retry = (error.retryable or is_bug) and not isinstance(exc, _OutOfAttempts)
        try:
            if retry and attempt < self._attempts:
                backoff = self._settings.job_backoff
                await msg.nak(delay=backoff[min(attempt, len(backoff)) - 1])
                log.info("job will be retried")
                return error.code
            if retry:
                # Unfinished and out of attempts (its deadline passed, or the consumer allows
                # fewer deliveries than the handler counted on): like a lost last attempt, the
                # op ends what it left half-way (`processing`) before the dead letter.
                # The handler sees the attempt after the last, as on the lost attempt's path.
                key, route = self.consumption.route(msg.subject)
                await self._abandon(msg, key, route, attempt + 1, msg.metadata.sequence.stream)
            await self._dead_letter(msg, op, error)
            await msg.term()
            log.warning("job dead-lettered", reason=error.message)
        except Exception as settle_exc:  # the job is redelivered after ack_wait
            log.warning("job not settled", error=type(settle_exc).__name__)
        return error.code

    async def _dead_letter(self, msg: Msg, op: str, error: ServiceError) -> None:
        found = split(msg.subject)
        tenant = found.tenant if found is not None else "unknown"
        sequence = msg.metadata.sequence.stream
        headers = dict(msg.headers or {})
        headers.update(
            {
                HEADER_DLQ_SUBJECT: msg.subject,
                HEADER_DLQ_SEQUENCE: str(sequence),
                HEADER_DLQ_DELIVERIES: str(msg.metadata.num_delivered),
                HEADER_DLQ_ERROR: f"{error.status} {error.code}: {error.message}"[:500],
                # The original id stays readable: replaying a dead letter keeps its idempotency key.
                HEADER_DLQ_MSG_ID: (msg.headers or {}).get(HEADER_MSG_ID, ""),
                HEADER_MSG_ID: f"dlq:{self.consumption.stream}:{sequence}",
            }
        )
        # Built from the raw tokens: a job whose tenant token is invalid is dead-lettered too.
        name = op if op and "." not in op else "unknown"
        subject = dead_letter_subject(tenant, self.component, name)
        await self.js.publish(subject, msg.data, headers=headers, timeout=5.0)

    async def _keep_alive(self, msg: Msg) -> None:
        interval = max(self._ack_wait / 3, 0.1)
        while True:
            await asyncio.sleep(interval)
            try:
                await msg.in_progress()
            except Exception as exc:  # reconnecting: keep beating, the next one may get through
                self._log.debug("job keepalive missed", error=type(exc).__name__)


class _OutOfAttempts(ServiceError):
    status, code = 500, "INTERNAL"

    def __init__(self, deliveries: int) -> None:
        super().__init__(f"no attempts left after {deliveries - 1} deliveries")
