"""The file's text into RAG: `rag.create_document` over NATS, then wait until it is searchable.

The RAG document id is derived from the file id (`file-<uuid>`), so running a file again, or a
job redelivered after a crash, addresses the same document: RAG stores a document with the same
id and content once (`created: false`), and different text (other options) replaces it through
`rag.update_document`. The metadata says where the text came from: the file id and name, its
type, and for paged files the offset where each page starts, so the `start` offset of any
retrieved chunk gives its page (README, "Find an uploaded file in RAG").
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

from schemas.errors import Conflict, NotFound, Unavailable, Unprocessable
from schemas.v1.rag_pb2 import (
    CreateDocumentRequest,
    DeleteDocumentRequest,
    Document,
    GetDocumentRequest,
    UpdateDocumentRequest,
)
from schemas.v1.rag_rpc import RagService
from workers.ingestion.document import StructuredDocument
from workers.ingestion.store import FileRecord
from workers.runtime import validation as check
from workers.runtime.context import Context

# RAG keeps at most 16 KiB of metadata per document (rag.proto); ours fits beside the client's.
RAG_METADATA_BYTES = 16 * 1024
MAX_SECTIONS = 200
_POLL = (0.2, 0.5, 1.0, 2.0)


def document_id_for(file_id: str) -> str:
    return f"file-{file_id}"


def _size(value: Any) -> int:
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())


def document_metadata(record: FileRecord, doc: StructuredDocument) -> dict[str, Any]:
    """The client's metadata plus where the text came from, within RAG's size limit: sections
    go first, then page starts, when they do not fit (`*_omitted` says so)."""
    meta: dict[str, Any] = {
        **record.metadata,
        "file_id": record.file_id,
        "file_name": record.file_name,
        "detected_type": record.detected_type,
        "pages": doc.pages,
    }
    if doc.paged and doc.page_offsets:
        pages = [page for page, _ in doc.page_offsets]
        if pages == list(range(1, len(pages) + 1)):
            meta["page_starts"] = [offset for _, offset in doc.page_offsets]
        else:
            meta["page_offsets"] = [list(pair) for pair in doc.page_offsets]
    sections = [
        {
            "title": s.title[:80],
            "level": s.level,
            "start": s.char_start,
            **({"page_start": s.page_start, "page_end": s.page_end} if doc.paged else {}),
        }
        for s in doc.sections[:MAX_SECTIONS]
    ]
    budget = RAG_METADATA_BYTES - 256
    while sections and _size({**meta, "sections": sections}) > budget:
        sections = sections[: len(sections) // 2]
    if sections:
        meta["sections"] = sections
    elif doc.sections:
        meta["sections_omitted"] = True
    for key in ("page_starts", "page_offsets"):
        if key in meta and _size(meta) > budget:
            del meta[key]
            meta["pages_omitted"] = True
    return meta


async def put(ctx: Context, record: FileRecord, doc: StructuredDocument) -> Document:
    """Create (or replace) the file's RAG document; returns it as RAG answered (maybe not
    ready yet)."""
    options = record.options
    document_id = record.document_id or document_id_for(record.file_id)
    title = record.title or doc.title or record.file_name
    metadata = check.to_struct(document_metadata(record, doc))
    create = CreateDocumentRequest(
        document_id=document_id,
        title=title[:1024],
        content=doc.text,
        source=record.file_name,
        metadata=metadata,
    )
    if "chunk_size" in options:
        create.chunk_size = options["chunk_size"]
    if "chunk_overlap" in options:
        create.chunk_overlap = options["chunk_overlap"]
    try:
        document = (await ctx.call(RagService.CreateDocument, create)).document
    except Conflict:
        # The id exists with other content (the file was run again with other options).
        update = UpdateDocumentRequest(
            document_id=document_id,
            title=create.title,
            content=create.content,
            source=create.source,
            metadata=metadata,
            reprocess=True,
        )
        if create.HasField("chunk_size"):
            update.chunk_size = create.chunk_size
        if create.HasField("chunk_overlap"):
            update.chunk_overlap = create.chunk_overlap
        document = (await ctx.call(RagService.UpdateDocument, update)).document
    return document


async def until_ready(
    ctx: Context,
    document: Document,
    wait_seconds: float,
    on_progress: Callable[[int, int], Awaitable[None]],
) -> Document:
    """`document` once RAG has it ready (polled, progress reported), or Unavailable after
    `wait_seconds`; what RAG failed to ingest fails the run with RAG's reason."""
    deadline = time.monotonic() + wait_seconds
    attempt = 0
    while document.status == "processing":
        await on_progress(document.chunks_embedded, document.chunks_total)
        if time.monotonic() > deadline:
            raise Unavailable(
                "RAG did not finish the document in time",
                details={"document_id": document.document_id},
            )
        await asyncio.sleep(_POLL[min(attempt, len(_POLL) - 1)])
        attempt += 1
        reply = await ctx.call(
            RagService.GetDocument, GetDocumentRequest(document_id=document.document_id)
        )
        document = reply.document
    if document.status == "failed":
        raise Unprocessable(
            f"RAG could not ingest the text: {document.error[:300]}",
            details={"document_id": document.document_id},
        )
    return document


async def delete(ctx: Context, document_id: str) -> bool:
    """Delete the file's RAG document; False when RAG has no such document."""
    try:
        await ctx.call(RagService.DeleteDocument, DeleteDocumentRequest(document_id=document_id))
    except NotFound:
        return False
    return True
