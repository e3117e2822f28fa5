"""Ingesting documents: validate, chunk, embed through the gateway, store, then tell the fleet.

Everything a request can get wrong is checked before anything is embedded or written. The
embedding calls happen outside any transaction; the document, its chunks, the corpus version
and the event are then written in one transaction (the kit's outbox publishes the event after
the commit).

Idempotency: a document is identified by (tenant, id); its identity for a repeated create is
(content hash, title, source, metadata, chunk size, overlap). A create repeating a stored
identity changes nothing and embeds nothing; a create with the same id and anything different
is a 409. A job (`job.rag.create_document`) is keyed by its Nats-Msg-Id
`rag-create:<tenant>:<id>:<content hash>` (a retry of a failed one: `:<time of the failure>`
added), so a repeated enqueue is stored once, and a redelivered job finds the document ready and
does nothing.
"""

from __future__ import annotations

import functools
import hashlib
import uuid
from typing import Any

import asyncpg

from schemas.errors import BadRequest, Conflict, ServiceError
from schemas.v1.rag_pb2 import (
    CreateDocumentRequest,
    CreateDocumentResponse,
    DocumentIngestedEvent,
    DocumentProgressEvent,
)
from schemas.v1.rag_rpc import RagService
from subjects.events import RAG_DOCUMENT_INGESTED, RAG_DOCUMENT_PROGRESS
from workers.rag.chunking import (
    DEFAULT_CHUNK_SIZE,
    MAX_CHUNK_SIZE,
    MIN_CHUNK_SIZE,
    Chunker,
    default_overlap,
)
from workers.rag.documents import document_message
from workers.rag.embedder import Embedder
from workers.rag.records import DocumentRow, EmbeddedChunks, NewDocument
from workers.rag.settings import RagSettings
from workers.rag.store import DocumentExists, RagStore
from workers.runtime import validation as check
from workers.runtime.context import Context
from workers.runtime.outbox import Outbox, StagedEvent

MAX_TEXT_FIELD = 1024
_JOB_IDS = uuid.UUID("6f1d8f7e-2c3a-4a53-9a8e-0f3c2b7d9e41")


def content_hash(content: str) -> str:
    return hashlib.sha256(content.encode()).hexdigest()


def same_identity(row: DocumentRow, doc: NewDocument) -> bool:
    return (row.content_hash, row.title, row.source, row.metadata, row.chunk_size,
            row.chunk_overlap) == (doc.content_hash, doc.title, doc.source, doc.metadata,
                                   doc.chunk_size, doc.chunk_overlap)  # fmt: skip


