"""RAG with its dependencies missing: no gateway means 503 retryable for what needs embeddings
and nothing written; no cache component means no caching, not an error."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable
from typing import Any

import pytest
from nats.aio.client import Client as NATS

from aifleet.embedded import EmbeddedNats, EmbeddedPostgres
from schemas.errors import ServiceError
from schemas.v1.rag_pb2 import QueryRequest, SearchRequest
from schemas.v1.rag_rpc import RagService
from tests.support.fleet import running_worker
from tests.support.rag import RagDb, create
from workers.rag import service as rag
from workers.runtime.client import Client
from workers.runtime.worker import Worker


@pytest.fixture(scope="module")
async def worker(nats_server: EmbeddedNats, postgres: EmbeddedPostgres) -> AsyncIterator[Worker]:
    """RAG alone: neither the gateway nor the cache component answers."""
    async with running_worker([rag.component], nats_server.url, database_url=postgres.dsn) as w:
        yield w


@pytest.fixture(scope="module")
async def db(postgres: EmbeddedPostgres) -> AsyncIterator[RagDb]:
    async with RagDb.connect(postgres.dsn) as found:
        yield found


async def test_without_the_gateway_writes_are_503_retryable_and_change_nothing(
    worker: Worker, nc: NATS, db: RagDb
) -> None:
    """create, search and query need embeddings: 503 retryable, no row; the worker lives."""
    tenant = "n" + uuid.uuid4().hex[:12]
    client = Client(nc, timeout=10.0)
    calls: list[Awaitable[Any]] = [
        client.call_rpc(tenant, RagService.CreateDocument, create("d", "Text to embed.")),
        client.call_rpc(tenant, RagService.Search, SearchRequest(query_text="text")),
        client.call_rpc(tenant, RagService.Query, QueryRequest(query="text?")),
    ]
    for call in calls:
        with pytest.raises(ServiceError) as raised:
            await call
        assert raised.value.status == 503
        assert raised.value.retryable
    assert await db.row_counts(tenant) == {"documents": 0, "chunks": 0, "corpora": 0, "lexemes": 0}


async def test_keyword_search_needs_neither_gateway_nor_cache(
    worker: Worker, nc: NATS, db: RagDb
) -> None:
    """Keyword mode embeds nothing; the missing cache is a miss, so it still answers."""
    tenant = "n" + uuid.uuid4().hex[:12]
    client = Client(nc, timeout=10.0)
    reply = await client.call_rpc(
        tenant, RagService.Search, SearchRequest(query_text="anything", mode="keyword")
    )
    assert list(reply.results) == []
    assert not reply.cached
