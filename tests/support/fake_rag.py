"""A stand-in RAG component for ingestion tests while the real one is not in the fleet.

It serves `rag.create_document`, `get_document`, `update_document` and `delete_document` over
the real runtime (so the ingestion worker's typed calls cross real NATS), keeps documents in
memory, and counts what it was asked. A document whose content is longer than
`PROCESSING_CHARS` is `processing` until it was read twice, as a large document ingested by a
RAG job would be. The other rpcs answer 503.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from schemas.errors import Conflict, NotFound, Unavailable
from schemas.v1 import rag_pb2
from schemas.v1.rag_pb2 import (
    CreateDocumentRequest,
    CreateDocumentResponse,
    DeleteDocumentRequest,
    DeleteDocumentResponse,
    Document,
    GetDocumentRequest,
    GetDocumentResponse,
    UpdateDocumentRequest,
    UpdateDocumentResponse,
)
from workers.runtime.component import Component
from workers.runtime.context import Context
from workers.runtime.resources import Resources

PROCESSING_CHARS = 50_000


@dataclass
class FakeRagState:
    documents: dict[tuple[str, str], Document] = field(default_factory=dict)
    reads: Counter[tuple[str, str]] = field(default_factory=Counter)
    calls: Counter[str] = field(default_factory=Counter)
    created: Counter[tuple[str, str]] = field(default_factory=Counter)


STATE = FakeRagState()


class FakeRag:
    def __init__(self, state: FakeRagState) -> None:
        self.state = state

    async def create_document(
        self, ctx: Context, req: CreateDocumentRequest
    ) -> CreateDocumentResponse:
        self.state.calls["create_document"] += 1
        key = (ctx.tenant, req.document_id)
        digest = hashlib.sha256(req.content.encode()).hexdigest()
        existing = self.state.documents.get(key)
        if existing is not None:
            if existing.content_hash != digest:
                raise Conflict("the document exists with other content")
            return CreateDocumentResponse(document=existing, created=False)
        document = Document(
            document_id=req.document_id,
            title=req.title,
            source=req.source,
            metadata=req.metadata,
            status="processing" if len(req.content) > PROCESSING_CHARS else "ready",
            version=1,
            content_hash=digest,
            content_chars=len(req.content),
            content=req.content,
            chunks_total=10,
        )
        self.state.documents[key] = document
        self.state.created[key] += 1
        return CreateDocumentResponse(document=document, created=True)

    async def get_document(self, ctx: Context, req: GetDocumentRequest) -> GetDocumentResponse:
        self.state.calls["get_document"] += 1
        key = (ctx.tenant, req.document_id)
        document = self.state.documents.get(key)
        if document is None:
            raise NotFound("no such document")
        self.state.reads[key] += 1
        if document.status == "processing":
            document.chunks_embedded = min(10, 5 * self.state.reads[key])
            if self.state.reads[key] >= 2:
                document.status = "ready"
        return GetDocumentResponse(document=document)

    async def update_document(
        self, ctx: Context, req: UpdateDocumentRequest
    ) -> UpdateDocumentResponse:
        self.state.calls["update_document"] += 1
        document = self.state.documents.get((ctx.tenant, req.document_id))
        if document is None:
            raise NotFound("no such document")
        document.content = req.content
        document.content_hash = hashlib.sha256(req.content.encode()).hexdigest()
        document.version += 1
        return UpdateDocumentResponse(document=document)

    async def delete_document(
        self, ctx: Context, req: DeleteDocumentRequest
    ) -> DeleteDocumentResponse:
        self.state.calls["delete_document"] += 1
        if self.state.documents.pop((ctx.tenant, req.document_id), None) is None:
            raise NotFound("no such document")
        return DeleteDocumentResponse(chunks_deleted=1)

    async def query_stream(self, ctx: Context, req: Any) -> AsyncIterator[Any]:
        raise Unavailable("the test's RAG stand-in does not serve query_stream")
        yield  # type: ignore[unreachable]  # an async generator, as the streaming rpc needs

    def __getattr__(self, name: str) -> Any:
        async def unavailable(ctx: Context, req: Any) -> Any:
            raise Unavailable(f"the test's RAG stand-in does not serve {name}")

        return unavailable


@asynccontextmanager
async def start(resources: Resources) -> AsyncIterator[FakeRag]:
    yield FakeRag(STATE)


component = Component(
    rag_pb2.DESCRIPTOR.services_by_name["RagService"],
    start=start,
    description="RAG stand-in for ingestion tests",
)
