"""One benchmark contender per process: `python -m benchmarks.servers KIND --nats-url URL`.

    raw           nats-py queue subscriber that publishes the request body back (the baseline)
    raw-codec     the same subscriber doing what no runtime can skip: the aifleet msgpack codec
                  (decode into EchoRequest, encode the EchoReply) and the echo handler, inline
    runtime       the echo test component on workers.runtime.worker.Worker, no OTel SDK
    runtime-otel  the same, with an SDK TracerProvider (BatchSpanProcessor to an exporter that
                  drops spans) and an SDK MeterProvider installed before Worker.start
    faststream    the same echo on FastStream's NATS broker (msgpack in and out), the tenant not
                  read: FastStream's cheapest form of this handler
    faststream-path   the same, with the tenant taken from the subject (`Path()`), like the runtime
    faststream-otel   `faststream` plus its NatsTelemetryMiddleware on the same SDK providers as
                  runtime-otel
    cache         the cache component on the Worker, REDIS_URL from --redis-url

Every kind runs on uvloop. The process prints one line `ready` on stdout once it serves, and on
SIGTERM stops gracefully and prints one JSON line of what it counted (spans exported, ...).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from benchmarks.common import ECHO_LISTEN, ECHO_QUEUE, TENANT, run_async

KINDS = (
    "raw",
    "raw-codec",
    "runtime",
    "runtime-otel",
    "faststream",
    "faststream-path",
    "faststream-otel",
    "cache",
)


class GcClock:
    """Time the cyclic garbage collector spends, per generation (reported at exit)."""

    seconds = [0.0, 0.0, 0.0]
    collections = [0, 0, 0]
    _started = 0.0

    @classmethod
    def install(cls) -> None:
        gc.callbacks.append(cls._callback)

    @classmethod
    def _callback(cls, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            cls._started = time.perf_counter()
        else:
            generation = info["generation"]
            cls.seconds[generation] += time.perf_counter() - cls._started
            cls.collections[generation] += 1

    @classmethod
    def report(cls) -> dict[str, Any]:
        return {"gc_seconds": [round(s, 4) for s in cls.seconds], "gc_collections": cls.collections}


def ready() -> None:
    sys.stdout.write("ready\n")
    sys.stdout.flush()


async def until_sigterm() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


# -- raw nats-py --------------------------------------------------------------------------------


async def serve_raw(nats_url: str, *, codec: bool) -> dict[str, Any]:
    import nats
    from nats.aio.msg import Msg

    nc = await nats.connect(nats_url, name="bench:raw")
    served = 0

    async def echo(msg: Msg) -> None:
        nonlocal served
        served += 1
        await nc.publish(msg.reply, msg.data)

    callback = echo
    if codec:  # imported only here: plain `raw` is also the idle-RSS baseline
        from schemas.codec import MSGPACK_CODEC
        from tests.support.echo import EchoService
        from tests.support.testkit_pb2 import EchoRequest

        handler = EchoService()

        class Ctx:  # what the echo handler reads of its context
            def __init__(self, tenant: str) -> None:
                self.tenant = tenant

        async def echo_codec(msg: Msg) -> None:
            nonlocal served
            served += 1
            request = MSGPACK_CODEC.decode(EchoRequest, msg.data)
            ctx = Ctx(msg.subject.split(".", 3)[2])
            reply = await handler.echo(ctx, request)  # type: ignore[arg-type]
            await nc.publish(msg.reply, MSGPACK_CODEC.encode(reply))

        callback = echo_codec

    await nc.subscribe(ECHO_LISTEN, queue=ECHO_QUEUE, cb=callback)
    await nc.flush()
    ready()
    await until_sigterm()
    await nc.drain()
    return {"served": served}


# -- the aifleet runtime ------------------------------------------------------------------------


class OtelCounts:
    """Spans the dropping exporter saw, to tell whether the span queue overflowed."""

    spans = 0
    metric_exports = 0


def install_otel() -> tuple[Any, Any, Callable[[], None]]:
    """SDK providers that record everything and export to nowhere, installed globally.

    Returns the tracer provider, the meter provider and the shutdown function.
    """
    from opentelemetry import metrics, trace
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import (
        MetricExporter,
        MetricExportResult,
        MetricsData,
        PeriodicExportingMetricReader,
    )
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    class DropSpans(SpanExporter):
        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            OtelCounts.spans += len(spans)
            return SpanExportResult.SUCCESS

    class DropMetrics(MetricExporter):
        def export(
            self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
        ) -> MetricExportResult:
            OtelCounts.metric_exports += 1
            return MetricExportResult.SUCCESS

        def force_flush(self, timeout_millis: float = 10_000) -> bool:
            return True

        def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
            return None

    resource = Resource.create({"service.name": "aifleet-bench"})
    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(BatchSpanProcessor(DropSpans()))
    trace.set_tracer_provider(tracer_provider)
    meter_provider = MeterProvider(
        resource=resource,
        metric_readers=[PeriodicExportingMetricReader(DropMetrics(), export_interval_millis=5_000)],
    )
    metrics.set_meter_provider(meter_provider)

    def shutdown() -> None:
        tracer_provider.shutdown()
        meter_provider.shutdown()

    return tracer_provider, meter_provider, shutdown


async def serve_runtime(
    nats_url: str, *, component: str, redis_url: str | None, otel: bool
) -> dict[str, Any]:
    from workers.runtime.config import Settings
    from workers.runtime.logs import configure as configure_logging
    from workers.runtime.telemetry import tracing_enabled
    from workers.runtime.worker import Worker

    configure_logging("INFO", "json")  # what `aifleet worker` configures by default
    shutdown_otel = install_otel()[2] if otel else None
    if component == "echo":
        from tests.support import echo

        loaded = [echo.component]
    else:
        from workers.cache import service as cache

        loaded = [cache.component]
    settings = Settings.model_validate({"nats_url": nats_url, "redis_url": redis_url})
    worker = Worker(loaded, settings)
    await worker.start()
    ready()
    await until_sigterm()
    served = sum(ep.num_requests for server in worker.servers for ep in server.endpoints)
    traced = tracing_enabled()
    await worker.stop()
    if shutdown_otel is not None:
        shutdown_otel()
    return {
        "served": served,
        "tracing": traced,
        "spans_exported": OtelCounts.spans,
        "metric_exports": OtelCounts.metric_exports,
    }


# -- FastStream ---------------------------------------------------------------------------------


async def serve_faststream(nats_url: str, *, path: bool, otel: bool) -> dict[str, Any]:
    import msgpack
    from faststream import Path
    from faststream.nats import NatsBroker, NatsMessage

    middlewares: list[Any] = []
    shutdown_otel = None
    if otel:
        from faststream.nats.opentelemetry import NatsTelemetryMiddleware

        tracer_provider, meter_provider, shutdown_otel = install_otel()
        middlewares.append(
            NatsTelemetryMiddleware(tracer_provider=tracer_provider, meter_provider=meter_provider)
        )
    # Its "Received"/"Processed" lines go out at DEBUG and the logger stays at INFO: like the
    # runtime, nothing is logged per request (FastStream's default would log two lines each).
    broker = NatsBroker(nats_url, log_level=logging.DEBUG, middlewares=middlewares)
    served = 0

    async def decode_msgpack(msg: NatsMessage) -> Any:
        return msgpack.unpackb(msg.body, raw=False)

    def reply(body: dict[str, Any], tenant: str) -> bytes:
        nonlocal served
        served += 1
        fields = {
            "text": body.get("text", ""),
            "blob": body.get("blob", b""),
            "number": body.get("number", 0),
            "items": body.get("items", []),
            "tenant": tenant,
            "counts": body.get("counts", {}),
        }
        packed: bytes = msgpack.packb(fields, use_bin_type=True)
        return packed

    if path:

        @broker.subscriber(
            ECHO_LISTEN.replace("*", "{tenant}"), queue=ECHO_QUEUE, decoder=decode_msgpack
        )
        async def echo_path(body: dict[str, Any], tenant: str = Path()) -> bytes:
            return reply(body, tenant)

    else:

        @broker.subscriber(ECHO_LISTEN, queue=ECHO_QUEUE, decoder=decode_msgpack)
        async def echo(body: dict[str, Any]) -> bytes:
            return reply(body, TENANT)

    await broker.start()
    await broker.connection.flush()
    ready()
    await until_sigterm()
    await broker.stop()
    if shutdown_otel is not None:
        shutdown_otel()
    return {"served": served, "spans_exported": OtelCounts.spans}


# -- entry point --------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=KINDS)
    parser.add_argument("--nats-url", required=True)
    parser.add_argument("--redis-url")
    args = parser.parse_args(argv)
    serve: Callable[[], Awaitable[dict[str, Any]]]
    if args.kind.startswith("raw"):

        def serve() -> Awaitable[dict[str, Any]]:
            return serve_raw(args.nats_url, codec=args.kind == "raw-codec")

    elif args.kind.startswith("faststream"):

        def serve() -> Awaitable[dict[str, Any]]:
            return serve_faststream(
                args.nats_url, path=args.kind.endswith("path"), otel=args.kind.endswith("otel")
            )

    else:

        def serve() -> Awaitable[dict[str, Any]]:
            return serve_runtime(
                args.nats_url,
                component="cache" if args.kind == "cache" else "echo",
                redis_url=args.redis_url,
                otel=args.kind == "runtime-otel",
            )

    async def go() -> dict[str, Any]:
        return await serve()

    GcClock.install()
    counts = run_async(go()) | GcClock.report()
    sys.stdout.write(json.dumps(counts) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
