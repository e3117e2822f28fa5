"""A create_document job that fails for good leaves the document `failed` with the reason, and
a create sent again later runs it again."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from nats.aio.client import Client as NATS

from aifleet.embedded import EmbeddedNats, EmbeddedPostgres, EmbeddedValkey
from schemas.v1.rag_pb2 import Document, GetDocumentRequest, SearchRequest
from schemas.v1.rag_rpc import RagService
from tests.support.polling import eventually
from tests.support.rag import configure, create, running_rag
from workers.runtime.client import Client
from workers.runtime.worker import Worker

LARGE = "A paragraph about streams and consumers. " * 200


@pytest.fixture(scope="module")
async def worker(
    nats_server: EmbeddedNats, valkey: EmbeddedValkey, postgres: EmbeddedPostgres
) -> AsyncIterator[Worker]:
    """Configured with an embedding alias the gateway does not have."""
    with pytest.MonkeyPatch.context() as mp:
        configure(mp, job_threshold_bytes=1024, embedding_model="no-such-model")
        async with running_rag(
            nats_server.url, valkey.url, postgres.dsn, job_backoff=[0.2], job_max_deliver=2
        ) as w:
            yield w


async def test_a_job_that_cannot_embed_fails_with_a_reason(nc: NATS, worker: Worker) -> None:
    """The gateway refuses the alias (404, not retryable): failed, its reason, no chunks; the
    same create again queues it again."""
    tenant = "f" + uuid.uuid4().hex[:12]
    client = Client(nc, timeout=30.0)
    reply = await client.call_rpc(tenant, RagService.CreateDocument, create("bad", LARGE))
    assert reply.document.status == "processing"

    async def settled() -> Document | None:
        got = await client.call_rpc(
            tenant, RagService.GetDocument, GetDocumentRequest(document_id="bad")
        )
        return got.document if got.document.status != "processing" else None

    doc = await eventually(settled, timeout=60, what="the job to fail")
    assert doc is not None
    assert doc.status == "failed"
    assert "no-such-model" in doc.error
    assert doc.chunk_count == 0
    found = await client.call_rpc(
        tenant, RagService.Search, SearchRequest(query_text="streams", mode="keyword")
    )
    assert list(found.results) == []
    again = await client.call_rpc(tenant, RagService.CreateDocument, create("bad", LARGE))
    assert again.created
    assert again.document.status == "processing"
