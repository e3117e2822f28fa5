"""Gateway and LLMOps together: every LLM operation the gateway performs is recorded once by
LLMOps, with the same id, tokens, cost and cache flag."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from nats.aio.client import Client as NATS

from aifleet.embedded import EmbeddedNats, EmbeddedPostgres, EmbeddedValkey
from schemas.v1.gateway_pb2 import EmbedRequest, EmbedResponse, GenerateRequest, GenerateResponse
from schemas.v1.llmops_pb2 import (
    ListOperationsRequest,
    ListOperationsResponse,
    LlmOperationEvent,
)
from tests.support.fleet import running_worker
from tests.support.gateway import configure
from tests.support.polling import eventually
from workers.cache import service as cache
from workers.gateway import service as gateway
from workers.llmops import service as llmops
from workers.runtime.client import Client
from workers.runtime.worker import Worker


@pytest.fixture(scope="module")
async def worker(
    nats_server: EmbeddedNats, valkey: EmbeddedValkey, postgres: EmbeddedPostgres
) -> AsyncIterator[Worker]:
    with pytest.MonkeyPatch.context() as mp:
        configure(mp, cache_ttl_seconds=600)
        async with running_worker(
            [gateway.component, cache.component, llmops.component],
            nats_server.url,
            redis_url=valkey.url,
            database_url=postgres.dsn,
        ) as w:
            yield w


async def test_gateway_operations_are_recorded_by_llmops(worker: Worker, nc: NATS) -> None:
    """A call, its cache hit and an embedding appear in list_operations with their ids."""
    tenant = "gl" + uuid.uuid4().hex[:12]
    client = Client(nc, timeout=20.0)
    req = GenerateRequest(prompt="record me", agent_id="agent-7")
    first = await client.call(tenant, "gateway", "generate", req, GenerateResponse)
    hit = await client.call(tenant, "gateway", "generate", req, GenerateResponse)
    await client.call(tenant, "gateway", "embed", EmbedRequest(texts=["x"]), EmbedResponse)

    async def recorded() -> list[LlmOperationEvent]:
        found = await client.call(
            tenant, "llmops", "list_operations", ListOperationsRequest(), ListOperationsResponse
        )
        return list(found.operations) if len(found.operations) == 3 else []

    listed = await eventually(recorded, timeout=10, what="three recorded operations")
    by_id = {op.id: op for op in listed}
    assert by_id[first.id].cache_hit is False
    assert by_id[first.id].agent_id == "agent-7"
    assert by_id[first.id].prompt_tokens == first.usage.prompt_tokens
    assert by_id[first.id].completion_tokens == first.usage.completion_tokens
    assert by_id[hit.id].cache_hit is True
    assert {op.operation_type for op in listed} == {"chat", "embedding"}
