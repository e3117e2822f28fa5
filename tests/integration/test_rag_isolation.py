"""Tenant isolation in the RAG component, for every operation: what tenant a stores, tenant b
can neither see, search, answer from, update, delete, list nor re-embed, even with the very same
document ids; and b's writes never touch a's rows.

b's token is a prefix of a's, the closest a mix-up in SQL or subjects could get.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from nats.aio.client import Client as NATS

from aifleet.embedded import EmbeddedNats, EmbeddedPostgres, EmbeddedValkey
from schemas.errors import NotFound
from schemas.v1.rag_pb2 import (
    DeleteDocumentRequest,
    GetDocumentRequest,
    ListDocumentsRequest,
    QueryRequest,
    ReembedRequest,
    SearchRequest,
    UpdateDocumentRequest,
)
from schemas.v1.rag_rpc import RagService
from tests.support.rag import CORPUS, RagDb, create, events, running_rag
from workers.runtime.client import Client
from workers.runtime.worker import Worker


@pytest.fixture(scope="module")
async def worker(
    nats_server: EmbeddedNats, valkey: EmbeddedValkey, postgres: EmbeddedPostgres
) -> AsyncIterator[Worker]:
    async with running_rag(nats_server.url, valkey.url, postgres.dsn) as w:
        yield w


@pytest.fixture(scope="module")
async def db(postgres: EmbeddedPostgres) -> AsyncIterator[RagDb]:
    async with RagDb.connect(postgres.dsn) as found:
        yield found


@pytest.fixture
async def tenants(nc: NATS, worker: Worker) -> tuple[str, str]:
    """a with the corpus stored; b (a prefix of a) with nothing."""
    b = "i" + uuid.uuid4().hex[:12]
    a = b + "a"
    client = Client(nc, timeout=30.0)
    for doc_id, content in CORPUS.items():
        await client.call_rpc(a, RagService.CreateDocument, create(doc_id, content))
    return a, b


@pytest.fixture
def client(nc: NATS) -> Client:
    return Client(nc, timeout=30.0)


async def test_get_update_delete_of_another_tenants_id_are_404(
    client: Client, db: RagDb, tenants: tuple[str, str]
) -> None:
    """b asking for a's ids finds nothing and changes nothing of a's."""
    a, b = tenants
    before = await db.row_counts(a)
    for call in (
        client.call_rpc(b, RagService.GetDocument, GetDocumentRequest(document_id="nats")),
        client.call_rpc(
            b, RagService.UpdateDocument, UpdateDocumentRequest(document_id="nats", title="x")
        ),
        client.call_rpc(b, RagService.DeleteDocument, DeleteDocumentRequest(document_id="nats")),
    ):
        with pytest.raises(NotFound):
            await call
    assert await db.row_counts(a) == before
    got = await client.call_rpc(a, RagService.GetDocument, GetDocumentRequest(document_id="nats"))
    assert got.document.title == "nats"


async def test_search_query_and_list_see_only_the_callers_documents(
    client: Client, tenants: tuple[str, str]
) -> None:
    """b's search, query and list are empty while a's find its documents."""
    a, b = tenants
    search = SearchRequest(query_text="JetStream streams", skip_cache=True)
    assert (await client.call_rpc(a, RagService.Search, search)).results
    assert list((await client.call_rpc(b, RagService.Search, search)).results) == []
    answer = await client.call_rpc(b, RagService.Query, QueryRequest(query="What is JetStream?"))
    assert answer.no_answer
    assert list(answer.documents) == []
    listed = await client.call_rpc(b, RagService.ListDocuments, ListDocumentsRequest())
    assert list(listed.documents) == []
    assert (
        len((await client.call_rpc(a, RagService.ListDocuments, ListDocumentsRequest())).documents)
        == 3
    )


async def test_the_same_ids_live_side_by_side(
    client: Client, nc: NATS, db: RagDb, tenants: tuple[str, str]
) -> None:
    """b creating, updating and deleting a's ids works on b's own rows; a's stay; events go to
    each tenant's own subjects."""
    a, b = tenants
    before = await db.row_counts(a)
    created = await client.call_rpc(
        b, RagService.CreateDocument, create("nats", "b's own text about gardening.")
    )
    assert created.created
    await client.call_rpc(
        b, RagService.UpdateDocument, UpdateDocumentRequest(document_id="nats", content="tulips")
    )
    found = await client.call_rpc(b, RagService.Search, SearchRequest(query_text="tulips"))
    assert [r.document_id for r in found.results] == ["nats"]
    theirs = await client.call_rpc(
        a, RagService.Search, SearchRequest(query_text="tulips", mode="keyword")
    )
    assert list(theirs.results) == []
    await client.call_rpc(b, RagService.DeleteDocument, DeleteDocumentRequest(document_id="nats"))
    assert await db.row_counts(a) == before
    assert len(await events(nc, a, "document_ingested")) == 3
    assert len(await events(nc, b, "document_ingested")) == 2
    assert len(await events(nc, a, "document_deleted")) == 0


async def test_reembed_counts_only_the_callers_documents(
    client: Client, db: RagDb, tenants: tuple[str, str]
) -> None:
    """a's chunks marked as another model's are stale for a only."""
    a, b = tenants
    await db.pool.execute(
        "UPDATE rag.chunks SET embedding_model = 'old-model' WHERE tenant = $1", a
    )
    assert (await client.call_rpc(b, RagService.Reembed, ReembedRequest())).documents_stale == 0
    reply = await client.call_rpc(a, RagService.Reembed, ReembedRequest())
    assert reply.documents_stale == 3
    assert reply.job_id
