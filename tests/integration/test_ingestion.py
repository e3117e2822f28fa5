"""The ingestion component end to end: real worker, NATS + JetStream + Object Store, PostgreSQL,
and a RAG stand-in served by the real runtime (tests/support/fake_rag.py)."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from google.protobuf import json_format
from nats.aio.client import Client as NATS

from aifleet.embedded import EmbeddedNats, EmbeddedPostgres
from schemas.errors import BadRequest, Conflict, NotFound, ServiceError
from schemas.v1.common_pb2 import PageRequest
from schemas.v1.ingestion_pb2 import (
    DeleteFileRequest,
    FileIngestedEvent,
    GetFileRequest,
    ListFilesRequest,
    ProcessFileRequest,
    ProcessingOptions,
    StartUploadRequest,
    UploadPartRequest,
    UploadRequest,
    UploadResponse,
)
from schemas.v1.ingestion_rpc import IngestionService as Ingestion
from tests.support import documents, fake_rag
from tests.support.fleet import running_worker
from tests.support.ingestion import (
    IngestionDb,
    object_exists,
    put_object,
    stored_events,
    wait_for_status,
)
from workers.ingestion import service as ingestion
from workers.ingestion.errors import UnsupportedType
from workers.ingestion.store import IngestionStore
from workers.runtime import validation as check
from workers.runtime.client import Client
from workers.runtime.worker import Worker


@pytest.fixture(scope="module")
async def worker(nats_server: EmbeddedNats, postgres: EmbeddedPostgres) -> AsyncIterator[Worker]:
    """The ingestion worker and the RAG stand-in; retries quick, three attempts."""
    async with running_worker(
        [ingestion.component, fake_rag.component],
        nats_server.url,
        database_url=postgres.dsn,
        job_backoff=[0.2],
        job_max_deliver=3,
        outbox_interval=0.2,
        outbox_grace=0.5,
    ) as w:
        yield w


@pytest.fixture(scope="module")
async def db(postgres: EmbeddedPostgres) -> AsyncIterator[IngestionDb]:
    async with IngestionDb.connect(postgres.dsn) as found:
        yield found


@pytest.fixture
def tenant() -> str:
    return "i" + uuid.uuid4().hex[:16]


@pytest.fixture
def client(nc: NATS, worker: Worker) -> Client:
    return Client(nc, timeout=20.0)


async def upload(
    client: Client, nc: NATS, tenant: str, data: bytes, name: str, **fields: object
) -> UploadResponse:
    object_name = await put_object(nc, tenant, data)
    request = UploadRequest(object_name=object_name, file_name=name, **fields)  # type: ignore[arg-type]
    return await client.call_rpc(tenant, Ingestion.Upload, request)


@pytest.mark.parametrize(
    ("kind", "data", "name"),
    [
        ("pdf", documents.pdf(["Intro page.", documents.SENTENCES["pdf"]]), "log.pdf"),
        (
            "docx",
            documents.docx_file([("h1", "Tours"), ("p", documents.SENTENCES["docx"])]),
            "t.docx",
        ),
        ("html", documents.HTML_PAGE, "harbour.html"),
        ("csv", documents.CSV, "kettles.csv"),
        ("markdown", documents.MARKDOWN, "dome.md"),
        (
            "xlsx",
            documents.xlsx_file({"Stock": [["item"], [documents.SENTENCES["xlsx"]]]}),
            "s.xlsx",
        ),
    ],
)
async def test_each_type_is_uploaded_parsed_and_ingested_into_rag(
    client: Client, nc: NATS, tenant: str, kind: str, data: bytes, name: str
) -> None:
    """upload → job → RAG document holding the sentence, with file id, name and pages."""
    reply = await upload(client, nc, tenant, data, name, metadata=check.to_struct({"team": "ops"}))
    assert (reply.detected_type, reply.status, reply.deduplicated) == (kind, "processing", False)
    done = await wait_for_status(client, tenant, reply.file_id)
    assert done.status == "ingested", done.failure
    assert done.document_id == f"file-{reply.file_id}"
    assert done.characters > 0
    assert done.progress == 1
    document = fake_rag.STATE.documents[(tenant, done.document_id)]
    sentence = documents.SENTENCES[kind]
    assert sentence in document.content
    meta = json_format.MessageToDict(document.metadata)
    assert (meta["file_id"], meta["file_name"], meta["team"]) == (reply.file_id, name, "ops")
    assert document.source == name
    if kind == "pdf":
        starts = meta["page_starts"]
        assert len(starts) == 2
        assert document.content.index(sentence) >= starts[1]


async def test_processing_reports_progress_and_one_ingested_event(
    client: Client, nc: NATS, tenant: str
) -> None:
    """Progress events per page, one file_ingested event (after the commit, via the outbox)."""
    data = documents.pdf([f"Page {i} of the log." for i in range(1, 6)])
    reply = await upload(client, nc, tenant, data, "five.pdf")
    await wait_for_status(client, tenant, reply.file_id)
    progress = await stored_events(nc, tenant, "progress")
    assert progress
    assert all(
        m.headers and m.headers["Nats-Msg-Id"].startswith("ingestion-progress:") for m in progress
    )
    ingested = [
        FileIngestedEvent.FromString(m.data)
        for m in await stored_events(nc, tenant, "file_ingested")
    ]
    assert [(e.file_id, e.pages, e.document_id) for e in ingested] == [
        (reply.file_id, 5, f"file-{reply.file_id}")
    ]


async def test_large_documents_wait_until_rag_has_embedded_them(
    client: Client, nc: NATS, tenant: str
) -> None:
    """A document RAG ingests as a job is polled until ready before the file is ingested."""
    text = ("A long line about harbour logistics and the weather.\n" * 1200).encode()
    reply = await upload(client, nc, tenant, text, "long.txt")
    done = await wait_for_status(client, tenant, reply.file_id)
    assert done.status == "ingested"
    assert fake_rag.STATE.documents[(tenant, done.document_id)].status == "ready"
    assert fake_rag.STATE.reads[(tenant, done.document_id)] >= 2


async def test_the_same_bytes_twice_are_one_file_and_the_second_object_is_removed(
    client: Client, nc: NATS, tenant: str, db: IngestionDb
) -> None:
    """Dedupe per tenant by SHA-256: the existing file comes back, the new object is deleted."""
    first = await upload(client, nc, tenant, documents.CSV, "a.csv", auto_ingest=False)
    second_object = await put_object(nc, tenant, documents.CSV)
    again = await client.call_rpc(
        tenant, Ingestion.Upload, UploadRequest(object_name=second_object, file_name="b.csv")
    )
    assert (again.file_id, again.deduplicated, again.status) == (first.file_id, True, "uploaded")
    assert not await object_exists(nc, tenant, second_object)
    kept = await db.pool.fetchval(
        "SELECT object_name FROM ingestion.files WHERE tenant = $1", tenant
    )
    assert await object_exists(nc, tenant, kept)


async def test_unsupported_types_are_415_and_their_object_is_removed(
    client: Client, nc: NATS, tenant: str, db: IngestionDb
) -> None:
    """A PNG named report.pdf: 415 naming png; no file row, no object left."""
    png = b"\x89PNG\r\n\x1a\n" + bytes(200)
    name = await put_object(nc, tenant, png)
    with pytest.raises(UnsupportedType) as caught:
        await client.call_rpc(
            tenant, Ingestion.Upload, UploadRequest(object_name=name, file_name="report.pdf")
        )
    assert caught.value.details["detected_type"] == "png"
    assert not await object_exists(nc, tenant, name)
    assert (await db.row_counts(tenant))["files"] == 0


async def test_an_upload_whose_row_committed_before_an_error_keeps_its_object(
    client: Client, nc: NATS, tenant: str, db: IngestionDb, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An error after the file's row committed (a connection lost after COMMIT, a cancelled
    request) leaves the row's object in place: the file stays processable."""
    committed = IngestionStore.insert_file

    async def lost_after_commit(self: IngestionStore, *args: Any) -> Any:
        await committed(self, *args)
        raise ConnectionResetError("connection lost after COMMIT")

    monkeypatch.setattr(IngestionStore, "insert_file", lost_after_commit)
    name = await put_object(nc, tenant, documents.MARKDOWN + b"\nkept")
    with pytest.raises(ServiceError):
        await client.call_rpc(
            tenant, Ingestion.Upload, UploadRequest(object_name=name, file_name="kept.md")
        )
    assert (await db.row_counts(tenant))["files"] == 1
    assert await object_exists(nc, tenant, name)


