"""Telemetry of the request path: one SERVER span per request in the caller's trace, named by
the subject template, context carried on to events, and metrics with bounded labels only.

OpenTelemetry allows one global tracer and meter provider per process, and the runtime decides
at `Worker.start` whether to trace, so the SDK providers are installed once for this module,
before any worker of it starts. They stay installed afterwards (the API cannot unset them); the
span exporter is shut down at the end so later tests do not accumulate spans in memory.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, TypeVar

import pytest
import redis.asyncio
from nats.aio.client import Client as NATS
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from aifleet.embedded import EmbeddedNats, EmbeddedValkey
from subjects import STREAM_EVENTS, event_subject, request_subject
from tests.support import echo
from tests.support.fleet import running_worker
from workers.cache import service as cache
from workers.runtime.worker import Worker

T = TypeVar("T")
ALLOWED_LABELS = {"aifleet.component", "aifleet.op", "aifleet.kind", "aifleet.outcome"}
TEMPLATE = "ai.v1.{tenant}.req.echo.echo"


class Telemetry:
    def __init__(self, spans: InMemorySpanExporter, reader: InMemoryMetricReader) -> None:
        self.spans = spans
        self.reader = reader

    def finished(self) -> tuple[ReadableSpan, ...]:
        return self.spans.get_finished_spans()

    def data_points(self, metric: str) -> list[Any]:
        data = self.reader.get_metrics_data()
        assert data is not None
        return [
            point
            for resource in data.resource_metrics
            for scope in resource.scope_metrics
            for m in scope.metrics
            if m.name == metric
            for point in m.data.data_points
        ]


@pytest.fixture(scope="module")
def telemetry() -> Iterator[Telemetry]:
    """SDK tracer and meter providers with in-memory exporters, installed before any worker."""
    spans = InMemorySpanExporter()
    current = trace.get_tracer_provider()
    if isinstance(current, TracerProvider):
        current.add_span_processor(SimpleSpanProcessor(spans))
    else:
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(spans))
        trace.set_tracer_provider(provider)
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    metrics.set_meter_provider(meter_provider)
    if metrics.get_meter_provider() is not meter_provider:
        pytest.fail("another MeterProvider was installed earlier in this process")
    try:
        yield Telemetry(spans, reader)
    finally:
        spans.shutdown()


@pytest.fixture
async def worker(telemetry: Telemetry, nats_server: EmbeddedNats) -> AsyncIterator[Worker]:
    async with running_worker([echo.component], nats_server.url) as w:
        yield w


@pytest.fixture
def tenant() -> str:
    return "o" + uuid.uuid4().hex[:16]


def traceparent() -> tuple[str, str, str]:
    """(header, trace id, span id) of a fresh sampled remote parent."""
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return f"00-{trace_id}-{span_id}-01", trace_id, span_id


async def eventually(probe: Callable[[], T | None], timeout: float = 2.0) -> T:
    """The first non-empty result of `probe`; the span ends right after the reply is sent."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        found = probe()
        if found:
            return found
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail("nothing was recorded in time")
        await asyncio.sleep(0.005)


def spans_of_trace(telemetry: Telemetry, trace_id: str) -> Callable[[], list[ReadableSpan]]:
    def probe() -> list[ReadableSpan]:
        return [
            s
            for s in telemetry.finished()
            if s.context is not None and s.context.trace_id == int(trace_id, 16)
        ]

    return probe


async def test_request_span_joins_the_callers_trace(
    worker: Worker, nc: NATS, telemetry: Telemetry, tenant: str
) -> None:
    """A traceparent → one SERVER span, child of that span, named by the subject template."""
    header, trace_id, span_id = traceparent()
    reply = await nc.request(
        request_subject(tenant, "echo", "echo"),
        b'{"text": "traced"}',
        timeout=5,
        headers={"traceparent": header},
    )
    assert json.loads(reply.data)["text"] == "traced"
    spans = await eventually(spans_of_trace(telemetry, trace_id))
    assert [s.name for s in spans] == [TEMPLATE]
    span = spans[0]
    assert span.kind is SpanKind.SERVER
    assert span.parent is not None
    assert span.parent.span_id == int(span_id, 16)
    assert span.parent.is_remote
    assert tenant not in span.name
    attributes = dict(span.attributes or {})
    assert attributes["messaging.destination.template"] == TEMPLATE
    assert attributes["rpc.method"] == "Echo"
    assert attributes["aifleet.tenant"] == tenant
    assert span.status.status_code is not StatusCode.ERROR


