"""Test helpers for the RAG component: what its tables hold, documents and vectors to store."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import numpy as np
import pytest
from google.protobuf import json_format
from nats.aio.client import Client as NATS

from schemas.v1.rag_pb2 import CreateDocumentRequest, Document, GetDocumentRequest
from schemas.v1.rag_rpc import RagService
from subjects.events import event_name
from tests.support.database import ComponentDb
from tests.support.events import stored_events
from tests.support.fleet import running_worker
from tests.support.polling import eventually
from workers.cache import service as cache
from workers.gateway import service as gateway
from workers.rag import service as rag
from workers.rag.chunking import Chunk
from workers.rag.records import EmbeddedChunks, NewDocument
from workers.rag.store import MIGRATIONS, SCHEMA
from workers.runtime.client import Client
from workers.runtime.worker import Worker

DIMS = 384


class RagDb(ComponentDb):
    """Direct reads of the rag schema, as a test checks what the worker really wrote."""

    schema = SCHEMA
    migrations = MIGRATIONS
    tables = ("documents", "chunks", "corpora", "lexemes")

    async def chunk_rows(self, tenant: str, document_id: str) -> list[dict[str, Any]]:
        rows = await self.pool.fetch(
            "SELECT ordinal, version, text, start_char, end_char, embedding_model,"
            " embedding_dims FROM rag.chunks WHERE tenant = $1 AND document_id = $2"
            " ORDER BY ordinal",
            tenant,
            document_id,
        )
        return [dict(r) for r in rows]


def unit(seed: str, dims: int = DIMS) -> list[float]:
    """A deterministic random unit vector."""
    rng = np.random.default_rng(int.from_bytes(hashlib.sha256(seed.encode()).digest()[:8]))
    v = rng.standard_normal(dims).astype(np.float32)
    return [float(x) for x in v / np.linalg.norm(v)]


def near(vector: Sequence[float], seed: str, noise: float) -> list[float]:
    """`vector` moved a little (cosine ~1 - noise²/2), still unit length."""
    v = np.asarray(vector, dtype=np.float32) + noise * np.asarray(unit(seed, len(vector)))
    return [float(x) for x in v / np.linalg.norm(v)]


def document(doc_id: str, texts: Sequence[str], **fields: Any) -> NewDocument:
    content = "\n\n".join(texts)
    return NewDocument(
        id=doc_id,
        title=fields.get("title", f"title of {doc_id}"),
        source=fields.get("source", ""),
        metadata=fields.get("metadata", {}),
        content=content,
        content_hash=hashlib.sha256(content.encode()).hexdigest(),
        chunk_size=1000,
        chunk_overlap=0,
    )


def embedded(
    doc: NewDocument, vectors: Sequence[Sequence[float]], model: str = "m"
) -> EmbeddedChunks:
    """One chunk per paragraph of the document, with the given vectors."""
    chunks: list[Chunk] = []
    start = 0
    for i, text in enumerate(doc.content.split("\n\n")):
        chunks.append(Chunk(i, text, start, start + len(text), len(text.split())))
        start += len(text) + 2
    assert len(chunks) == len(vectors)
    return EmbeddedChunks(chunks, np.asarray(vectors, dtype=np.float32), model, len(vectors[0]))


async def events(nc: NATS, tenant: str, event: str) -> list[bytes]:
    """Bodies of every `evt.rag.<event>` of the tenant in AI_EVENTS, oldest first."""
    return [m.data for m in await stored_events(nc, tenant, event_name("rag", event))]


@asynccontextmanager
async def running_rag(
    nats_url: str, redis_url: str, database_url: str, **overrides: Any
) -> AsyncIterator[Worker]:
    """RAG with the gateway (offline: local MiniLM embeddings, the offline text model) and the
    cache component (its results cache) in one worker: three components talking over NATS."""
    async with running_worker(
        [rag.component, gateway.component, cache.component],
        nats_url,
        redis_url=redis_url,
        database_url=database_url,
        **overrides,
    ) as worker:
        yield worker


def configure(monkeypatch: pytest.MonkeyPatch, **settings: Any) -> None:
    """Set AIFLEET_RAG_* for the next RAG component started in this process."""
    for name, value in settings.items():
        monkeypatch.setenv(f"AIFLEET_RAG_{name.upper()}", str(value))


def create(doc_id: str, content: str, **fields: Any) -> CreateDocumentRequest:
    return json_format.ParseDict(
        {"document_id": doc_id, "title": fields.pop("title", doc_id), "content": content, **fields},
        CreateDocumentRequest(),
    )


CORPUS = {
    "nats": (
        "# NATS\n\nNATS is a messaging system. Subjects address messages, and a request gets a"
        " reply from one member of a queue group.\n\nJetStream adds persistence: streams store"
        " messages on disk and consumers acknowledge each one explicitly."
    ),
    "postgres": (
        "# PostgreSQL\n\nPostgreSQL is a relational database. MVCC gives every transaction a"
        " snapshot, so readers never block writers.\n\npgvector adds vector similarity search"
        " with HNSW and IVFFlat indexes."
    ),
    "valkey": (
        "# Valkey\n\nValkey is an in-memory key-value store speaking the Redis protocol. Keys can"
        " expire after a time to live, and Lua scripts run atomically."
    ),
}


async def settled(client: Client, tenant: str, document_id: str) -> Document:
    """The document once its job is over (no longer processing)."""

    async def probe() -> Document | None:
        got = await client.call_rpc(
            tenant, RagService.GetDocument, GetDocumentRequest(document_id=document_id)
        )
        return got.document if got.document.status != "processing" else None

    found = await eventually(probe, timeout=60, what=f"the job of {document_id} to end")
    assert found is not None
    return found
