"""Large documents are ingested by the JetStream job `job.rag.create_document` (and large
updates by `job.rag.update_document`): the create answers `processing` at once, progress is
visible as events and in get_document, the job is idempotent by its Nats-Msg-Id, and a job that
fails for good leaves `failed` with a reason."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from nats.aio.client import Client as NATS

from aifleet.embedded import EmbeddedNats, EmbeddedPostgres, EmbeddedValkey
from schemas.codec import PROTOBUF_CODEC
from schemas.errors import ServiceError
from schemas.v1.rag_pb2 import (
    CreateDocumentRequest,
    Document,
    DocumentIngestedEvent,
    DocumentProgressEvent,
    ReembedRequest,
    SearchRequest,
    UpdateDocumentRequest,
)
from schemas.v1.rag_rpc import RagService
from subjects import HEADER_CONTENT_TYPE, HEADER_MSG_ID, job_subject
from tests.support.polling import eventually
from tests.support.rag import CORPUS, RagDb, configure, create, events, running_rag, settled
from workers.runtime.client import Client
from workers.runtime.worker import Worker

LARGE = "\n\n".join(
    f"## Section {i}\n\nPart {i} explains how worker {i} acknowledges message {i * 7} after the"
    f" commit, so a redelivery of job {i} changes nothing twice." * 3
    for i in range(40)
)


@pytest.fixture(scope="module")
async def worker(
    nats_server: EmbeddedNats, valkey: EmbeddedValkey, postgres: EmbeddedPostgres
) -> AsyncIterator[Worker]:
    with pytest.MonkeyPatch.context() as mp:
        configure(mp, job_threshold_bytes=4096, embed_batch=8)
        async with running_rag(
            nats_server.url, valkey.url, postgres.dsn, job_backoff=[0.2, 0.2], job_max_deliver=2
        ) as w:
            yield w


@pytest.fixture(scope="module")
async def db(postgres: EmbeddedPostgres) -> AsyncIterator[RagDb]:
    async with RagDb.connect(postgres.dsn) as found:
        yield found


@pytest.fixture
def tenant() -> str:
    return "j" + uuid.uuid4().hex[:12]


@pytest.fixture
def client(nc: NATS, worker: Worker) -> Client:
    return Client(nc, timeout=60.0)


async def ready(client: Client, tenant: str, document_id: str) -> Document:
    return await settled(client, tenant, document_id)


async def test_a_large_document_is_ingested_by_a_job_with_progress(
    client: Client, nc: NATS, tenant: str
) -> None:
    """processing at once, then ready; progress events count up to every chunk."""
    reply = await client.call_rpc(tenant, RagService.CreateDocument, create("big", LARGE))
    assert reply.created
    assert reply.document.status == "processing"
    assert reply.job_id.startswith(f"rag-create:{tenant}:big:")
    doc = await ready(client, tenant, "big")
    assert doc.status == "ready"
    assert doc.chunk_count > 10
    assert doc.chunks_embedded == doc.chunk_count

    async def final_progress() -> list[DocumentProgressEvent]:
        """The progress events, once the last (sent after the commit) is stored."""
        stored = await events(nc, tenant, "document_progress")
        found = [DocumentProgressEvent.FromString(b) for b in stored]
        return found if found and found[-1].status == "ready" else []

    progress = await eventually(final_progress, timeout=30, what="the ready progress event")
    counts = [p.chunks_embedded for p in progress if p.status == "processing"]
    assert counts == sorted(counts)
    assert counts[-1] == doc.chunk_count
    found = await client.call_rpc(
        tenant, RagService.Search, SearchRequest(query_text="worker 17 acknowledges", top_k=3)
    )
    assert found.results[0].document_id == "big"
    again = await client.call_rpc(tenant, RagService.CreateDocument, create("big", LARGE))
    assert not again.created
    assert again.document.status == "ready"
    assert len(await events(nc, tenant, "document_ingested")) == 1


async def test_a_job_published_twice_ingests_once(
    client: Client, nc: NATS, db: RagDb, tenant: str
) -> None:
    """The same job (same Nats-Msg-Id) published twice, and a redelivered one: one document,
    one set of chunks, one ingested event; a job without a document_id gets a stable id."""
    js = nc.jetstream()
    request = CreateDocumentRequest(title="direct", content=LARGE)
    body = PROTOBUF_CODEC.encode(request)
    headers = {HEADER_CONTENT_TYPE: PROTOBUF_CODEC.content_type, HEADER_MSG_ID: "job-1"}
    subject = job_subject(tenant, "rag", "create_document")
    first = await js.publish(subject, body, headers=headers)
    second = await js.publish(subject, body, headers=headers)
    assert second.duplicate
    assert not first.duplicate

    async def stored() -> int:
        counts = await db.row_counts(tenant)
        return counts["documents"] if counts["chunks"] else 0

    assert await eventually(stored, timeout=120, what="the job's document") == 1
    listed = await db.pool.fetch(
        "SELECT id, status, chunk_count FROM rag.documents WHERE tenant = $1", tenant
    )
    doc = await ready(client, tenant, listed[0]["id"])
    assert doc.status == "ready"
    assert (await db.row_counts(tenant))["chunks"] == doc.chunk_count
    assert len(await events(nc, tenant, "document_ingested")) == 1


async def test_reembed_job_brings_every_document_to_the_configured_model(
    client: Client, db: RagDb, tenant: str
) -> None:
    """Chunks of another model are invisible to the vector leg; the reembed job re-embeds
    those documents (new version) and they are found again."""
    for doc_id, content in CORPUS.items():
        await client.call_rpc(tenant, RagService.CreateDocument, create(doc_id, content))
    await db.pool.execute(
        "UPDATE rag.chunks SET embedding_model = 'old-model' WHERE tenant = $1", tenant
    )
    vector = SearchRequest(query_text="relational database", mode="vector", skip_cache=True)
    assert list((await client.call_rpc(tenant, RagService.Search, vector)).results) == []
    queued = await client.call_rpc(tenant, RagService.Reembed, ReembedRequest())
    assert queued.documents_stale == 3
    assert queued.job_id

    async def fresh() -> bool:
        again = await client.call_rpc(tenant, RagService.Reembed, ReembedRequest())
        return again.documents_stale == 0

    assert await eventually(fresh, timeout=120, what="every document re-embedded")
    found = await client.call_rpc(tenant, RagService.Search, vector)
    assert found.results[0].document_id == "postgres"
    assert found.results[0].version == 2


async def test_concurrent_reembed_jobs_reembed_each_document_once(
    client: Client, nc: NATS, db: RagDb, tenant: str
) -> None:
    """Two reembed jobs at once (a request per corpus version queues one each): every document
    is re-embedded once, at version 2, however their lists of stale documents overlap."""
    for doc_id, content in CORPUS.items():
        await client.call_rpc(tenant, RagService.CreateDocument, create(doc_id, content))
    await db.pool.execute(
        "UPDATE rag.chunks SET embedding_model = 'old-model' WHERE tenant = $1", tenant
    )
    js = nc.jetstream()
    body = PROTOBUF_CODEC.encode(ReembedRequest())

    async def publish(job: str) -> None:
        headers = {HEADER_CONTENT_TYPE: PROTOBUF_CODEC.content_type, HEADER_MSG_ID: job}
        await js.publish(job_subject(tenant, "rag", "reembed"), body, headers=headers)

    async def first_done() -> bool:
        done = await db.pool.fetchval(
            "SELECT count(*) FROM rag.documents WHERE tenant = $1 AND version = 2", tenant
        )
        return bool(done >= 1)

    await publish("reembed-a")
    await eventually(first_done, timeout=120, what="the first job's first document")
    await publish("reembed-b")  # its list: what the first job has not done yet

    async def fresh() -> bool:
        stale = await db.pool.fetchval(
            "SELECT count(*) FROM rag.chunks WHERE tenant = $1 AND embedding_model = 'old-model'",
            tenant,
        )
        return bool(stale == 0)

    assert await eventually(fresh, timeout=120, what="every document re-embedded")
    await asyncio.sleep(1.0)  # let the second job finish what it took on
    versions = await db.pool.fetch(
        "SELECT id, version FROM rag.documents WHERE tenant = $1 ORDER BY id", tenant
    )
    assert {r["id"]: r["version"] for r in versions} == dict.fromkeys(sorted(CORPUS), 2)


async def test_a_large_update_is_made_by_a_job_and_swapped_in(
    client: Client, nc: NATS, tenant: str
) -> None:
    """New content over the threshold: the reply names the job and shows `processing` at the
    current version; another update meanwhile is a 409; then version 2 with the new chunks."""
    await client.call_rpc(tenant, RagService.CreateDocument, create("doc", CORPUS["nats"]))
    reply = await client.call_rpc(
        tenant,
        RagService.UpdateDocument,
        UpdateDocumentRequest(document_id="doc", content=LARGE),
    )
    assert reply.job_id.startswith(f"rag-update:{tenant}:doc:1:")
    assert reply.rechunked
    assert (reply.document.status, reply.document.version) == ("processing", 1)
    doc = await ready(client, tenant, "doc")
    assert (doc.status, doc.version, doc.error) == ("ready", 2, "")
    assert doc.chunk_count > 10
    found = await client.call_rpc(
        tenant,
        RagService.Search,
        SearchRequest(query_text="worker 17 acknowledges", top_k=3, skip_cache=True),
    )
    assert (found.results[0].document_id, found.results[0].version) == ("doc", 2)
    old = await client.call_rpc(
        tenant,
        RagService.Search,
        SearchRequest(query_text="Subjects", mode="keyword", skip_cache=True),
    )
    assert list(old.results) == []
    ingested = [
        DocumentIngestedEvent.FromString(b) for b in await events(nc, tenant, "document_ingested")
    ]
    assert [e.version for e in ingested] == [1, 2]


async def test_an_update_while_its_job_runs_is_refused(client: Client, tenant: str) -> None:
    """While an update job is queued or running, a second update is a retryable 409 and
    changes nothing; the first one still lands."""
    await client.call_rpc(tenant, RagService.CreateDocument, create("doc", CORPUS["nats"]))
    queued = await client.call_rpc(  # many chunks: the job runs for a while
        tenant,
        RagService.UpdateDocument,
        UpdateDocumentRequest(document_id="doc", content=f"{LARGE}\n\n{LARGE}"),
    )
    assert queued.document.status == "processing"
    with pytest.raises(ServiceError) as refused:
        await client.call_rpc(
            tenant,
            RagService.UpdateDocument,
            UpdateDocumentRequest(document_id="doc", title="changed meanwhile"),
        )
    assert refused.value.code == "CONFLICT"
    doc = await ready(client, tenant, "doc")
    assert (doc.title, doc.version) == ("doc", 2)


async def test_an_inline_update_racing_a_queued_one_never_drops_the_queued_job(
    client: Client, tenant: str
) -> None:
    """Every update answered with success lands: a queued one is never silently superseded."""
    for round_ in range(4):
        doc_id = f"doc{round_}"
        await client.call_rpc(tenant, RagService.CreateDocument, create(doc_id, CORPUS["nats"]))

        async def update(content: str, doc_id: str = doc_id) -> bool:
            try:
                await client.call_rpc(
                    tenant,
                    RagService.UpdateDocument,
                    UpdateDocumentRequest(document_id=doc_id, content=content),
                )
            except ServiceError as exc:
                if exc.code != "CONFLICT":
                    raise
                return False
            return True

        applied = await asyncio.gather(update(CORPUS["postgres"]), update(LARGE))
        doc = await ready(client, tenant, doc_id)
        assert doc.version == 1 + sum(applied), (round_, applied, doc.version)


async def test_two_large_creates_of_one_id_with_other_content_make_one_a_conflict(
    client: Client, tenant: str
) -> None:
    """Two large creates of one id with different content at once: one is a 409."""
    for round_ in range(4):
        doc_id = f"big{round_}"

        async def created(content: str, doc_id: str = doc_id) -> str:
            try:
                reply = await client.call_rpc(
                    tenant, RagService.CreateDocument, create(doc_id, content)
                )
            except ServiceError as exc:
                return exc.code
            return reply.document.content_hash

        outcomes = await asyncio.gather(created(LARGE), created(f"{LARGE}\n\nmore"))
        assert sorted(outcomes).count("CONFLICT") == 1, (round_, outcomes)
        await ready(client, tenant, doc_id)