async def test_a_corrupt_file_fails_its_run_with_the_parsers_reason(
    client: Client, nc: NATS, tenant: str
) -> None:
    """An encrypted PDF is accepted (it is a PDF) and its run fails with 422 and the reason."""
    data = documents.pdf(["secret"], user_password="pw", owner_password="owner")
    reply = await upload(client, nc, tenant, data, "locked.pdf")
    done = await wait_for_status(client, tenant, reply.file_id)
    assert done.status == "failed"
    assert done.failure.code == "UNPROCESSABLE"
    assert "encrypted" in done.failure.message
    assert not done.document_id
    assert (tenant, f"file-{reply.file_id}") not in fake_rag.STATE.documents
    failed = await stored_events(nc, tenant, "file_failed")
    assert len(failed) == 1


async def test_process_file_reruns_with_new_options_and_replaces_the_document(
    client: Client, nc: NATS, tenant: str
) -> None:
    """Uploaded without auto_ingest, processed later; again with max_pages: RAG updated."""
    data = documents.pdf(["First page words.", "Second page words.", "Third page words."])
    reply = await upload(client, nc, tenant, data, "three.pdf", auto_ingest=False)
    assert reply.status == "uploaded"
    run = await client.call_rpc(
        tenant, Ingestion.ProcessFile, ProcessFileRequest(file_id=reply.file_id, auto_ingest=True)
    )
    assert run.file.status == "processing"
    assert run.run_id
    first = await wait_for_status(client, tenant, reply.file_id)
    assert (first.status, first.pages_total, first.pages_done) == ("ingested", 3, 3)
    await client.call_rpc(
        tenant,
        Ingestion.ProcessFile,
        ProcessFileRequest(file_id=reply.file_id, options=ProcessingOptions(max_pages=1)),
    )
    second = await wait_for_status(client, tenant, reply.file_id)
    assert (second.status, second.pages_done, second.options.max_pages) == ("ingested", 1, 1)
    document = fake_rag.STATE.documents[(tenant, second.document_id)]
    assert "Third page" not in document.content
    assert fake_rag.STATE.created[(tenant, second.document_id)] == 1