async def test_request_without_traceparent_starts_a_new_trace(
    worker: Worker, nc: NATS, telemetry: Telemetry, tenant: str
) -> None:
    """No incoming context → a root SERVER span of its own."""
    await nc.request(request_subject(tenant, "echo", "echo"), b'{"text": "root"}', timeout=5)

    def probe() -> list[ReadableSpan]:
        return [
            s for s in telemetry.finished() if (s.attributes or {}).get("aifleet.tenant") == tenant
        ]

    spans = await eventually(probe)
    assert len(spans) == 1
    assert spans[0].parent is None
    assert spans[0].kind is SpanKind.SERVER


async def test_failed_request_span_is_an_error_without_the_exception_text(
    worker: Worker, nc: NATS, telemetry: Telemetry, tenant: str
) -> None:
    """A handler crash marks the span ERROR with the code, and records no exception text."""
    header, trace_id, _ = traceparent()
    reply = await nc.request(
        request_subject(tenant, "echo", "echo"),
        b'{"crash": true}',
        timeout=5,
        headers={"traceparent": header},
    )
    assert (reply.headers or {}).get("Nats-Service-Error-Code") == "500"
    span = (await eventually(spans_of_trace(telemetry, trace_id)))[0]
    assert span.status.status_code is StatusCode.ERROR
    attributes = dict(span.attributes or {})
    assert attributes["aifleet.error.code"] == "INTERNAL"
    assert attributes["rpc.response.status_code"] == 500
    recorded = json.dumps([dict(e.attributes or {}) for e in span.events]) + json.dumps(
        {k: str(v) for k, v in attributes.items()}
    )
    assert "secret internal detail" not in recorded


async def test_request_metrics_carry_only_bounded_labels(
    worker: Worker, nc: NATS, telemetry: Telemetry, tenant: str
) -> None:
    """Request metrics are labelled by component/op/kind/outcome only: no tenant, no inbox."""
    subject = request_subject(tenant, "echo", "echo")
    await nc.request(subject, b'{"text": "m"}', timeout=5)
    await nc.request(subject, b'{"crash": true}', timeout=5)

    for metric in ("aifleet.requests", "aifleet.request.duration"):
        points = telemetry.data_points(metric)
        assert points, metric
        for point in points:
            attributes = dict(point.attributes)
            assert set(attributes) == ALLOWED_LABELS, attributes
            values = " ".join(str(v) for v in attributes.values())
            assert tenant not in values
            assert "_INBOX" not in values

    by_outcome = {
        dict(p.attributes)["aifleet.outcome"]: p.value
        for p in telemetry.data_points("aifleet.requests")
        if dict(p.attributes)["aifleet.component"] == "echo"
        and dict(p.attributes)["aifleet.op"] == "echo"
    }
    assert by_outcome["ok"] >= 1
    assert by_outcome["INTERNAL"] >= 1


