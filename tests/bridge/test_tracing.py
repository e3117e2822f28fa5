"""One REST call is one trace: the bridge's server span is the parent of the worker's span."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from tests.bridge.conftest import bridge_settings, serving
from tests.conftest import NatsFactory
from tests.support import echo
from tests.support.fleet import running_worker


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """Finished spans of this test. The global provider can be set once per process, so an SDK
    provider already installed (by another test module) is reused and given our exporter."""
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        trace.set_tracer_provider(TracerProvider())
        provider = trace.get_tracer_provider()
    assert isinstance(provider, TracerProvider)
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    try:
        yield exporter
    finally:
        exporter.clear()
        exporter.shutdown()  # the processor stays attached but drops everything from now on


async def test_rest_call_is_one_trace_from_bridge_to_worker(
    spans: InMemorySpanExporter, nats_factory: NatsFactory
) -> None:
    """The worker span has the bridge span as parent, and an incoming traceparent is kept."""
    server = nats_factory()
    parent_trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    incoming = f"00-{parent_trace}-00f067aa0ba902b7-01"
    # The worker decides at start whether to trace, so it starts after the provider exists.
    async with (
        running_worker([echo.component], server.url),
        serving(bridge_settings(server.url, components=["echo"])) as client,
    ):
        response = await client.post(
            "/api/v1/echo", json={"text": "t"}, headers={"traceparent": incoming}
        )
    assert response.status_code == 200
    finished = spans.get_finished_spans()
    bridge = [s for s in finished if s.name == "POST /api/v1/echo"]
    worker = [s for s in finished if s.name == "ai.v1.{tenant}.req.echo.echo"]
    assert len(bridge) == 1
    assert len(worker) == 1
    b, w = bridge[0], worker[0]
    assert b.kind == SpanKind.SERVER
    assert b.context is not None
    assert w.context is not None
    assert w.parent is not None
    assert format(b.context.trace_id, "032x") == parent_trace
    assert w.context.trace_id == b.context.trace_id
    assert w.parent.span_id == b.context.span_id
    assert (b.attributes or {})["http.response.status_code"] == 200
