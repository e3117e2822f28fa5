"""RAG end to end with the gateway running offline (real local MiniLM embeddings, the offline
text model) and the cache component: ingest, search, answer with citations, update, delete,
idempotency, the results cache, events — real NATS, PostgreSQL and Valkey."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from nats.aio.client import Client as NATS

from aifleet.embedded import EmbeddedNats, EmbeddedPostgres, EmbeddedValkey
from schemas.errors import Conflict, NotFound
from schemas.v1.common_pb2 import PageRequest
from schemas.v1.gateway_pb2 import EmbedRequest
from schemas.v1.gateway_rpc import GatewayService
from schemas.v1.rag_pb2 import (
    DeleteDocumentRequest,
    DocumentDeletedEvent,
    DocumentIngestedEvent,
    GetDocumentRequest,
    ListDocumentsRequest,
    QueryRequest,
    ReembedRequest,
    SearchRequest,
    UpdateDocumentRequest,
)
from schemas.v1.rag_rpc import RagService
from tests.support.gateway import operations
from tests.support.rag import CORPUS, RagDb, configure, create, events, running_rag
from workers.rag.answers import NO_ANSWER
from workers.rag.store import DocumentExists, RagStore
from workers.runtime.client import Client
from workers.runtime.worker import Worker


@pytest.fixture(scope="module")
async def worker(
    nats_server: EmbeddedNats, valkey: EmbeddedValkey, postgres: EmbeddedPostgres
) -> AsyncIterator[Worker]:
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("OPENAI_API_KEY", raising=False)
        configure(mp, cache_ttl_seconds=60)
        async with running_rag(nats_server.url, valkey.url, postgres.dsn) as w:
            yield w


@pytest.fixture(scope="module")
async def db(postgres: EmbeddedPostgres) -> AsyncIterator[RagDb]:
    async with RagDb.connect(postgres.dsn) as found:
        yield found


@pytest.fixture
def tenant() -> str:
    return "r" + uuid.uuid4().hex[:12]


@pytest.fixture
def client(nc: NATS, worker: Worker) -> Client:
    return Client(nc, timeout=30.0)


async def ingest_corpus(client: Client, tenant: str) -> None:
    for doc_id, content in CORPUS.items():
        reply = await client.call_rpc(
            tenant, RagService.CreateDocument, create(doc_id, content, metadata={"kind": doc_id})
        )
        assert reply.created
        assert reply.document.status == "ready"


async def test_a_document_is_chunked_embedded_and_found(
    client: Client, db: RagDb, tenant: str
) -> None:
    """Create stores chunks with offsets into the content; search finds the right one by
    meaning (vector leg) and by words (keyword leg)."""
    await ingest_corpus(client, tenant)
    got = await client.call_rpc(
        tenant, RagService.GetDocument, GetDocumentRequest(document_id="nats", include_content=True)
    )
    doc = got.document
    assert (doc.status, doc.version, doc.embedding_dimensions) == ("ready", 1, 384)
    assert doc.chunk_count >= 1
    assert doc.embedding_model == "all-minilm-l6-v2"
    for row in await db.chunk_rows(tenant, "nats"):
        assert doc.content[row["start_char"] : row["end_char"]] == row["text"]
    reply = await client.call_rpc(
        tenant,
        RagService.Search,
        SearchRequest(query_text="which database takes snapshots per transaction?", top_k=3),
    )
    assert reply.results[0].document_id == "postgres"
    top = reply.results[0]
    assert top.vector_rank >= 1
    assert top.similarity > 0.2
    assert top.text in CORPUS["postgres"]
    assert CORPUS["postgres"][top.start : top.end] == top.text
    words = await client.call_rpc(
        tenant, RagService.Search, SearchRequest(query_text="Lua scripts", mode="keyword")
    )
    assert [r.document_id for r in words.results] == ["valkey"]


async def test_threshold_and_metadata_filters_narrow_the_results(
    client: Client, tenant: str
) -> None:
    """Only chunks at or above the cosine threshold, and only documents the filter admits."""
    await ingest_corpus(client, tenant)
    strict = await client.call_rpc(
        tenant,
        RagService.Search,
        SearchRequest(query_text="vector similarity search indexes", threshold=0.99),
    )
    assert list(strict.results) == []
    filtered = SearchRequest(query_text="messages and streams", top_k=10)
    filtered.metadata_filters.update({"kind": {"$in": ["valkey", "postgres"]}})
    reply = await client.call_rpc(tenant, RagService.Search, filtered)
    assert reply.results
    assert {r.document_id for r in reply.results} <= {"valkey", "postgres"}


async def test_query_answers_extractively_offline_with_citations(
    client: Client, tenant: str
) -> None:
    """With the offline text model, auto mode quotes the best passages; every [n] maps to a
    retrieved chunk, and the groundedness check finds the quotes grounded."""
    await ingest_corpus(client, tenant)
    reply = await client.call_rpc(
        tenant,
        RagService.Query,
        QueryRequest(
            query="How does JetStream keep messages?", enable_hallucination_detection=True
        ),
    )
    assert reply.answer_mode == "extractive"
    assert not reply.no_answer
    assert "streams store messages on disk" in reply.answer
    assert reply.citations
    for c in reply.citations:
        for marker, index, doc_id in zip(c.markers, c.result_indexes, c.document_ids, strict=True):
            assert index == marker - 1
            assert reply.documents[index].document_id == doc_id
    assert reply.sources[0].document_id == "nats"
    assert reply.hallucination_checked
    assert reply.groundedness == 1.0
    assert all(g.grounded and g.support > 0.9 for g in reply.grounding)
    assert reply.confidence == reply.groundedness
    assert not reply.rewrite_applied


async def test_generative_answers_are_checked_not_trusted(client: Client, tenant: str) -> None:
    """Forced generative, the offline model echoes the prompt: its sentences cite nothing
    real, and the check reports them ungrounded instead of a constant score."""
    await ingest_corpus(client, tenant)
    reply = await client.call_rpc(
        tenant,
        RagService.Query,
        QueryRequest(
            query="What does pgvector add?",
            answer_mode="generative",
            enable_hallucination_detection=True,
            enable_rewrite=True,
        ),
    )
    assert reply.answer_mode == "generative"
    assert reply.model == "aifleet/offline"
    assert reply.answer.startswith("[aifleet offline model]")
    assert reply.hallucination_checked
    assert reply.groundedness < 0.5
    assert any(not g.grounded for g in reply.grounding)
    assert not reply.rewrite_applied
    assert "offline" in reply.rewrite_note


async def test_nothing_relevant_says_so(client: Client, tenant: str) -> None:
    """A question the corpus cannot answer gets the no-answer reply, no invented text."""
    await ingest_corpus(client, tenant)
    reply = await client.call_rpc(
        tenant,
        RagService.Query,
        QueryRequest(query="What is the recipe for a lemon tart?", threshold=0.5),
    )
    assert reply.no_answer
    assert reply.answer == NO_ANSWER
    assert list(reply.documents) == []
    assert reply.confidence == 0.0


async def test_query_stream_sends_documents_then_text_then_the_reply(
    client: Client, tenant: str
) -> None:
    """The stream starts with the retrieved chunks and ends with the full reply."""
    await ingest_corpus(client, tenant)
    chunks = [
        c
        async for c in client.stream_rpc(
            tenant, RagService.QueryStream, QueryRequest(query="What is Valkey?")
        )
    ]
    assert chunks[0].documents[0].document_id == "valkey"
    assert chunks[-1].done
    text = "".join(c.delta for c in chunks[1:-1])
    assert text == chunks[-1].response.answer
    assert chunks[-1].response.citations


async def test_recreating_the_same_document_embeds_nothing(
    client: Client, nc: NATS, tenant: str
) -> None:
    """The same id and content again: created false, no gateway.embed call, no event; the
    same id with other content is a 409."""
    request = create("same", CORPUS["nats"])
    first = await client.call_rpc(tenant, RagService.CreateDocument, request)
    embeds = len(await operations(nc, tenant))
    again = await client.call_rpc(tenant, RagService.CreateDocument, request)
    assert first.created
    assert not again.created
    assert again.document.version == 1
    assert len(await operations(nc, tenant)) == embeds
    assert len(await events(nc, tenant, "document_ingested")) == 1
    with pytest.raises(Conflict):
        await client.call_rpc(tenant, RagService.CreateDocument, create("same", "other text"))


async def test_a_create_whose_rival_is_deleted_before_it_reads_it_is_told_to_retry(
    client: Client, tenant: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A create that lost its insert to one of the same id, deleted before it could be read,
    gets a retryable 409, not "other content"."""

    async def taken(self: RagStore, tenant: str, doc: Any, *args: Any) -> Any:
        raise DocumentExists(doc.id)

    monkeypatch.setattr(RagStore, "create_ready", taken)
    with pytest.raises(Conflict) as caught:
        await client.call_rpc(tenant, RagService.CreateDocument, create("gone", CORPUS["nats"]))
    assert caught.value.retryable
    assert "deleted meanwhile" in caught.value.message