async def test_trace_context_is_carried_on_to_events(
    telemetry: Telemetry,
    nats_server: EmbeddedNats,
    valkey: EmbeddedValkey,
    nc: NATS,
    tenant: str,
) -> None:
    """An emitted event carries the caller's trace, parented on the request's SERVER span."""
    rdb = redis.asyncio.Redis.from_url(valkey.url)
    try:
        await rdb.set(f"aifleet:cache:{{{tenant}}}:k", b"r1")
    finally:
        await rdb.aclose()
    header, trace_id, _ = traceparent()
    async with running_worker([cache.component], nats_server.url, redis_url=valkey.url):
        reply = await nc.request(
            request_subject(tenant, "cache", "delete"),
            b'{"key": "k"}',
            timeout=5,
            headers={"traceparent": header},
        )
        assert json.loads(reply.data) == {"deleted": True}
    server = (await eventually(spans_of_trace(telemetry, trace_id)))[0]
    assert server.name == "ai.v1.{tenant}.req.cache.delete"
    assert server.context is not None

    js = nc.jetstream()
    event = await js.get_last_msg(STREAM_EVENTS, event_subject(tenant, "cache", "invalidated"))
    assert event.headers is not None
    version, event_trace, event_parent, _flags = event.headers["traceparent"].split("-")
    assert (version, event_trace) == ("00", trace_id)
    assert int(event_parent, 16) == server.context.span_id


@pytest.fixture
async def gateway_worker(
    telemetry: Telemetry,
    nats_server: EmbeddedNats,
    valkey: EmbeddedValkey,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[Worker]:
    from workers.gateway import service as gateway

    monkeypatch.setenv("AIFLEET_GATEWAY_CACHE_TTL_SECONDS", "0")
    async with running_worker([gateway.component], nats_server.url, redis_url=valkey.url) as w:
        yield w


async def test_llm_call_is_a_gen_ai_client_span_inside_the_request_span(
    gateway_worker: Worker, nc: NATS, telemetry: Telemetry, tenant: str
) -> None:
    """generate → a CLIENT span "chat offline" with gen_ai attributes, child of the SERVER span;
    prompt and completion text are not recorded by default."""
    header, trace_id, _ = traceparent()
    body = {"messages": [{"role": "user", "content": "private words"}], "max_tokens": 50}
    reply = await nc.request(
        request_subject(tenant, "gateway", "generate"),
        json.dumps(body).encode(),
        timeout=20,
        headers={"traceparent": header},
    )
    usage = json.loads(reply.data)["usage"]
    spans = await eventually(lambda: [s for s in spans_of_trace(telemetry, trace_id)() if s.parent])
    by_name = {s.name: s for s in spans}
    client, server = by_name["chat offline"], by_name["ai.v1.{tenant}.req.gateway.generate"]
    assert client.kind is SpanKind.CLIENT
    assert client.parent is not None
    assert client.parent.span_id == server.context.span_id
    attributes = dict(client.attributes or {})
    assert attributes["gen_ai.operation.name"] == "chat"
    assert attributes["gen_ai.request.model"] == "offline"
    assert attributes["gen_ai.response.model"] == "aifleet/offline"
    assert attributes["gen_ai.provider.name"] == "aifleet"
    assert attributes["gen_ai.request.max_tokens"] == 50
    assert attributes["gen_ai.usage.input_tokens"] == int(usage["prompt_tokens"])
    assert attributes["gen_ai.usage.output_tokens"] == int(usage["completion_tokens"])
    assert "private words" not in json.dumps({k: str(v) for k, v in attributes.items()})


async def test_gen_ai_metrics_carry_model_and_provider_not_tenant(
    gateway_worker: Worker, nc: NATS, telemetry: Telemetry, tenant: str
) -> None:
    """gen_ai.client.token.usage and operation.duration: bounded attributes, no tenant."""
    body = {"messages": [{"role": "user", "content": "count me"}]}
    await nc.request(
        request_subject(tenant, "gateway", "generate"), json.dumps(body).encode(), timeout=20
    )
    tokens = telemetry.data_points("gen_ai.client.token.usage")
    assert {dict(p.attributes)["gen_ai.token.type"] for p in tokens} == {"input", "output"}
    for metric in ("gen_ai.client.token.usage", "gen_ai.client.operation.duration"):
        for point in telemetry.data_points(metric):
            attributes = dict(point.attributes)
            assert attributes["gen_ai.request.model"] == "offline"
            assert attributes["gen_ai.provider.name"] == "aifleet"
            assert tenant not in " ".join(str(v) for v in attributes.values())