async def test_list_pages_newest_first_and_filters_by_status(
    client: Client, nc: NATS, tenant: str
) -> None:
    """Keyset pages over the tenant's files; a status filter; a foreign token is refused."""
    ids = []
    for i in range(3):
        reply = await upload(
            client, nc, tenant, f"note {i}\n".encode(), f"n{i}.txt", auto_ingest=False
        )
        ids.append(reply.file_id)
    first = await client.call_rpc(
        tenant, Ingestion.ListFiles, ListFilesRequest(page=PageRequest(page_size=2))
    )
    assert [f.file_id for f in first.files] == ids[::-1][:2]
    rest = await client.call_rpc(
        tenant,
        Ingestion.ListFiles,
        ListFilesRequest(page=PageRequest(page_size=2, page_token=first.page.next_page_token)),
    )
    assert [f.file_id for f in rest.files] == [ids[0]]
    assert not rest.page.next_page_token
    uploaded = await client.call_rpc(
        tenant, Ingestion.ListFiles, ListFilesRequest(status="ingested")
    )
    assert list(uploaded.files) == []
    with pytest.raises(BadRequest):
        await client.call_rpc(
            "other" + tenant[:10],
            Ingestion.ListFiles,
            ListFilesRequest(page=PageRequest(page_token=first.page.next_page_token)),
        )


async def test_delete_removes_the_row_the_object_and_if_asked_the_document(
    client: Client, nc: NATS, tenant: str, db: IngestionDb
) -> None:
    """delete_file with delete_document: no row, no object, no RAG document."""
    reply = await upload(client, nc, tenant, documents.MARKDOWN, "dome.md")
    done = await wait_for_status(client, tenant, reply.file_id)
    row = await db.pool.fetchrow(
        "SELECT object_name FROM ingestion.files WHERE tenant = $1 AND file_id = $2::uuid",
        tenant,
        reply.file_id,
    )
    deleted = await client.call_rpc(
        tenant, Ingestion.DeleteFile, DeleteFileRequest(file_id=reply.file_id, delete_document=True)
    )
    assert (deleted.deleted, deleted.document_deleted) == (True, True)
    assert (tenant, done.document_id) not in fake_rag.STATE.documents
    assert not await object_exists(nc, tenant, row["object_name"])
    with pytest.raises(NotFound):
        await client.call_rpc(tenant, Ingestion.GetFile, GetFileRequest(file_id=reply.file_id))


async def test_chunked_upload_over_nats_assembles_the_parts_in_order(
    client: Client, nc: NATS, tenant: str, db: IngestionDb
) -> None:
    """start_upload, parts (one resent), upload: one file of exactly those bytes, parts gone."""
    data = documents.pdf([f"Chunked page {i}." for i in range(1, 9)])
    session = await client.call_rpc(
        tenant,
        Ingestion.StartUpload,
        StartUploadRequest(file_name="chunked.pdf", size_bytes=len(data)),
    )
    size = 1024
    pieces = [data[i : i + size] for i in range(0, len(data), size)]
    for index, piece in enumerate(pieces):
        await client.call_rpc(
            tenant,
            Ingestion.UploadPart,
            UploadPartRequest(upload_id=session.upload_id, index=index, data=piece),
        )
    resent = await client.call_rpc(
        tenant,
        Ingestion.UploadPart,
        UploadPartRequest(upload_id=session.upload_id, index=1, data=pieces[1]),
    )
    assert (resent.parts, resent.size_bytes) == (len(pieces), len(data))
    with pytest.raises(Conflict):
        await client.call_rpc(
            tenant,
            Ingestion.UploadPart,
            UploadPartRequest(upload_id=session.upload_id, index=len(pieces) + 1, data=b"x"),
        )
    reply = await client.call_rpc(
        tenant, Ingestion.Upload, UploadRequest(upload_id=session.upload_id)
    )
    assert (reply.file_name, reply.detected_type, reply.size_bytes) == (
        "chunked.pdf",
        "pdf",
        len(data),
    )
    assert reply.sha256 == hashlib.sha256(data).hexdigest()
    counts = await db.row_counts(tenant)
    assert (counts["uploads"], counts["upload_parts"]) == (0, 0)
    done = await wait_for_status(client, tenant, reply.file_id)
    assert (done.status, done.pages_total) == ("ingested", 8)
