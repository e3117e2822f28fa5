"""A create_document job that fails for good leaves the document `failed` with the reason, and
a create sent again later runs it again; an update job that fails for good leaves the document
at its current version, still searchable, with the reason."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from nats.aio.client import Client as NATS

from aifleet.embedded import EmbeddedNats, EmbeddedPostgres, EmbeddedValkey
from schemas.v1.rag_pb2 import (
    SearchRequest,
    UpdateDocumentRequest,
)
from schemas.v1.rag_rpc import RagService
from tests.support.rag import (
    RagDb,
    configure,
    create,
    document,
    embedded,
    running_rag,
    settled,
    unit,
)
from workers.rag.store import RagStore
from workers.runtime.client import Client
from workers.runtime.worker import Worker

LARGE = "A paragraph about streams and consumers. " * 200


async def nothing(conn: Any) -> None:
    return None


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
    doc = await settled(client, tenant, "bad")
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


async def stored_by_another_model(dsn: str, tenant: str) -> None:
    """A ready document "kept" whose chunks name a model the gateway does not have, so that
    an update's job cannot embed."""
    async with RagDb.connect(dsn) as db:
        doc = document("kept", ["Offsets point citations at the original text."])
        await RagStore(db.pool).create_ready(
            tenant, doc, embedded(doc, [unit("kept")], model="no-such-model")
        )


async def test_an_update_job_that_cannot_embed_keeps_the_current_version(
    nc: NATS, worker: Worker, postgres: EmbeddedPostgres
) -> None:
    """A ready document (chunks of the configured model) updated with large content the
    gateway cannot embed: back to ready at version 1 with the reason, its chunks still found."""
    tenant = "f" + uuid.uuid4().hex[:12]
    client = Client(nc, timeout=30.0)
    await stored_by_another_model(postgres.dsn, tenant)
    reply = await client.call_rpc(
        tenant, RagService.UpdateDocument, UpdateDocumentRequest(document_id="kept", content=LARGE)
    )
    assert reply.job_id
    assert reply.document.status == "processing"
    kept = await settled(client, tenant, "kept")
    assert (kept.status, kept.version, kept.chunk_count) == ("ready", 1, 1)
    assert "no-such-model" in kept.error
    found = await client.call_rpc(
        tenant,
        RagService.Search,
        SearchRequest(query_text="citations offsets", mode="keyword", skip_cache=True),
    )
    assert [r.document_id for r in found.results] == ["kept"]


async def test_a_failed_large_create_sent_again_at_once_runs_its_job_again(
    nc: NATS, worker: Worker
) -> None:
    """A create repeated right after its job failed for good ends failed again, not processing."""
    tenant = "f" + uuid.uuid4().hex[:12]
    client = Client(nc, timeout=30.0)
    await client.call_rpc(tenant, RagService.CreateDocument, create("again", LARGE))
    assert (await settled(client, tenant, "again")).status == "failed"
    for _ in range(2):
        again = await client.call_rpc(tenant, RagService.CreateDocument, create("again", LARGE))
        assert again.document.status == "processing"
        assert (await settled(client, tenant, "again")).status == "failed"


async def test_a_failed_large_update_sent_again_at_once_runs_its_job_again(
    nc: NATS, worker: Worker, postgres: EmbeddedPostgres
) -> None:
    """An update repeated right after its job failed for good ends ready again, not processing."""
    tenant = "f" + uuid.uuid4().hex[:12]
    client = Client(nc, timeout=30.0)
    await stored_by_another_model(postgres.dsn, tenant)
    for _ in range(3):
        reply = await client.call_rpc(
            tenant,
            RagService.UpdateDocument,
            UpdateDocumentRequest(document_id="kept", content=LARGE),
        )
        assert reply.document.status == "processing"
        kept = await settled(client, tenant, "kept")
        assert (kept.status, kept.version) == ("ready", 1)
