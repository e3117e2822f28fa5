"""What the RAG store reads and writes: documents, the chunks of one ingestion, search hits."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from workers.rag.chunking import Chunk


@dataclass(frozen=True)
class DocumentRow:
    id: str
    title: str
    source: str
    metadata: dict[str, Any]
    status: str
    error: str
    version: int
    chunk_count: int
    content_hash: str
    content_chars: int
    chunk_size: int
    chunk_overlap: int
    embedding_model: str
    embedding_dims: int
    chunks_embedded: int
    chunks_total: int
    job_id: str
    created_at: dt.datetime
    updated_at: dt.datetime
    content: str | None = None


@dataclass(frozen=True)
class NewDocument:
    """What is written for a document, whatever its status."""

    id: str
    title: str
    source: str
    metadata: dict[str, Any]
    content: str
    content_hash: str
    chunk_size: int
    chunk_overlap: int


@dataclass(frozen=True)
class EmbeddedChunks:
    chunks: Sequence[Chunk]
    vectors: npt.NDArray[np.float32]  # a row per chunk
    model: str
    dims: int


@dataclass(frozen=True)
class Hit:
    """One row of the search statement."""

    id: int
    document_id: str
    ordinal: int
    text: str
    start: int
    end: int
    version: int
    source: str
    metadata: dict[str, Any]
    title: str
    vector_rank: int | None
    keyword_rank: int | None
    similarity: float | None
    embedding: list[float] | None