def chunking(size: int | None, overlap: int | None, *, prefix: str = "") -> tuple[int, int]:
    """The chunk size and overlap of a request (None: the defaults)."""
    chunk_size = DEFAULT_CHUNK_SIZE if size is None else size
    check.integer(chunk_size, f"{prefix}chunk_size", minimum=MIN_CHUNK_SIZE, maximum=MAX_CHUNK_SIZE)
    chunk_overlap = default_overlap(chunk_size) if overlap is None else overlap
    check.integer(chunk_overlap, f"{prefix}chunk_overlap", minimum=0, maximum=chunk_size // 2)
    return chunk_size, chunk_overlap


class Ingestor:
    def __init__(
        self,
        store: RagStore,
        chunker: Chunker,
        embedder: Embedder,
        outbox: Outbox,
        settings: RagSettings,
        max_attempts: int,
    ) -> None:
        self.store = store
        self.chunker = chunker
        self.embedder = embedder
        self.outbox = outbox
        self.settings = settings
        self.max_attempts = max_attempts

    # -- validation ---------------------------------------------------------------------------

    def check_content(self, content: str, field: str = "content") -> str:
        check.text(content, field, required=True, max_bytes=self.settings.max_document_bytes)
        if not content.strip():
            raise BadRequest(f"{field} is empty (only whitespace)", details={"field": field})
        return content

    def check_metadata(self, value: Any, field: str = "metadata") -> dict[str, Any]:
        return check.struct(value, field, max_bytes=self.settings.max_metadata_bytes)

    def new_document(self, ctx: Context, req: CreateDocumentRequest) -> NewDocument:
        document_id = check.identifier(req.document_id, "document_id", required=False)
        if not document_id:
            # A job published without an id gets the same id on every delivery.
            document_id = (
                str(uuid.uuid5(_JOB_IDS, f"{ctx.tenant}\x00{ctx.message_id}"))
                if ctx.message_id
                else str(uuid.uuid4())
            )
        title = check.text(
            req.title, "title", required=True, max_chars=MAX_TEXT_FIELD, multiline=False
        )
        source = check.text(req.source, "source", max_chars=MAX_TEXT_FIELD, multiline=False)
        content = self.check_content(req.content)
        size, overlap = chunking(
            req.chunk_size if req.HasField("chunk_size") else None,
            req.chunk_overlap if req.HasField("chunk_overlap") else None,
        )
        return NewDocument(
            id=document_id,
            title=title,
            source=source,
            metadata=self.check_metadata(req.metadata),
            content=content,
            content_hash=content_hash(content),
            chunk_size=size,
            chunk_overlap=overlap,
        )

    # -- create -------------------------------------------------------------------------------

    async def create(self, ctx: Context, req: CreateDocumentRequest) -> CreateDocumentResponse:
        doc = self.new_document(ctx, req)
        existing = await self.store.get(ctx.tenant, doc.id)
        if existing is not None:
            if not same_identity(existing, doc):
                raise Conflict(
                    f"document {doc.id} exists with other content or fields; use update_document",
                    details={"document_id": doc.id},
                )
            # Ready: nothing to do. Processing: its job is queued (the job itself goes on).
            if existing.status == "ready" or (
                existing.status == "processing" and ctx.message_id is None
            ):
                return CreateDocumentResponse(
                    document=document_message(existing), created=False, job_id=existing.job_id
                )
        if ctx.message_id is not None:
            return await self._run_job(ctx, doc)
        if self.is_large(doc):
            return await self._enqueue(ctx, req, doc, existing)
        embedded = await self.embed(ctx, doc)
        if existing is not None:  # it failed before: these chunks make it ready
            stage = self._stage_ingested(ctx, doc, None, embedded)
            done = await self.store.finish_processing(ctx.tenant, doc, embedded, stage)
            if done is None:
                raise Conflict("the document changed meanwhile", retryable=True)
            row, staged = done
        else:
            ingested = (RAG_DOCUMENT_INGESTED, self.ingested_event(doc, 1, embedded), None)
            events = functools.partial(self.outbox.event_rows, ctx, [ingested])
            try:
                row, staged = await self.store.create_ready(ctx.tenant, doc, embedded, events)
            except DocumentExists:
                found = await self.store.get(ctx.tenant, doc.id)
                if found is None:  # created by another request, and deleted since
                    raise Conflict(
                        f"document {doc.id} was created and deleted meanwhile; send it again",
                        details={"document_id": doc.id},
                        retryable=True,
                    ) from None
                if not same_identity(found, doc):
                    raise Conflict(
                        f"document {doc.id} was created meanwhile with other content",
                        details={"document_id": doc.id},
                    ) from None
                return CreateDocumentResponse(document=document_message(found), created=False)
        await self.outbox.publish(staged)
        return CreateDocumentResponse(document=document_message(row), created=True)

    def is_large(self, doc: NewDocument) -> bool:
        return len(doc.content.encode()) > self.settings.job_threshold_bytes

    async def _enqueue(
        self,
        ctx: Context,
        req: CreateDocumentRequest,
        doc: NewDocument,
        existing: DocumentRow | None,
    ) -> CreateDocumentResponse:
        job_id = f"rag-create:{ctx.tenant}:{doc.id}:{doc.content_hash}"
        if existing is not None:
            # The failed job's id may still be in the stream's duplicate window, which would
            # drop this job and leave the row `processing`: a retry is keyed by the failure it
            # retries (the same id for every retry of that failure).
            job_id += f":{existing.updated_at.timestamp():.6f}"
        job = CreateDocumentRequest()
        job.CopyFrom(req)
        job.document_id = doc.id
        await ctx.enqueue(RagService.CreateDocument, job, msg_id=job_id)
        if existing is not None:  # failed before: processing again
            await self.store.retry_failed(ctx.tenant, doc.id, job_id)
        else:
            await self.store.create_processing(ctx.tenant, doc, job_id)
        row = await self.store.get(ctx.tenant, doc.id)
        if row is None:  # deleted in between
            raise Conflict("the document was deleted while it was queued", retryable=True)
        if not same_identity(row, doc):
            # A concurrent create of this id with other content inserted it first.
            raise Conflict(
                f"document {doc.id} was created meanwhile with other content",
                details={"document_id": doc.id},
            )
        return CreateDocumentResponse(document=document_message(row), created=True, job_id=job_id)

    async def _run_job(self, ctx: Context, doc: NewDocument) -> CreateDocumentResponse:
        """The job: progress on the row and as events; `failed` with the reason when it
        fails for good (a permanent error, or the last attempt)."""
        await self.store.create_processing(ctx.tenant, doc, ctx.message_id or "")
        try:
            embedded = await self.embed(ctx, doc, report=True)
            done = await self.store.finish_processing(
                ctx.tenant, doc, embedded, self._stage_ingested(ctx, doc, None, embedded)
            )
        except ServiceError as exc:
            if not exc.retryable or ctx.attempt >= self.max_attempts:
                await self._fail(ctx, doc, exc.message)
            raise
        except Exception:
            if ctx.attempt >= self.max_attempts:
                await self._fail(ctx, doc, "internal error")
            raise
        if done is None:  # another delivery finished it, or the content changed meanwhile
            row = await self.store.get(ctx.tenant, doc.id)
            if row is None:
                raise Conflict("the document was deleted during ingestion")
            return CreateDocumentResponse(document=document_message(row), created=False)
        row, staged = done
        await self.outbox.publish(staged)
        await self.progress(ctx, row.id, row.version, "ready", row.chunk_count, row.chunk_count)
        return CreateDocumentResponse(
            document=document_message(row), created=True, job_id=ctx.message_id or ""
        )

    async def abandon(self, ctx: Context, req: CreateDocumentRequest) -> None:
        """The job's last attempt never finished (its worker was killed): the document it was
        ingesting ends `failed` instead of staying `processing`, and a create sent again
        queues it again. A document already ready, or of other content, is left alone."""
        doc = self.new_document(ctx, req)
        await self._fail(
            ctx,
            doc,
            "ingestion stopped on its last attempt (its worker was stopped, or it ran out of time)",
        )

    async def _fail(self, ctx: Context, doc: NewDocument, reason: str) -> None:
        if await self.store.mark_failed(ctx.tenant, doc.id, doc.content_hash, reason):
            await self.progress(ctx, doc.id, 1, "failed", 0, 0, reason)

    async def progress(
        self,
        ctx: Context,
        document_id: str,
        version: int,
        status: str,
        done: int,
        total: int,
        error: str = "",
    ) -> None:
        event = DocumentProgressEvent(
            document_id=document_id,
            version=version,
            status=status,
            chunks_embedded=done,
            chunks_total=total,
            error=error,
        )
        try:
            await ctx.emit(RAG_DOCUMENT_PROGRESS, event)
        except Exception as exc:  # progress is informative; the status row is the truth
            ctx.log.warning("progress event not published", error=type(exc).__name__)

    # -- shared -------------------------------------------------------------------------------

    async def embed(
        self, ctx: Context, doc: NewDocument, *, report: bool = False, version: int = 1
    ) -> EmbeddedChunks:
        """Chunks of the document with their vectors (from the gateway); `report`: progress
        on the row and as events of the version being made."""
        chunks = self.chunker.split(
            doc.content, chunk_size=doc.chunk_size, chunk_overlap=doc.chunk_overlap
        )

        async def progress(done: int, total: int) -> None:
            await self.store.set_progress(ctx.tenant, doc.id, done, total)
            await self.progress(ctx, doc.id, version, "processing", done, total)

        vectors = await self.embedder.embed(
            ctx, [c.text for c in chunks], progress=progress if report else None
        )
        return EmbeddedChunks(chunks, vectors, self.embedder.model, self.embedder.dims)

    def _stage_ingested(
        self, ctx: Context, doc: NewDocument, version: int | None, embedded: EmbeddedChunks
    ) -> Any:
        async def stage(conn: asyncpg.Connection) -> StagedEvent:
            current = version or await conn.fetchval(
                "SELECT version FROM rag.documents WHERE tenant = $1 AND id = $2",
                ctx.tenant,
                doc.id,
            )
            return await self.outbox.stage(
                conn, ctx, RAG_DOCUMENT_INGESTED, self.ingested_event(doc, current, embedded)
            )

        return stage

    def ingested_event(
        self, doc: NewDocument, version: int, embedded: EmbeddedChunks
    ) -> DocumentIngestedEvent:
        return DocumentIngestedEvent(
            document_id=doc.id,
            version=version,
            chunk_count=len(embedded.chunks),
            content_hash=doc.content_hash,
            title=doc.title,
            source=doc.source,
            embedding_model=embedded.model,
        )