async def test_update_replaces_chunks_and_delete_removes_everything(
    client: Client, nc: NATS, db: RagDb, tenant: str
) -> None:
    """New content: version 2, only new chunks; metadata alone: no re-embedding; delete: no
    row left; ingested and deleted events carry the versions."""
    await client.call_rpc(tenant, RagService.CreateDocument, create("d", CORPUS["nats"]))
    update = UpdateDocumentRequest(document_id="d", content=CORPUS["valkey"])
    reply = await client.call_rpc(tenant, RagService.UpdateDocument, update)
    assert reply.rechunked
    assert reply.document.version == 2
    rows = await db.chunk_rows(tenant, "d")
    assert {r["version"] for r in rows} == {2}
    assert all(r["text"] in CORPUS["valkey"] for r in rows)
    meta = UpdateDocumentRequest(document_id="d", title="renamed")
    meta.metadata.update({"team": "infra"})
    reply = await client.call_rpc(tenant, RagService.UpdateDocument, meta)
    assert not reply.rechunked
    assert (reply.document.version, reply.document.title) == (2, "renamed")
    found = SearchRequest(query_text="key-value store")
    found.metadata_filters.update({"team": "infra"})
    assert (await client.call_rpc(tenant, RagService.Search, found)).results
    deleted = await client.call_rpc(
        tenant, RagService.DeleteDocument, DeleteDocumentRequest(document_id="d")
    )
    assert deleted.chunks_deleted == len(rows)
    assert (await db.row_counts(tenant))["chunks"] == 0
    with pytest.raises(NotFound):
        await client.call_rpc(tenant, RagService.GetDocument, GetDocumentRequest(document_id="d"))
    ingested = [
        DocumentIngestedEvent.FromString(b) for b in await events(nc, tenant, "document_ingested")
    ]
    assert [e.version for e in ingested] == [1, 2]
    gone = [
        DocumentDeletedEvent.FromString(b) for b in await events(nc, tenant, "document_deleted")
    ]
    assert [(e.document_id, e.version) for e in gone] == [("d", 2)]


