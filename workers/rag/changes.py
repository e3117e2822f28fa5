"""Changing stored documents: update, delete, re-embed after a model change.

An update with new content (or new chunking, or `reprocess`) embeds the new chunks first, then
swaps them in with the document row in one transaction guarded by the version read at the
start: a concurrent update of the same document makes one of them a 409 (retryable), never a
mix. Title, source and metadata alone are changed in place (and copied to the chunks, which
the filters read) without embedding anything. New content over the job threshold is chunked and
embedded by a job (`job.rag.update_document`), as a large create is: the document shows
`processing` (and refuses other updates) while its current chunks are still searched, then the
job swaps the new ones in the same way; a failed job leaves the current version with the reason.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import asyncpg

from schemas.errors import Conflict, NotFound, ServiceError
from schemas.v1.rag_pb2 import (
    DeleteDocumentRequest,
    DeleteDocumentResponse,
    DocumentDeletedEvent,
    ReembedRequest,
    ReembedResponse,
    UpdateDocumentRequest,
    UpdateDocumentResponse,
)
from schemas.v1.rag_rpc import RagService
from subjects.events import RAG_DOCUMENT_DELETED, RAG_DOCUMENT_INGESTED
from workers.rag.documents import document_message
from workers.rag.ingest import MAX_TEXT_FIELD, Ingestor, chunking, content_hash
from workers.rag.records import DocumentRow, EmbeddedChunks, NewDocument
from workers.rag.store import VersionMoved
from workers.runtime import validation as check
from workers.runtime.context import Context
from workers.runtime.outbox import StagedEvent

REEMBED_BATCH = 100


def _moved(document_id: str) -> Conflict:
    return Conflict(
        f"document {document_id} changed while it was being updated; read it and retry",
        details={"document_id": document_id},
        retryable=True,
    )


@dataclass(frozen=True)
class Given:
    """The fields an update sets (None: keep the stored one), validated."""

    title: str | None
    source: str | None
    content: str | None
    metadata: dict[str, Any] | None


def update_job_id(ctx: Context, req: UpdateDocumentRequest, version: int) -> str:
    """The Nats-Msg-Id of an update job: the version it applies to and the request, so the
    same PUT repeated is one job."""
    digest = hashlib.sha256(req.SerializeToString(deterministic=True)).hexdigest()[:32]
    return f"rag-update:{ctx.tenant}:{req.document_id}:{version}:{digest}"


def _is_job_of(stored: str, job_id: str) -> bool:
    """Whether `stored` is the update job `job_id` or a retry of it."""
    return stored == job_id or stored.startswith(f"{job_id}:")


class DocumentChanges:
    def __init__(self, ingest: Ingestor) -> None:
        self.ingest = ingest
        self.store = ingest.store

    async def _existing(self, ctx: Context, document_id: str) -> DocumentRow:
        check.identifier(document_id, "document_id")
        row = await self.store.get(ctx.tenant, document_id, content=True)
        if row is None:
            raise NotFound(f"no document {document_id}", details={"document_id": document_id})
        return row

    async def update(self, ctx: Context, req: UpdateDocumentRequest) -> UpdateDocumentResponse:
        """Validate, then change at once, or (new content over the job threshold) queue the
        rechunking as `job.rag.update_document`; as that job, make and swap in the chunks."""
        title = req.title if req.HasField("title") else None
        if title is not None:
            check.text(title, "title", required=True, max_chars=MAX_TEXT_FIELD, multiline=False)
        source = req.source if req.HasField("source") else None
        if source is not None:
            check.text(source, "source", max_chars=MAX_TEXT_FIELD, multiline=False)
        given = Given(
            title=title,
            source=source,
            content=self.ingest.check_content(req.content) if req.HasField("content") else None,
            metadata=(
                self.ingest.check_metadata(req.metadata) if req.HasField("metadata") else None
            ),
        )
        if req.HasField("chunk_size"):  # its range needs no stored row
            chunking(req.chunk_size, req.chunk_overlap if req.HasField("chunk_overlap") else None)
        row = await self._existing(ctx, req.document_id)
        if ctx.message_id is not None:
            return await self._run_job(ctx, req, row, given)
        if row.status == "processing" and _is_job_of(
            row.job_id, update_job_id(ctx, req, row.version)
        ):
            # The same PUT again: its job is queued (once: by its id), e.g. after a failure
            # between marking the document and queueing the job.
            await ctx.enqueue(RagService.UpdateDocument, req, msg_id=row.job_id)
            return UpdateDocumentResponse(
                document=document_message(row), rechunked=True, job_id=row.job_id
            )
        if row.status == "processing":
            raise Conflict(
                f"document {row.id} is being ingested; update it when it is ready",
                details={"document_id": row.id, "status": row.status},
                retryable=True,
            )
        doc, rechunk = self._planned(req, row, given)
        if rechunk and self.ingest.is_large(doc):
            return await self._enqueue(ctx, req, row)
        embedded = await self.ingest.embed(ctx, doc) if rechunk else None
        return await self._replace(ctx, doc, row, embedded)

    def _planned(
        self,
        req: UpdateDocumentRequest,
        row: DocumentRow,
        given: Given,
    ) -> tuple[NewDocument, bool]:
        """The document the update makes, and whether its chunks must be made again."""
        size, overlap = chunking(
            req.chunk_size if req.HasField("chunk_size") else row.chunk_size,
            req.chunk_overlap if req.HasField("chunk_overlap") else None,
        )
        if not req.HasField("chunk_overlap") and not req.HasField("chunk_size"):
            overlap = row.chunk_overlap
        new_content = given.content if given.content is not None else row.content or ""
        doc = NewDocument(
            id=row.id,
            title=given.title if given.title is not None else row.title,
            source=given.source if given.source is not None else row.source,
            metadata=given.metadata if given.metadata is not None else row.metadata,
            content=new_content,
            content_hash=content_hash(new_content),
            chunk_size=size,
            chunk_overlap=overlap,
        )
        rechunk = (
            req.reprocess
            or row.status == "failed"
            or doc.content_hash != row.content_hash
            or (size, overlap) != (row.chunk_size, row.chunk_overlap)
        )
        return doc, rechunk

    async def _replace(
        self,
        ctx: Context,
        doc: NewDocument,
        row: DocumentRow,
        embedded: EmbeddedChunks | None,
        job_id: str | None = None,
    ) -> UpdateDocumentResponse:
        stage = self._stage(ctx, doc, row.version + 1, embedded)
        try:
            updated, staged = await self.store.replace(
                ctx.tenant,
                doc,
                expected_version=row.version,
                embedded=embedded,
                stage=stage,
                job_id=job_id,
            )
        except VersionMoved:
            raise _moved(row.id) from None
        if staged is not None:
            await self.ingest.outbox.publish(staged)
        return UpdateDocumentResponse(
            document=document_message(updated), rechunked=embedded is not None
        )

    async def _enqueue(
        self, ctx: Context, req: UpdateDocumentRequest, row: DocumentRow
    ) -> UpdateDocumentResponse:
        """Mark the document `processing` with the job's id, then queue the job: the job runs
        only on a row that names it, so it is never ahead of the mark. If queueing fails the
        mark is undone."""
        job_id = update_job_id(ctx, req, row.version)
        if _is_job_of(row.job_id, job_id):
            # This update's job failed at this version: its id may still be in the stream's
            # duplicate window, which would drop the job and leave the row `processing`. A
            # retry is keyed by the failure it retries.
            job_id += f":{row.updated_at.timestamp():.6f}"
        try:
            marked = await self.store.begin_update(ctx.tenant, row.id, row.version, job_id)
        except VersionMoved:
            raise _moved(row.id) from None
        try:
            await ctx.enqueue(RagService.UpdateDocument, req, msg_id=job_id)
        except BaseException:
            await self.store.fail_update(ctx.tenant, row.id, job_id, "the update was not queued")
            raise
        return UpdateDocumentResponse(
            document=document_message(marked), rechunked=True, job_id=job_id
        )

    async def _run_job(
        self,
        ctx: Context,
        req: UpdateDocumentRequest,
        row: DocumentRow,
        given: Given,
    ) -> UpdateDocumentResponse:
        """The job: progress on the row and as events, then the atomic swap; on a permanent
        failure (or the last attempt) the document keeps its version and says why."""
        job_id = ctx.message_id or ""
        if row.status != "processing" or row.job_id != job_id:
            # Done by an earlier delivery, or superseded: nothing to do.
            return UpdateDocumentResponse(document=document_message(row), rechunked=False)
        doc, _ = self._planned(req, row, given)
        try:
            embedded = await self.ingest.embed(ctx, doc, report=True, version=row.version + 1)
            reply = await self._replace(ctx, doc, row, embedded, job_id)
        except ServiceError as exc:
            if not exc.retryable or ctx.attempt >= self.ingest.max_attempts:
                await self._fail(ctx, row, exc.message)
            raise
        except Exception:
            if ctx.attempt >= self.ingest.max_attempts:
                await self._fail(ctx, row, "internal error")
            raise
        done = reply.document
        await self.ingest.progress(
            ctx, done.document_id, done.version, "ready", done.chunk_count, done.chunk_count
        )
        reply.job_id = job_id
        return reply

    async def abandon(self, ctx: Context, req: UpdateDocumentRequest) -> None:
        """The update job's last attempt never finished (its worker was stopped): the document
        keeps its current version and chunks, with the reason, instead of staying
        `processing` and refusing every later update. A document that job no longer owns is
        left alone (fail_update checks the job id)."""
        row = await self.store.get(ctx.tenant, req.document_id)
        if row is not None:
            await self._fail(
                ctx,
                row,
                "update stopped on its last attempt (its worker was stopped, or it ran out of"
                " time)",
            )

    async def _fail(self, ctx: Context, row: DocumentRow, reason: str) -> None:
        if await self.store.fail_update(ctx.tenant, row.id, ctx.message_id or "", reason):
            await self.ingest.progress(ctx, row.id, row.version, "failed", 0, 0, reason)

    def _stage(
        self, ctx: Context, doc: NewDocument, version: int, embedded: EmbeddedChunks | None
    ) -> Any:
        async def stage(conn: asyncpg.Connection) -> StagedEvent | None:
            if embedded is None:
                return None
            event = self.ingest.ingested_event(doc, version, embedded)
            return await self.ingest.outbox.stage(conn, ctx, RAG_DOCUMENT_INGESTED, event)

        return stage

    async def delete(self, ctx: Context, req: DeleteDocumentRequest) -> DeleteDocumentResponse:
        document_id = check.identifier(req.document_id, "document_id")

        async def stage(conn: asyncpg.Connection, version: int, chunks: int) -> tuple[int, Any]:
            event = DocumentDeletedEvent(
                document_id=document_id, version=version, chunks_deleted=chunks
            )
            return chunks, await self.ingest.outbox.stage(conn, ctx, RAG_DOCUMENT_DELETED, event)

        done = await self.store.delete(ctx.tenant, document_id, stage)
        if done is None:
            raise NotFound(f"no document {document_id}", details={"document_id": document_id})
        chunks, staged = done
        await self.ingest.outbox.publish(staged)
        return DeleteDocumentResponse(chunks_deleted=chunks)

    async def reembed(self, ctx: Context, req: ReembedRequest) -> ReembedResponse:
        """As a request: count and enqueue. As the job: re-embed every stale document."""
        embedder = self.ingest.embedder
        stale = await self.store.stale(ctx.tenant, embedder.model, embedder.dims, limit=10_000)
        if ctx.message_id is None:
            if not stale:
                return ReembedResponse(documents_stale=0)
            version = await self.store.corpus_version(ctx.tenant)
            job_id = f"rag-reembed:{ctx.tenant}:{embedder.model}:{embedder.dims}:{version}"
            await ctx.enqueue(RagService.Reembed, ReembedRequest(), msg_id=job_id)
            return ReembedResponse(documents_stale=len(stale), job_id=job_id)
        done = 0
        while stale:
            for document_id in stale:
                row = await self.store.get(ctx.tenant, document_id, content=True)
                if row is None or row.status == "processing":
                    continue
                # Another reembed job (a request queues one per corpus version) may have done it
                # since the list was read. Checked after reading the row: if that job commits
                # later, the replace below sees the version moved and skips it.
                if not await self.store.is_stale(
                    ctx.tenant, document_id, embedder.model, embedder.dims
                ):
                    continue
                doc = NewDocument(
                    id=row.id,
                    title=row.title,
                    source=row.source,
                    metadata=row.metadata,
                    content=row.content or "",
                    content_hash=row.content_hash,
                    chunk_size=row.chunk_size,
                    chunk_overlap=row.chunk_overlap,
                )
                embedded = await self.ingest.embed(ctx, doc)
                try:
                    _, staged = await self.store.replace(
                        ctx.tenant,
                        doc,
                        expected_version=row.version,
                        embedded=embedded,
                        stage=self._stage(ctx, doc, row.version + 1, embedded),
                    )
                except VersionMoved:
                    continue  # changed meanwhile: its new chunks use the current model
                if staged is not None:
                    await self.ingest.outbox.publish(staged)
                done += 1
            previous, stale = (
                stale,
                await self.store.stale(
                    ctx.tenant, embedder.model, embedder.dims, limit=REEMBED_BATCH
                ),
            )
            if stale == previous:  # what is left cannot be re-embedded now (processing)
                break
        return ReembedResponse(documents_stale=len(stale), documents_reembedded=done)
