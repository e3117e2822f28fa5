"""What a component's consumed events mean to the runtime: validation and routing."""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import Any

import pytest

from schemas.v1 import llmops_pb2
from subjects import STREAM_EVENTS, STREAM_JOBS
from subjects.events import GATEWAY_LLM_OPERATION, event_name
from workers.runtime.component import Component
from workers.runtime.jobs import Consumption

SERVICE = llmops_pb2.DESCRIPTOR.services_by_name["LlmopsService"]


@asynccontextmanager
async def nothing(resources: Any) -> Any:
    yield object()


@pytest.mark.parametrize(("component", "event"), [("Gateway", "llm_operation"), ("gateway", "a.b")])
def test_an_event_name_is_two_snake_case_tokens(component: str, event: str) -> None:
    """An event is named by its publisher and its name, each a lowercase snake_case token."""
    with pytest.raises(ValueError, match="invalid"):
        event_name(component, event)


def test_component_refuses_an_event_mapped_to_an_op_it_lacks() -> None:
    """An event mapped to an op the service lacks fails at definition time."""
    with pytest.raises(ValueError, match="llmops"):
        Component(SERVICE, start=nothing, events={GATEWAY_LLM_OPERATION: "no_such_op"})


def test_component_refuses_an_event_named_by_a_string() -> None:
    """Consumed events are named through subjects/events.py, never spelled as strings."""
    with pytest.raises(TypeError, match="EventName"):
        Component(SERVICE, start=nothing, events={"gateway.llm_operation": "log_operation"})  # type: ignore[dict-item]


def test_event_consumption_routes_by_publisher_and_event() -> None:
    """The event consumer filters each mapped event of any tenant and routes it to its op."""
    source = Consumption.events("llmops", {GATEWAY_LLM_OPERATION: "log_operation"})
    assert (source.stream, source.durable) == (STREAM_EVENTS, "llmops-events")
    assert source.filter_subjects == ("ai.v1.*.evt.gateway.llm_operation",)
    assert source.route("ai.v1.acme.evt.gateway.llm_operation") == (
        "gateway.llm_operation",
        "log_operation",
    )
    assert source.route("ai.v1.acme.evt.gateway.other") == ("gateway.other", "")
    assert source.route("ai.v1.acme.evt") == ("", "")


def test_job_consumption_routes_by_op() -> None:
    """The job consumer keeps its subjects and durable name, and routes by the op token."""
    source = Consumption.jobs("rag", frozenset({"ingest"}))
    assert (source.stream, source.durable) == (STREAM_JOBS, "rag-jobs")
    assert source.filter_subjects == ("ai.v1.*.job.rag.>",)
    assert source.route("ai.v1.acme.job.rag.ingest") == ("ingest", "ingest")
