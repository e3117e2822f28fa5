"""What every LLM operation leaves behind: one `llm_operation` event, a gen_ai span, metrics.

The event (`ai.v1.<tenant>.evt.gateway.llm_operation`, unique Nats-Msg-Id) is what LLMOps
records; spans and metrics follow the OpenTelemetry gen_ai semantic conventions, with bounded
metric attributes (operation, provider, configured model, error type) and no message text
unless the operator turns content capture on.
"""

from __future__ import annotations

import json
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from google.protobuf.struct_pb2 import Struct
from google.protobuf.timestamp_pb2 import Timestamp
from opentelemetry import metrics
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from schemas.v1.llmops_pb2 import LlmOperationEvent
from subjects.events import GATEWAY_LLM_OPERATION
from workers.gateway.outbox import EventOutbox
from workers.runtime.context import Context
from workers.runtime.telemetry import provider_tracer, tracing_enabled

_REQUEST_ATTRIBUTES = (
    "max_tokens",
    "temperature",
    "top_p",
    "presence_penalty",
    "frequency_penalty",
    "seed",
)

_meter = metrics.get_meter("aifleet.gateway")
_token_usage = _meter.create_histogram(
    "gen_ai.client.token.usage", unit="{token}", description="Tokens used per operation"
)
_duration = _meter.create_histogram(
    "gen_ai.client.operation.duration", unit="s", description="Duration of LLM operations"
)
_first_token = _meter.create_histogram(
    "gen_ai.server.time_to_first_token", unit="s", description="Time to the first streamed token"
)


@dataclass
class Operation:
    """One LLM operation being measured, from admission to the last token."""

    kind: str  # gen_ai.operation.name: chat or embeddings
    alias: str
    started: float = field(default_factory=time.monotonic)
    started_at: float = field(default_factory=time.time)
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    first_token: float | None = None
    model: str = ""
    provider: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    cache_hit: bool = False
    error_class: str = ""
    error_message: str = ""
    finish_reasons: list[str] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)

    def first_token_seen(self) -> None:
        if self.first_token is None:
            self.first_token = time.monotonic()

    @property
    def latency_ms(self) -> float:
        return (time.monotonic() - self.started) * 1000

    @property
    def ttft_ms(self) -> float | None:
        return None if self.first_token is None else (self.first_token - self.started) * 1000


def operation_event(op: Operation, ctx: Context, agent_id: str) -> LlmOperationEvent:
    event = LlmOperationEvent(
        id=op.id,
        operation_type="embedding" if op.kind == "embeddings" else op.kind,
        model=op.model or op.alias,
        provider=op.provider,
        prompt_tokens=op.prompt_tokens,
        completion_tokens=op.completion_tokens,
        total_tokens=op.prompt_tokens + op.completion_tokens,
        cost_usd=op.cost_usd,
        latency_ms=op.latency_ms,
        status="error" if op.error_class else "success",
        error_class=op.error_class,
        error_message=op.error_message[:500],
        user_id=ctx.user_id or "",
        agent_id=agent_id,
        cache_hit=op.cache_hit,
        occurred_at=Timestamp(seconds=int(op.started_at), nanos=int(op.started_at % 1 * 1e9)),
    )
    if op.ttft_ms is not None:
        event.time_to_first_token_ms = op.ttft_ms
    meta = Struct()
    meta.update({"model_alias": op.alias, **op.metadata})
    if ctx.request_id:
        meta.update({"request_id": ctx.request_id})
    event.metadata.CopyFrom(meta)
    return event


async def publish(op: Operation, ctx: Context, agent_id: str, outbox: EventOutbox) -> None:
    """Publish the operation's event and metrics. An event JetStream does not take goes to the
    outbox and is published later; the caller already has (and may have paid for) its reply,
    so neither failure is raised."""
    _record_metrics(op)
    event = operation_event(op, ctx, agent_id)
    try:
        await ctx.emit(GATEWAY_LLM_OPERATION, event, msg_id=op.id)
    except Exception as exc:
        ctx.log.warning("llm_operation event kept for later", op_id=op.id, error=repr(exc))
        try:
            await outbox.keep(ctx.tenant, event, ctx.forward_headers())
        except Exception as lost:
            ctx.log.error("llm_operation event lost", op_id=op.id, error=repr(lost))


def _record_metrics(op: Operation) -> None:
    attrs: dict[str, Any] = {
        "gen_ai.operation.name": op.kind,
        "gen_ai.provider.name": op.provider or "unknown",
        "gen_ai.request.model": op.alias,
    }
    if op.model:
        attrs["gen_ai.response.model"] = op.model
    if op.error_class:
        attrs["error.type"] = op.error_class
    _duration.record(op.latency_ms / 1000, attrs)
    if op.ttft_ms is not None:
        _first_token.record(op.ttft_ms / 1000, attrs)
    if not op.error_class:
        _token_usage.record(op.prompt_tokens, {**attrs, "gen_ai.token.type": "input"})
        if op.kind == "chat":
            _token_usage.record(op.completion_tokens, {**attrs, "gen_ai.token.type": "output"})


@contextmanager
def gen_ai_span(op: Operation, request: dict[str, Any], capture_content: bool) -> Any:
    """A CLIENT span `"{operation} {model}"` around the provider call (none without an SDK)."""
    if not tracing_enabled():
        yield None
        return
    attributes: dict[str, Any] = {
        "gen_ai.operation.name": op.kind,
        "gen_ai.request.model": op.alias,
    }
    for key in (
        "max_tokens",
        "temperature",
        "top_p",
        "presence_penalty",
        "frequency_penalty",
        "seed",
    ):
        if request.get(key) is not None:
            attributes[f"gen_ai.request.{key}"] = request[key]
    if request.get("stop"):
        attributes["gen_ai.request.stop_sequences"] = list(request["stop"])
    if capture_content and "messages" in request:
        attributes["gen_ai.input.messages"] = json.dumps(request["messages"])
    with provider_tracer().start_as_current_span(
        f"{op.kind} {op.alias}", kind=SpanKind.CLIENT, attributes=attributes
    ) as span:
        yield span


def finish_span(span: Span | None, op: Operation, completion: str | None, capture: bool) -> None:
    if span is None:
        return
    span.set_attributes(
        {
            "gen_ai.response.id": op.id,
            "gen_ai.response.model": op.model,
            "gen_ai.provider.name": op.provider,
            "gen_ai.usage.input_tokens": op.prompt_tokens,
            "gen_ai.usage.output_tokens": op.completion_tokens,
            "aifleet.gen_ai.cost_usd": op.cost_usd,
            "aifleet.gen_ai.cache_hit": op.cache_hit,
        }
    )
    if op.finish_reasons:
        span.set_attribute("gen_ai.response.finish_reasons", op.finish_reasons)
    if capture and completion is not None:
        span.set_attribute("gen_ai.output.messages", completion)
    if op.error_class:
        span.set_attribute("error.type", op.error_class)
        span.set_status(Status(StatusCode.ERROR, op.error_message[:200]))
