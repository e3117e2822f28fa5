"""Stored rows as contract messages."""

from __future__ import annotations

from schemas.v1.rag_pb2 import Document, SearchResult
from workers.rag.pages import chunk_pages
from workers.rag.records import DocumentRow, Hit
from workers.runtime import validation as check


def document_message(row: DocumentRow) -> Document:
    out = Document(
        document_id=row.id,
        title=row.title,
        source=row.source,
        status=row.status,
        error=row.error,
        version=row.version,
        chunk_count=row.chunk_count,
        content_hash=row.content_hash,
        content_chars=row.content_chars,
        chunk_size=row.chunk_size,
        chunk_overlap=row.chunk_overlap,
        embedding_model=row.embedding_model,
        embedding_dimensions=row.embedding_dims,
        chunks_embedded=row.chunks_embedded,
        chunks_total=row.chunks_total,
        content=row.content or "",
    )
    out.metadata.CopyFrom(check.to_struct(row.metadata))
    out.created_at.FromDatetime(row.created_at)
    out.updated_at.FromDatetime(row.updated_at)
    return out


def result_message(hit: Hit, score: float) -> SearchResult:
    page_start, page_end = chunk_pages(hit.metadata, hit.start, hit.end)
    out = SearchResult(
        document_id=hit.document_id,
        title=hit.title,
        chunk_index=hit.ordinal,
        text=hit.text,
        score=score,
        similarity=hit.similarity if hit.similarity is not None else 0.0,
        source=hit.source,
        start=hit.start,
        end=hit.end,
        version=hit.version,
        vector_rank=hit.vector_rank or 0,
        keyword_rank=hit.keyword_rank or 0,
        page_start=page_start,
        page_end=page_end,
    )
    out.metadata.CopyFrom(check.to_struct(hit.metadata))
    return out
