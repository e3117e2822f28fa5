"""Where a request's time goes inside the worker process, without the network.

    python -m benchmarks.hotpath            # no OTel SDK installed
    python -m benchmarks.hotpath --otel     # SDK tracer + meter providers, as runtime-otel

The echo request of the network benchmark, fed straight to the runtime's subscription callback
(a stand-in connection records what `RequestServer` subscribes and publishes), in batches of 64
like the 64-in-flight run; and each stage alone. CPU time of this process (all threads, so the
OTel export threads count) per request, the least of several passes: other processes only ever
add to it. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from benchmarks.common import ECHO_BODY, ECHO_SUBJECT, MSGPACK_HEADERS, run_async

BATCH = 64


class Recorder:
    """Just enough of a nats-py connection for RequestServer: subscriptions and publishes."""

    def __init__(self) -> None:
        self.callbacks: dict[str, Callable[[Any], Awaitable[None]]] = {}
        self.published = 0

    async def subscribe(
        self, subject: str, queue: str = "", cb: Callable[[Any], Awaitable[None]] | None = None
    ) -> Any:
        assert cb is not None
        self.callbacks[subject] = cb
        return self

    async def publish(
        self, subject: str, payload: bytes = b"", reply: str = "", headers: Any = None
    ) -> None:
        self.published += 1


def cpu_per_call(fn: Callable[[], object], n: int, passes: int = 7) -> float:
    """CPU µs of one call of a synchronous stage (least of `passes`)."""
    results = []
    for _ in range(passes):
        started = time.process_time()
        for _ in range(n):
            fn()
        results.append((time.process_time() - started) / n * 1e6)
    return min(results)


async def measure(otel: bool, n: int) -> dict[str, float]:
    from nats.aio.msg import Msg

    if otel:
        from benchmarks.servers import install_otel

        install_otel()
    from schemas.codec import MSGPACK_CODEC, PROTOBUF_CODEC
    from tests.support import echo
    from tests.support.testkit_pb2 import EchoReply, EchoRequest
    from workers.runtime.endpoints import RequestServer
    from workers.runtime.telemetry import (
        Labels,
        provider_tracer,
        request_duration,
        requests_total,
        tracing_enabled,
    )
    from workers.runtime.worker import bind_handlers

    impl = echo.EchoService()
    endpoints = bind_handlers(echo.component, impl)
    nc = Recorder()
    server = RequestServer(
        nc,  # type: ignore[arg-type]
        endpoints,
        concurrency=BATCH,
        default_timeout=30.0,
        max_request_bytes=4 * 1024 * 1024,
        client=None,  # type: ignore[arg-type]
        events=None,  # type: ignore[arg-type]
        tracing=tracing_enabled(),
    )
    await server.start()
    claim = next(cb for subject, cb in nc.callbacks.items() if subject.endswith(".echo.echo"))

    def message() -> Msg:
        return Msg(
            _client=None,  # type: ignore[arg-type]
            subject=ECHO_SUBJECT,
            reply="_INBOX.bench.1",
            data=ECHO_BODY,
            headers=dict(MSGPACK_HEADERS),
        )

    class Ctx:
        tenant = "bench"

    request = MSGPACK_CODEC.decode(EchoRequest, ECHO_BODY)

    def handler() -> EchoReply:
        coro = impl.echo(Ctx, request)  # type: ignore[arg-type]
        try:
            coro.send(None)
        except StopIteration as done:
            reply: EchoReply = done.value
            return reply
        raise RuntimeError("the echo handler suspended")

    reply = handler()
    out: dict[str, float] = {
        "msgpack decode": cpu_per_call(lambda: MSGPACK_CODEC.decode(EchoRequest, ECHO_BODY), n),
        "echo handler": cpu_per_call(handler, n),
        "msgpack encode": cpu_per_call(lambda: MSGPACK_CODEC.encode(reply), n),
    }
    # The same messages as protobuf bodies (Content-Type application/protobuf), for comparison.
    proto_body = request.SerializeToString()
    out["protobuf decode"] = cpu_per_call(lambda: PROTOBUF_CODEC.decode(EchoRequest, proto_body), n)
    out["protobuf encode"] = cpu_per_call(lambda: PROTOBUF_CODEC.encode(reply), n)

    async def bare(msg: Msg) -> None:
        req = MSGPACK_CODEC.decode(EchoRequest, msg.data)
        await nc.publish(msg.reply, MSGPACK_CODEC.encode(await impl.echo(Ctx, req)))  # type: ignore[arg-type]

    async def through(callback: Callable[[Msg], Awaitable[None]]) -> float:
        results = []
        for _ in range(7):
            msgs = [message() for _ in range(n)]
            started = time.process_time()
            for i in range(0, n, BATCH):
                for msg in msgs[i : i + BATCH]:
                    await callback(msg)
                while server.inflight:
                    await asyncio.sleep(0)
                time.sleep(0)  # let the OTel export threads take the GIL, as they would
            results.append((time.process_time() - started) / n * 1e6)
        return min(results[1:])

    out["decode + handler + encode + publish, inline"] = await through(bare)
    out["runtime: subscription callback to reply"] = await through(claim)
    if otel:
        from opentelemetry import context as otel_context
        from opentelemetry.trace import SpanKind, set_span_in_context

        sdk_tracer = provider_tracer()
        attributes = {**endpoints[0].span_attributes, "aifleet.tenant": "bench"}

        def span() -> None:
            s = sdk_tracer.start_span(
                endpoints[0].template, kind=SpanKind.SERVER, attributes=attributes
            )
            token = otel_context.attach(set_span_in_context(s))
            otel_context.detach(token)
            s.end()

        labels = Labels("echo", "echo", "req")("ok")

        def measurements() -> None:
            requests_total.add(1, labels)
            request_duration.record(0.001, labels)

        out["OTel span: start, make current, end"] = cpu_per_call(span, n)
        out["OTel metrics: counter.add + histogram.record"] = cpu_per_call(measurements, n)
    assert nc.published > 0
    return {k: round(v, 2) for k, v in out.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--otel", action="store_true", help="install the SDK providers first")
    parser.add_argument("-n", type=int, default=6400, help="requests per pass")
    args = parser.parse_args(argv)

    async def go() -> dict[str, float]:
        return await measure(args.otel, args.n)

    sys.stdout.write(json.dumps(run_async(go())) + "\n")


if __name__ == "__main__":
    main()
