"""Changing stored documents: update, delete, re-embed after a model change.

An update with new content (or new chunking, or `reprocess`) embeds the new chunks first, then
swaps them in with the document row in one transaction guarded by the version read at the
start: a concurrent update of the same document makes one of them a 409 (retryable), never a
mix. Title, source and metadata alone are changed in place (and copied to the chunks, which
the filters read) without embedding anything.
"""

from __future__ import annotations

from typing import Any

import asyncpg

from schemas.errors import Conflict, NotFound
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
        title = req.title if req.HasField("title") else None
        if title is not None:
            check.text(title, "title", required=True, max_chars=MAX_TEXT_FIELD, multiline=False)
        source = req.source if req.HasField("source") else None
        if source is not None:
            check.text(source, "source", max_chars=MAX_TEXT_FIELD, multiline=False)
        content = self.ingest.check_content(req.content) if req.HasField("content") else None
        metadata = self.ingest.check_metadata(req.metadata) if req.HasField("metadata") else None
        if req.HasField("chunk_size"):  # its range needs no stored row
            chunking(req.chunk_size, req.chunk_overlap if req.HasField("chunk_overlap") else None)
        row = await self._existing(ctx, req.document_id)
        if row.status == "processing":
            raise Conflict(
                f"document {row.id} is being ingested; update it when it is ready",
                details={"document_id": row.id, "status": row.status},
                retryable=True,
            )
        size, overlap = chunking(
            req.chunk_size if req.HasField("chunk_size") else row.chunk_size,
            req.chunk_overlap if req.HasField("chunk_overlap") else None,
        )
        if not req.HasField("chunk_overlap") and not req.HasField("chunk_size"):
            overlap = row.chunk_overlap
        new_content = content if content is not None else row.content or ""
        doc = NewDocument(
            id=row.id,
            title=title if title is not None else row.title,
            source=source if source is not None else row.source,
            metadata=metadata if metadata is not None else row.metadata,
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
        embedded = await self.ingest.embed(ctx, doc) if rechunk else None
        stage = self._stage(ctx, doc, row.version + 1, embedded)
        try:
            updated, staged = await self.store.replace(
                ctx.tenant, doc, expected_version=row.version, embedded=embedded, stage=stage
            )
        except VersionMoved:
            raise _moved(row.id) from None
        if staged is not None:
            await self.ingest.outbox.publish(staged)
        return UpdateDocumentResponse(document=document_message(updated), rechunked=rechunk)

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
