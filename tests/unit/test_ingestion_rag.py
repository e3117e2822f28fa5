"""The ingestion worker's calls to RAG, with the kit's handler test kit (no servers)."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Awaitable, Callable

import pytest
from google.protobuf import json_format

from schemas.errors import Conflict, NotFound, Unavailable, Unprocessable
from schemas.v1.rag_pb2 import (
    CreateDocumentRequest,
    CreateDocumentResponse,
    DeleteDocumentResponse,
    Document,
    GetDocumentResponse,
    UpdateDocumentResponse,
)
from schemas.v1.rag_rpc import RagService
from workers.ingestion import rag
from workers.ingestion.document import Section, StructuredDocument
from workers.ingestion.store import FileRecord
from workers.runtime import testing
from workers.runtime.context import Context

NOW = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)


def record(**overrides: object) -> FileRecord:
    values: dict[str, object] = {
        "file_id": "0b6f6d7e-1111-4222-8333-444455556666",
        "object_name": "uploads/x",
        "file_name": "log.pdf",
        "title": "",
        "declared_content_type": "application/pdf",
        "detected_type": "pdf",
        "size_bytes": 10,
        "sha256": "ab",
        "status": "processing",
        "run_id": "r1",
        "progress": 0.0,
        "pages_done": 0,
        "pages_total": 0,
        "characters": 0,
        "sections": 0,
        "document_id": "",
        "failure": None,
        "metadata": {"team": "ops"},
        "auto_ingest": True,
        "options": {"chunk_size": 500},
        "created_at": NOW,
        "updated_at": NOW,
        "processed_at": None,
    }
    return FileRecord(**{**values, **overrides})  # type: ignore[arg-type]


def structured(pages: int = 2, sections: int = 1) -> StructuredDocument:
    text = "\n\n".join(f"Page {i} text." for i in range(1, pages + 1))
    offsets = [(i + 1, i * 14) for i in range(pages)]
    return StructuredDocument(
        text=text,
        sections=[Section(f"S{i}" * 10, 1, i, i + 1, 1, 1) for i in range(sections)],
        page_offsets=offsets,
        pages=pages,
        pages_parsed=pages,
        title="From the file",
        paged=True,
    )


async def noop(done: int, total: int) -> None:
    return None


async def ingest(
    ctx: Context, wait: float, on_progress: Callable[[int, int], Awaitable[None]]
) -> Document:
    """The processor's two steps: the write, then the wait until RAG has the document."""
    return await rag.until_ready(ctx, await rag.put(ctx, record(), structured()), wait, on_progress)


async def test_create_document_names_the_file_and_its_pages() -> None:
    """One create_document: id from the file, the file name as source, page starts in metadata."""
    ready = Document(document_id="file-x", status="ready")
    ctx, seen = testing.context(
        replies={RagService.CreateDocument: CreateDocumentResponse(document=ready)}
    )
    document = await ingest(ctx, 5, noop)
    assert document.status == "ready"
    [call] = seen.calls
    assert call.method is RagService.CreateDocument
    sent = call.request
    assert isinstance(sent, CreateDocumentRequest)
    assert sent.document_id == "file-0b6f6d7e-1111-4222-8333-444455556666"
    assert (sent.title, sent.source, sent.chunk_size) == ("From the file", "log.pdf", 500)
    assert not sent.HasField("chunk_overlap")
    meta = json_format.MessageToDict(sent.metadata)
    assert meta["page_starts"] == [0, 14]
    assert (meta["file_name"], meta["team"], meta["pages"]) == ("log.pdf", "ops", 2)


async def test_other_content_under_the_same_id_is_an_update_with_reprocess() -> None:
    """A re-run with other text gets 409 from create and replaces the content by update."""
    updated = Document(document_id="file-x", status="ready", version=2)
    ctx, seen = testing.context(
        replies={
            RagService.CreateDocument: Conflict("exists with other content"),
            RagService.UpdateDocument: UpdateDocumentResponse(document=updated),
        }
    )
    document = await ingest(ctx, 5, noop)
    assert document.version == 2
    assert [c.method for c in seen.calls] == [RagService.CreateDocument, RagService.UpdateDocument]
    assert seen.calls[1].request.reprocess  # type: ignore[attr-defined]


async def test_a_document_rag_ingests_as_a_job_is_polled_until_ready() -> None:
    """status processing: get_document until ready, reporting RAG's embedding progress."""
    states = iter(["processing", "ready"])

    def get(request: object) -> GetDocumentResponse:
        return GetDocumentResponse(
            document=Document(
                document_id="file-x", status=next(states), chunks_embedded=5, chunks_total=10
            )
        )

    ctx, seen = testing.context(
        replies={
            RagService.CreateDocument: CreateDocumentResponse(
                document=Document(document_id="file-x", status="processing", chunks_total=10)
            ),
            RagService.GetDocument: get,
        }
    )
    reported: list[tuple[int, int]] = []

    async def progress(done: int, total: int) -> None:
        reported.append((done, total))

    document = await ingest(ctx, 10, progress)
    assert document.status == "ready"
    assert [c.method for c in seen.calls].count(RagService.GetDocument) == 2
    assert reported == [(0, 10), (5, 10)]


async def test_a_document_rag_could_not_ingest_fails_the_run_with_its_reason() -> None:
    """RAG's `failed` status is a 422 carrying RAG's error text."""
    failed = Document(document_id="file-x", status="failed", error="embedding dimension mismatch")
    ctx, _ = testing.context(
        replies={RagService.CreateDocument: CreateDocumentResponse(document=failed)}
    )
    with pytest.raises(Unprocessable, match="embedding dimension mismatch"):
        await ingest(ctx, 5, noop)


async def test_rag_down_is_a_retryable_unavailable() -> None:
    """No RAG worker: the call raises Unavailable (the job is retried with backoff)."""
    ctx, _ = testing.context(replies={})
    with pytest.raises(Unavailable) as caught:
        await ingest(ctx, 5, noop)
    assert caught.value.retryable


async def test_deleting_a_document_rag_no_longer_has_is_not_an_error() -> None:
    """delete: True when RAG deleted it, False on 404."""
    ctx, _ = testing.context(
        replies={RagService.DeleteDocument: DeleteDocumentResponse(chunks_deleted=3)}
    )
    assert await rag.delete(ctx, "file-x")
    ctx, _ = testing.context(replies={RagService.DeleteDocument: NotFound("gone")})
    assert not await rag.delete(ctx, "file-x")


def test_metadata_stays_within_rags_limit_dropping_sections_then_pages() -> None:
    """Thousands of sections and pages are cut to fit 16 KiB, and the cut is flagged."""
    meta = rag.document_metadata(record(), structured(pages=5000, sections=1000))
    assert len(json.dumps(meta).encode()) <= rag.RAG_METADATA_BYTES
    assert meta.get("pages_omitted") or "page_starts" in meta
    small = rag.document_metadata(record(), structured(pages=100, sections=20))
    assert len(small["page_starts"]) == 100
    assert len(small["sections"]) == 20
    partial = rag.document_metadata(record(), structured(pages=100, sections=1000))
    assert 0 < len(partial["sections"]) < 1000
