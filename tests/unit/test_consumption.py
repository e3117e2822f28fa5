"""What a component's consumed events mean to the runtime: validation and routing."""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import Any

import pytest

from schemas.v1 import llmops_pb2
from subjects import STREAM_EVENTS, STREAM_JOBS
from workers.runtime.component import Component
from workers.runtime.jobs import Consumption

SERVICE = llmops_pb2.DESCRIPTOR.services_by_name["LlmopsService"]


@asynccontextmanager
async def nothing(resources: Any) -> Any:
    yield object()


@pytest.mark.parametrize(
    "events",
    [
        {"gateway": "log_operation"},
        {"Gateway.llm_operation": "log_operation"},
        {"gateway.llm.operation": "log_operation"},
        {"gateway.llm_operation": "no_such_op"},
    ],
)
def test_component_refuses_an_invalid_event_mapping(events: dict[str, str]) -> None:
    """An event key that is not <component>.<event>, or an op the service lacks, fails at
    definition time."""
    with pytest.raises(ValueError, match="llmops"):
        Component(SERVICE, start=nothing, events=events)


def test_event_consumption_routes_by_publisher_and_event() -> None:
    """The event consumer filters each mapped event of any tenant and routes it to its op."""
    source = Consumption.events("llmops", {"gateway.llm_operation": "log_operation"})
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
