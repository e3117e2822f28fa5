"""Traces and metrics (OpenTelemetry), W3C context carried in NATS headers.

Spans are named by subject *template* and metrics carry only bounded labels (component, op,
outcome): never a tenant, never an inbox. With no SDK provider installed the runtime skips span
work entirely, so an unobserved worker pays nothing for it.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from typing import Any

from opentelemetry import metrics, propagate, trace
from opentelemetry.context import Context as OtelContext

tracer = trace.get_tracer("aifleet")
meter = metrics.get_meter("aifleet")

requests_total = meter.create_counter(
    "aifleet.requests", unit="{request}", description="Requests and jobs handled, by outcome"
)
request_duration = meter.create_histogram(
    "aifleet.request.duration", unit="s", description="Handler time from decode to reply"
)
TRACE_HEADERS = ("traceparent", "tracestate")


def tracing_enabled() -> bool:
    """True when an SDK tracer provider records spans (configured here or by the host app).

    The SDK is imported only by `configure` or the host app (~3 MiB resident with the psutil its
    resources import): while it is not loaded, no provider can be one of its own.
    """
    sdk = sys.modules.get("opentelemetry.sdk.trace")
    return sdk is not None and isinstance(trace.get_tracer_provider(), sdk.TracerProvider)


def provider_tracer() -> trace.Tracer:
    """The installed provider's own "aifleet" tracer, for per-request spans.

    The module-level `tracer` is a proxy (created before any provider is installed) that adds
    a lookup and one more generator context manager to every span. Same spans, same
    instrumentation scope, without the detour.
    """
    return trace.get_tracer_provider().get_tracer("aifleet")


def extract(headers: Mapping[str, str] | None) -> OtelContext:
    return propagate.extract(headers or {})


def inject(headers: dict[str, str]) -> dict[str, str]:
    """Add the current span's `traceparent`/`tracestate` to outgoing headers."""
    propagate.inject(headers)
    return headers


def configure(service_name: str, endpoint: str | None) -> Callable[[], None]:
    """Install SDK providers exporting over OTLP/HTTP when an endpoint is configured.

    Returns the shutdown function (flushes pending spans). Without an endpoint nothing is
    installed and the API stays no-op.
    """
    if not endpoint:
        return lambda: None
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create({"service.name": service_name})
    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(tracer_provider)
    meter_provider = MeterProvider(
        resource=resource, metric_readers=[PeriodicExportingMetricReader(OTLPMetricExporter())]
    )
    metrics.set_meter_provider(meter_provider)

    def shutdown() -> None:
        tracer_provider.shutdown()
        meter_provider.shutdown()

    return shutdown


class Labels:
    """Metric attribute dicts, built once per (component, op, outcome): a bounded set."""

    __slots__ = ("_base", "_by_outcome")

    def __init__(self, component: str, op: str, kind: str) -> None:
        self._base = {"aifleet.component": component, "aifleet.op": op, "aifleet.kind": kind}
        self._by_outcome: dict[str, dict[str, Any]] = {}

    def __call__(self, outcome: str) -> dict[str, Any]:
        labels = self._by_outcome.get(outcome)
        if labels is None:
            labels = self._by_outcome[outcome] = {**self._base, "aifleet.outcome": outcome}
        return labels
