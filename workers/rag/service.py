"""RAG handlers: thin, each delegating to the module that owns the work.

- ingest.py: create_document (synchronous, or the `job.rag.create_document` job)
- changes.py: update (large content: the `job.rag.update_document` job), delete, reembed
  (the `job.rag.reembed` job)
- retrieval.py: search; answering.py: query and query_stream
- store.py / search_sql.py: the SQL
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from schemas.errors import NotFound
from schemas.v1 import rag_pb2
from schemas.v1.rag_pb2 import (
    CreateDocumentRequest,
    CreateDocumentResponse,
    DeleteDocumentRequest,
    DeleteDocumentResponse,
    GetDocumentRequest,
    GetDocumentResponse,
    ListDocumentsRequest,
    ListDocumentsResponse,
    QueryChunk,
    QueryRequest,
    QueryResponse,
    ReembedRequest,
    ReembedResponse,
    SearchRequest,
    SearchResponse,
    UpdateDocumentRequest,
    UpdateDocumentResponse,
)
from workers.rag.answering import Answerer
from workers.rag.changes import DocumentChanges
from workers.rag.chunking import Chunker, load_tokenizer
from workers.rag.documents import document_message
from workers.rag.embedder import Embedder
from workers.rag.filters import compile_filters
from workers.rag.ingest import Ingestor
from workers.rag.results_cache import ResultsCache
from workers.rag.retrieval import Retriever
from workers.rag.search_sql import VectorSql, ensure_vector_index
from workers.rag.settings import RagSettings
from workers.rag.store import MIGRATIONS, SCHEMA, RagStore
from workers.runtime import paging
from workers.runtime import validation as check
from workers.runtime.component import Component
from workers.runtime.config import ConfigurationError, load_settings
from workers.runtime.context import Context
from workers.runtime.logs import get_logger
from workers.runtime.postgres import migrate
from workers.runtime.resources import Resources

STATUSES = ("processing", "ready", "failed")
log = get_logger(component="rag")


class RagService:
    def __init__(
        self,
        store: RagStore,
        ingest: Ingestor,
        changes: DocumentChanges,
        retriever: Retriever,
        answerer: Answerer,
    ) -> None:
        self.store = store
        self.ingest = ingest
        self.changes = changes
        self.retriever = retriever
        self.answerer = answerer

    async def create_document(
        self, ctx: Context, req: CreateDocumentRequest
    ) -> CreateDocumentResponse:
        return await self.ingest.create(ctx, req)

    async def create_document_abandoned(self, ctx: Context, req: CreateDocumentRequest) -> None:
        await self.ingest.abandon(ctx, req)

    async def get_document(self, ctx: Context, req: GetDocumentRequest) -> GetDocumentResponse:
        document_id = check.identifier(req.document_id, "document_id")
        row = await self.store.get(ctx.tenant, document_id, content=req.include_content)
        if row is None:
            raise NotFound(f"no document {document_id}", details={"document_id": document_id})
        return GetDocumentResponse(document=document_message(row))

    async def update_document(
        self, ctx: Context, req: UpdateDocumentRequest
    ) -> UpdateDocumentResponse:
        return await self.changes.update(ctx, req)

    async def update_document_abandoned(self, ctx: Context, req: UpdateDocumentRequest) -> None:
        await self.changes.abandon(ctx, req)

    async def delete_document(
        self, ctx: Context, req: DeleteDocumentRequest
    ) -> DeleteDocumentResponse:
        return await self.changes.delete(ctx, req)

    async def list_documents(
        self, ctx: Context, req: ListDocumentsRequest
    ) -> ListDocumentsResponse:
        source = check.text(req.source, "source", max_chars=1024, multiline=False)
        status = check.choice(req.status, "status", STATUSES) if req.status else ""
        filters = check.struct(req.metadata_filters, "metadata_filters", max_bytes=16 * 1024)
        compile_filters(filters, column="metadata", first_param=1)  # a bad filter is a 400 now
        page = paging.start(
            ctx.tenant,
            req.page,
            query={
                "source": source,
                "status": status,
                "filters": json.dumps(filters, sort_keys=True),
            },
        )
        after = page.after
        rows = await self.store.list_documents(
            ctx.tenant,
            source=source,
            status=status,
            filters=filters,
            after=(after[0], after[1]) if after else None,
            limit=page.size + 1,
        )
        kept, page_response = paging.finish(
            ctx.tenant, page, rows, position=lambda r: (r.created_at, r.id)
        )
        return ListDocumentsResponse(
            documents=[document_message(r) for r in kept], page=page_response
        )

    async def search(self, ctx: Context, req: SearchRequest) -> SearchResponse:
        return await self.retriever.search(ctx, req)

    async def query(self, ctx: Context, req: QueryRequest) -> QueryResponse:
        return await self.answerer.query(ctx, req)

    async def query_stream(self, ctx: Context, req: QueryRequest) -> AsyncIterator[QueryChunk]:
        async for chunk in self.answerer.query_stream(ctx, req):
            yield chunk

    async def reembed(self, ctx: Context, req: ReembedRequest) -> ReembedResponse:
        return await self.changes.reembed(ctx, req)


@asynccontextmanager
async def start(resources: Resources) -> AsyncIterator[RagService]:
    settings = load_settings(RagSettings)
    pool = await resources.postgres()
    await migrate(pool, SCHEMA, MIGRATIONS)
    config = await pool.fetchval(
        "SELECT count(*) FROM pg_ts_config WHERE cfgname = $1", settings.text_search_config
    )
    if not config:
        raise ConfigurationError(
            f"AIFLEET_RAG_TEXT_SEARCH_CONFIG: PostgreSQL has no text search configuration"
            f" {settings.text_search_config!r}"
        )
    if not await ensure_vector_index(pool, VectorSql(settings.embedding_dimensions)):
        log.warning(
            "no pgvector index for this many dimensions: vector search is exact",
            dimensions=settings.embedding_dimensions,
        )
    tokenizer = await asyncio.to_thread(load_tokenizer, settings.tokenizer)
    chunker = Chunker(tokenizer, max_tokens=settings.chunk_max_tokens)
    store = RagStore(pool, ts_config=settings.text_search_config)
    embedder = Embedder(
        settings.embedding_model, settings.embedding_dimensions, settings.embed_batch
    )
    outbox = await resources.outbox()
    ingest = Ingestor(
        store, chunker, embedder, outbox, settings, max_attempts=resources.settings.job_max_deliver
    )
    retriever = Retriever(pool, settings, embedder, ResultsCache(settings.cache_ttl_seconds))
    yield RagService(store, ingest, DocumentChanges(ingest), retriever, Answerer(retriever))


component = Component(
    rag_pb2.DESCRIPTOR.services_by_name["RagService"],
    start=start,
    jobs=frozenset({"create_document", "update_document", "reembed"}),
    description="Documents in, grounded answers with citations out: hybrid retrieval in PostgreSQL",
)
