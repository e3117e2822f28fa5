"""The RAG component's SQL (schema `rag`): every statement names its tenant.

Writes that change what a search returns bump the tenant's corpus version in their own
transaction (last, so the row lock on `corpora` is held briefly). Replacing a document's chunks
is one transaction: delete the old rows, insert the new ones, update the document; readers
see one version or the other (MVCC), and the search statement reads both legs in one snapshot
(see search_sql.py). Events are staged by the caller's `stage` callback inside the same
transaction (the kit's outbox), so they are published only for committed changes.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import asyncpg

from workers.rag import chunk_rows
from workers.rag.filters import compile_filters
from workers.rag.records import DocumentRow, EmbeddedChunks, NewDocument

SCHEMA = "rag"
MIGRATIONS = Path(__file__).resolve().with_name("migrations")
T = TypeVar("T")
Stage = Callable[[asyncpg.Connection], Awaitable[T]]

_DOCUMENT_COLUMNS = """
    id, title, source, metadata, status, error, version, chunk_count, content_hash,
    length(content) AS content_chars, chunk_size, chunk_overlap, embedding_model,
    embedding_dims, chunks_embedded, chunks_total, job_id, created_at, updated_at
"""


class DocumentExists(Exception):
    pass


class VersionMoved(Exception):
    """The document changed (or vanished) between reading and writing it."""


def _document(r: asyncpg.Record, content: str | None = None) -> DocumentRow:
    values = dict(r)
    values["metadata"] = json.loads(values["metadata"])
    values.pop("content", None)
    return DocumentRow(**values, content=content)


class RagStore:
    def __init__(self, pool: asyncpg.Pool, *, ts_config: str = "english") -> None:
        self.pool = pool
        self.ts_config = ts_config

    # -- reads --------------------------------------------------------------------------------

    async def get(
        self, tenant: str, document_id: str, *, content: bool = False
    ) -> DocumentRow | None:
        extra = ", content" if content else ""
        row = await self.pool.fetchrow(
            f"SELECT {_DOCUMENT_COLUMNS}{extra} FROM rag.documents WHERE tenant = $1 AND id = $2",  # noqa: S608
            tenant,
            document_id,
        )
        if row is None:
            return None
        return _document(row, row["content"] if content else None)

    async def content(self, tenant: str, document_id: str) -> str | None:
        value: str | None = await self.pool.fetchval(
            "SELECT content FROM rag.documents WHERE tenant = $1 AND id = $2", tenant, document_id
        )
        return value

    async def corpus_version(self, tenant: str) -> int:
        value = await self.pool.fetchval(
            "SELECT version FROM rag.corpora WHERE tenant = $1", tenant
        )
        return int(value or 0)

    async def list_documents(
        self,
        tenant: str,
        *,
        source: str,
        status: str,
        filters: dict[str, Any],
        after: tuple[dt.datetime, str] | None,
        limit: int,
    ) -> list[DocumentRow]:
        """Newest first, keyset (created_at, id) strictly after `after`."""
        compiled = compile_filters(filters, column="metadata", first_param=7)
        rows = await self.pool.fetch(
            f"SELECT {_DOCUMENT_COLUMNS} FROM rag.documents"  # noqa: S608 (trusted fragments)
            " WHERE tenant = $1 AND ($2 = '' OR source = $2) AND ($3 = '' OR status = $3)"
            " AND ($4::timestamptz IS NULL OR (created_at, id) < ($4, $5))"
            f" AND ({compiled.sql}) ORDER BY created_at DESC, id DESC LIMIT $6",
            tenant,
            source,
            status,
            after[0] if after else None,
            after[1] if after else "",
            limit,
            *compiled.params,
        )
        return [_document(r) for r in rows]

    async def stale(self, tenant: str, model: str, dims: int, *, limit: int) -> list[str]:
        """Documents with a chunk embedded by another model or dimension."""
        rows = await self.pool.fetch(
            "SELECT DISTINCT document_id FROM rag.chunks WHERE tenant = $1"
            " AND (embedding_model <> $2 OR embedding_dims <> $3) ORDER BY document_id LIMIT $4",
            tenant,
            model,
            dims,
            limit,
        )
        return [r["document_id"] for r in rows]

    async def is_stale(self, tenant: str, document_id: str, model: str, dims: int) -> bool:
        """Whether the document still has a chunk of another model or dimension."""
        found = await self.pool.fetchval(
            "SELECT EXISTS (SELECT 1 FROM rag.chunks WHERE tenant = $1 AND document_id = $2"
            " AND (embedding_model <> $3 OR embedding_dims <> $4))",
            tenant,
            document_id,
            model,
            dims,
        )
        return bool(found)

    # -- writes -------------------------------------------------------------------------------

    async def create_ready(
        self, tenant: str, doc: NewDocument, embedded: EmbeddedChunks, stage: Stage[T]
    ) -> tuple[DocumentRow, T]:
        """Insert a new document with its chunks; `DocumentExists` if the id is taken."""
        async with self.pool.acquire() as conn, conn.transaction():
            try:
                row = await self._insert_document(conn, tenant, doc, "ready", embedded)
            except asyncpg.UniqueViolationError:
                raise DocumentExists(doc.id) from None
            await chunk_rows.insert_chunks(conn, tenant, doc, 1, embedded, self.ts_config)
            await chunk_rows.bump(conn, tenant)
            staged = await stage(conn)
        return row, staged

    async def create_processing(self, tenant: str, doc: NewDocument, job_id: str) -> bool:
        """Record a document a job will ingest; False if the id already exists."""
        async with self.pool.acquire() as conn:
            status = await conn.execute(
                "INSERT INTO rag.documents (tenant, id, title, source, metadata, content,"
                " content_hash, status, chunk_size, chunk_overlap, job_id)"
                " VALUES ($1, $2, $3, $4, $5::jsonb, $6, $7, 'processing', $8, $9, $10)"
                " ON CONFLICT (tenant, id) DO NOTHING",
                tenant,
                doc.id,
                doc.title,
                doc.source,
                json.dumps(doc.metadata),
                doc.content,
                doc.content_hash,
                doc.chunk_size,
                doc.chunk_overlap,
                job_id,
            )
        return bool(status == "INSERT 0 1")

    async def finish_processing(
        self, tenant: str, doc: NewDocument, embedded: EmbeddedChunks, stage: Stage[T]
    ) -> tuple[DocumentRow, T] | None:
        """A job's result: the processing (or failed) row of this content becomes ready with
        its chunks, or a missing row is created ready. None if the row holds other content or
        is already ready (another delivery finished it)."""
        async with self.pool.acquire() as conn, conn.transaction():
            current = await conn.fetchrow(
                "SELECT status, content_hash, version FROM rag.documents"
                " WHERE tenant = $1 AND id = $2 FOR UPDATE",
                tenant,
                doc.id,
            )
            if current is None:
                row = await self._insert_document(conn, tenant, doc, "ready", embedded)
                version = 1
            elif current["status"] == "ready" or current["content_hash"] != doc.content_hash:
                return None
            else:
                version = current["version"]
                await chunk_rows.delete_chunks(conn, tenant, doc.id)
                row = await self._set_ready(conn, tenant, doc, version, embedded)
            await chunk_rows.insert_chunks(conn, tenant, doc, version, embedded, self.ts_config)
            await chunk_rows.bump(conn, tenant)
            staged = await stage(conn)
        return row, staged

    async def replace(
        self,
        tenant: str,
        doc: NewDocument,
        *,
        expected_version: int,
        embedded: EmbeddedChunks | None,
        stage: Stage[T],
    ) -> tuple[DocumentRow, T]:
        """Update a ready document; with `embedded`, its chunks are replaced and its version
        incremented, all in one transaction. `VersionMoved` if it changed meanwhile."""
        async with self.pool.acquire() as conn, conn.transaction():
            version = expected_version + (1 if embedded is not None else 0)
            if embedded is not None:
                await chunk_rows.delete_chunks(conn, tenant, doc.id)
                await chunk_rows.insert_chunks(conn, tenant, doc, version, embedded, self.ts_config)
                row = await self._set_ready(
                    conn, tenant, doc, version, embedded, expected=expected_version
                )
            else:
                row = await self._set_fields(conn, tenant, doc, expected_version)
            await chunk_rows.bump(conn, tenant)
            staged = await stage(conn)
        return row, staged

    async def delete(
        self,
        tenant: str,
        document_id: str,
        stage: Callable[[asyncpg.Connection, int, int], Awaitable[T]],
    ) -> T | None:
        """Remove a document and its chunks; None if there was none."""
        async with self.pool.acquire() as conn, conn.transaction():
            version = await conn.fetchval(
                "SELECT version FROM rag.documents WHERE tenant = $1 AND id = $2 FOR UPDATE",
                tenant,
                document_id,
            )
            if version is None:
                return None
            chunks = await chunk_rows.delete_chunks(conn, tenant, document_id)
            await conn.execute(
                "DELETE FROM rag.documents WHERE tenant = $1 AND id = $2", tenant, document_id
            )
            await chunk_rows.bump(conn, tenant)
            return await stage(conn, int(version), int(chunks))

    async def set_progress(self, tenant: str, document_id: str, done: int, total: int) -> None:
        await self.pool.execute(
            "UPDATE rag.documents SET chunks_embedded = $3, chunks_total = $4,"
            " updated_at = clock_timestamp() WHERE tenant = $1 AND id = $2"
            " AND status = 'processing'",
            tenant,
            document_id,
            done,
            total,
        )

    async def mark_failed(
        self, tenant: str, document_id: str, content_hash: str, error: str
    ) -> bool:
        """A processing document of this content failed for good; False if it is not one."""
        status = await self.pool.execute(
            "UPDATE rag.documents SET status = 'failed', error = $4,"
            " updated_at = clock_timestamp() WHERE tenant = $1 AND id = $2"
            " AND content_hash = $3 AND status = 'processing'",
            tenant,
            document_id,
            content_hash,
            error[:1000],
        )
        return bool(status == "UPDATE 1")

    async def retry_failed(self, tenant: str, document_id: str, job_id: str) -> bool:
        """A failed document is processing again (its create was sent once more)."""
        status = await self.pool.execute(
            "UPDATE rag.documents SET status = 'processing', error = '', job_id = $3,"
            " updated_at = clock_timestamp() WHERE tenant = $1 AND id = $2 AND status = 'failed'",
            tenant,
            document_id,
            job_id,
        )
        return bool(status == "UPDATE 1")

    async def begin_update(
        self, tenant: str, document_id: str, expected_version: int, job_id: str
    ) -> DocumentRow:
        """A document whose new chunks a job makes: `processing` (other updates are refused)
        until the job swaps them in; its current chunks stay searchable meanwhile.
        `VersionMoved` if it changed since `expected_version` was read."""
        row = await self.pool.fetchrow(
            "UPDATE rag.documents SET status = 'processing', error = '', job_id = $4,"  # noqa: S608
            " chunks_embedded = 0, chunks_total = 0, updated_at = clock_timestamp()"
            " WHERE tenant = $1 AND id = $2 AND version = $3 AND status <> 'processing'"
            f" RETURNING {_DOCUMENT_COLUMNS}",
            tenant,
            document_id,
            expected_version,
            job_id,
        )
        if row is None:
            raise VersionMoved(document_id)
        return _document(row, None)

    async def fail_update(self, tenant: str, document_id: str, job_id: str, error: str) -> bool:
        """The update job `job_id` failed for good: the document keeps its version and chunks
        (ready again, or failed if it never had any) and `error` says why."""
        status = await self.pool.execute(
            "UPDATE rag.documents SET status = CASE WHEN chunk_count > 0 THEN 'ready'"
            " ELSE 'failed' END, error = $4, chunks_embedded = chunk_count,"
            " chunks_total = chunk_count, updated_at = clock_timestamp()"
            " WHERE tenant = $1 AND id = $2 AND job_id = $3 AND status = 'processing'",
            tenant,
            document_id,
            job_id,
            error[:1000],
        )
        return bool(status == "UPDATE 1")

    # -- row writers ------------------------------------------------------------------------

    async def _insert_document(
        self,
        conn: asyncpg.Connection,
        tenant: str,
        doc: NewDocument,
        status: str,
        embedded: EmbeddedChunks,
    ) -> DocumentRow:
        row = await conn.fetchrow(
            "INSERT INTO rag.documents (tenant, id, title, source, metadata, content,"  # noqa: S608
            " content_hash, status, chunk_size, chunk_overlap, chunk_count, embedding_model,"
            " embedding_dims, chunks_embedded, chunks_total)"
            " VALUES ($1, $2, $3, $4, $5::jsonb, $6, $7, $8, $9, $10, $11, $12, $13, $11, $11)"
            f" RETURNING {_DOCUMENT_COLUMNS}",
            tenant,
            doc.id,
            doc.title,
            doc.source,
            json.dumps(doc.metadata),
            doc.content,
            doc.content_hash,
            status,
            doc.chunk_size,
            doc.chunk_overlap,
            len(embedded.chunks),
            embedded.model,
            embedded.dims,
        )
        return _document(row)

    async def _set_ready(
        self,
        conn: asyncpg.Connection,
        tenant: str,
        doc: NewDocument,
        version: int,
        embedded: EmbeddedChunks,
        *,
        expected: int | None = None,
    ) -> DocumentRow:
        row = await conn.fetchrow(
            "UPDATE rag.documents SET title = $3, source = $4, metadata = $5::jsonb,"  # noqa: S608
            " content = $6, content_hash = $7, status = 'ready', error = '', chunk_size = $8,"
            " chunk_overlap = $9, chunk_count = $10, chunks_embedded = $10, chunks_total = $10,"
            " embedding_model = $11, embedding_dims = $12, version = $13,"
            " updated_at = clock_timestamp()"
            " WHERE tenant = $1 AND id = $2 AND ($14::int IS NULL OR version = $14)"
            f" RETURNING {_DOCUMENT_COLUMNS}",
            tenant,
            doc.id,
            doc.title,
            doc.source,
            json.dumps(doc.metadata),
            doc.content,
            doc.content_hash,
            doc.chunk_size,
            doc.chunk_overlap,
            len(embedded.chunks),
            embedded.model,
            embedded.dims,
            version,
            expected,
        )
        if row is None:
            raise VersionMoved(doc.id)
        return _document(row)

    async def _set_fields(
        self, conn: asyncpg.Connection, tenant: str, doc: NewDocument, expected: int
    ) -> DocumentRow:
        """Title, source and metadata (copied to the chunks, which filters read)."""
        row = await conn.fetchrow(
            "UPDATE rag.documents SET title = $3, source = $4, metadata = $5::jsonb,"  # noqa: S608
            " updated_at = clock_timestamp() WHERE tenant = $1 AND id = $2 AND version = $6"
            f" AND status = 'ready' RETURNING {_DOCUMENT_COLUMNS}",
            tenant,
            doc.id,
            doc.title,
            doc.source,
            json.dumps(doc.metadata),
            expected,
        )
        if row is None:
            raise VersionMoved(doc.id)
        await chunk_rows.count_lexemes(conn, tenant, doc.id, -1)
        await conn.execute(
            "UPDATE rag.chunks SET source = $3, metadata = $4::jsonb,"
            " tsv = setweight(to_tsvector($5::regconfig, $6), 'A')"
            " || setweight(to_tsvector($5::regconfig, text), 'B')"
            " WHERE tenant = $1 AND document_id = $2",
            tenant,
            doc.id,
            doc.source,
            json.dumps(doc.metadata),
            self.ts_config,
            doc.title,
        )
        await chunk_rows.count_lexemes(conn, tenant, doc.id, 1)
        return _document(row)