async def test_a_search_during_updates_sees_one_version(client: Client, tenant: str) -> None:
    """Searches running while a document is rewritten see either version's chunks, never a
    mix (every result of the document carries one version)."""
    texts = [CORPUS["nats"], CORPUS["nats"].replace("NATS", "The NATS system")]
    await client.call_rpc(tenant, RagService.CreateDocument, create("a", texts[0]))
    stop = asyncio.Event()
    seen: set[int] = set()

    async def searcher() -> None:
        while not stop.is_set():
            reply = await client.call_rpc(
                tenant,
                RagService.Search,
                SearchRequest(query_text="messages streams", top_k=20, skip_cache=True),
            )
            versions = {r.version for r in reply.results}
            assert len(versions) == 1, versions
            seen.update(versions)

    tasks = [asyncio.create_task(searcher()) for _ in range(2)]
    for i in range(6):
        await client.call_rpc(
            tenant,
            RagService.UpdateDocument,
            UpdateDocumentRequest(document_id="a", content=texts[(i + 1) % 2]),
        )
    stop.set()
    await asyncio.gather(*tasks)
    assert len(seen) >= 2


async def test_results_are_cached_until_the_corpus_changes(client: Client, tenant: str) -> None:
    """The same search twice: the second from the cache; after a write, computed again."""
    await ingest_corpus(client, tenant)
    request = SearchRequest(query_text="relational database")
    first = await client.call_rpc(tenant, RagService.Search, request)
    second = await client.call_rpc(tenant, RagService.Search, request)
    assert not first.cached
    assert second.cached
    assert list(second.results) == list(first.results)
    await client.call_rpc(tenant, RagService.CreateDocument, create("new", "Another text."))
    third = await client.call_rpc(tenant, RagService.Search, request)
    assert not third.cached
    assert third.corpus_version == first.corpus_version + 1


async def test_listing_pages_and_filters(client: Client, tenant: str) -> None:
    """Keyset pages of the tenant's documents, newest first, filtered by metadata."""
    await ingest_corpus(client, tenant)
    page = await client.call_rpc(
        tenant, RagService.ListDocuments, ListDocumentsRequest(page=PageRequest(page_size=2))
    )
    assert [d.document_id for d in page.documents] == ["valkey", "postgres"]
    rest = await client.call_rpc(
        tenant,
        RagService.ListDocuments,
        ListDocumentsRequest(page=PageRequest(page_size=2, page_token=page.page.next_page_token)),
    )
    assert [d.document_id for d in rest.documents] == ["nats"]
    assert not rest.page.next_page_token
    only = ListDocumentsRequest()
    only.metadata_filters.update({"kind": "postgres"})
    reply = await client.call_rpc(tenant, RagService.ListDocuments, only)
    assert [d.document_id for d in reply.documents] == ["postgres"]


async def test_a_query_embedding_of_the_right_dimension_searches(
    client: Client, tenant: str
) -> None:
    """A caller's own vector (here the gateway's) searches the vector leg only."""
    await ingest_corpus(client, tenant)
    vector = await client.call_rpc(
        tenant, GatewayService.Embed, EmbedRequest(texts=["in-memory key-value store"])
    )
    reply = await client.call_rpc(
        tenant,
        RagService.Search,
        SearchRequest(query_embedding=vector.embeddings[0].values, top_k=1),
    )
    assert reply.mode == "vector"
    assert reply.results[0].document_id == "valkey"
    assert reply.results[0].score == pytest.approx(reply.results[0].similarity)


async def test_reembed_with_the_current_model_finds_nothing_stale(
    client: Client, tenant: str
) -> None:
    """Every chunk was embedded with the configured model: nothing to re-embed, no job."""
    await ingest_corpus(client, tenant)
    reply = await client.call_rpc(tenant, RagService.Reembed, ReembedRequest())
    assert (reply.documents_stale, reply.job_id) == (0, "")
