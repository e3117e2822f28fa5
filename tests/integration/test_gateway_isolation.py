"""Tenant isolation of every gateway operation: the tenant is the subject's, never a parameter,
and nothing one tenant does is visible to or charged against another."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from nats.aio.client import Client as NATS

from aifleet.embedded import EmbeddedNats, EmbeddedPostgres, EmbeddedValkey
from schemas.v1.gateway_pb2 import (
    EmbedRequest,
    EmbedResponse,
    GenerateChunk,
    GenerateRequest,
    GenerateResponse,
    ListModelsRequest,
    ListModelsResponse,
    RateLimitsRequest,
    RateLimitsResponse,
)
from tests.support.gateway import configure, fresh_minute, operations, running_gateway
from tests.support.polling import eventually
from workers.runtime.client import Client
from workers.runtime.worker import Worker


@pytest.fixture(scope="module")
async def worker(
    nats_server: EmbeddedNats, valkey: EmbeddedValkey, postgres: EmbeddedPostgres
) -> AsyncIterator[Worker]:
    with pytest.MonkeyPatch.context() as mp:
        configure(mp, requests_per_minute=1000)
        async with running_gateway(nats_server.url, valkey.url, postgres.dsn) as w:
            yield w


@pytest.fixture
def tenants() -> tuple[str, str]:
    unique = uuid.uuid4().hex[:12]
    return "ia" + unique, "ib" + unique


@pytest.fixture
def client(nc: NATS) -> Client:
    return Client(nc, timeout=20.0)


def ask(text: str, semantic: bool = False) -> GenerateRequest:
    req = GenerateRequest(prompt=text)
    req.cache.semantic = semantic
    req.cache.similarity_threshold = 0.8
    return req


async def usage(client: Client, tenant: str) -> RateLimitsResponse:
    return await client.call(
        tenant, "gateway", "rate_limits", RateLimitsRequest(), RateLimitsResponse
    )


async def test_usage_of_one_tenant_is_not_counted_for_another(
    worker: Worker, client: Client, tenants: tuple[str, str]
) -> None:
    """generate, generate_stream and embed count against the caller's tenant only."""
    a, b = tenants
    await fresh_minute()
    await client.call(a, "gateway", "generate", ask("one"), GenerateResponse)
    _ = [c async for c in client.stream(a, "gateway", "generate_stream", ask("two"), GenerateChunk)]
    await client.call(a, "gateway", "embed", EmbedRequest(texts=["three"]), EmbedResponse)
    used_a, used_b = await usage(client, a), await usage(client, b)
    assert used_a.requests_this_minute == 3
    assert used_a.tokens_this_minute > 0
    assert (used_b.requests_this_minute, used_b.tokens_this_minute) == (0, 0)


async def test_operation_events_go_to_the_callers_subject_only(
    worker: Worker, client: Client, tenants: tuple[str, str], nc: NATS
) -> None:
    """The llm_operation event is published under the calling tenant's subject."""
    a, b = tenants
    await client.call(a, "gateway", "generate", ask("mine"), GenerateResponse)
    await eventually(lambda: operations(nc, a), timeout=5, what="tenant a's event")
    assert await operations(nc, b) == []


async def test_no_cache_hit_crosses_tenants(
    worker: Worker, client: Client, tenants: tuple[str, str]
) -> None:
    """The same question (exact) and a paraphrase (semantic) from b miss a's cached reply."""
    a, b = tenants
    await client.call(a, "gateway", "generate", ask("What is my balance?", True), GenerateResponse)
    hit = await client.call(
        a, "gateway", "generate", ask("What's my balance?", True), GenerateResponse
    )
    assert hit.cache.kind == "semantic"
    # The very text a stored: an exact hit and a similarity-1.0 neighbour, were it a's tenant.
    other = await client.call(
        b, "gateway", "generate", ask("What is my balance?", True), GenerateResponse
    )
    assert not other.HasField("cache")
    streamed = [
        c
        async for c in client.stream(
            b, "gateway", "generate_stream", ask("What's my balance?", False), GenerateChunk
        )
    ]
    assert not streamed[-1].HasField("cache")


async def test_list_models_is_the_same_for_every_tenant(
    worker: Worker, client: Client, tenants: tuple[str, str]
) -> None:
    """The model list is configuration, not tenant data: both tenants see the same."""
    a, b = tenants
    seen = [
        await client.call(t, "gateway", "list_models", ListModelsRequest(), ListModelsResponse)
        for t in (a, b)
    ]
    assert seen[0] == seen[1]
