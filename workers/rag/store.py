"""The RAG component's SQL (schema `rag`): every statement names its tenant.

Writes that change what a search returns bump the tenant's corpus version in their own
transaction (last, so the row lock on `corpora` is held briefly); every writer locks the
document's row first, then the statistics (chunk_rows.py). Creating a document is one statement
(its row, chunks, statistics and event). Replacing a document's chunks is one transaction:
delete the old rows, insert the new ones, update the document; readers see one version or the
other (MVCC), and the search statement reads both legs in one snapshot (see search_sql.py).
Events are written with the change (the kit's outbox), so they are published only for
committed changes.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import asyncpg

from workers.rag import chunk_rows
from workers.rag.filters import compile_filters
from workers.rag.records import DocumentRow, EmbeddedChunks, NewDocument
from workers.runtime.outbox import EventRows, StagedEvent, no_events

SCHEMA = "rag"
MIGRATIONS = Path(__file__).resolve().with_name("migrations")
T = TypeVar("T")
Stage = Callable[[asyncpg.Connection], Awaitable[T]]

_DOCUMENT_COLUMNS = """
    id, title, source, metadata, status, error, version, chunk_count, content_hash,
    length(content) AS content_chars, chunk_size, chunk_overlap, embedding_model,
    embedding_dims, chunks_embedded, chunks_total, job_id, created_at, updated_at
"""


# A ready document's row: the parameters of `_ready_values`.
_INSERT_READY = (
    "INSERT INTO rag.documents (tenant, id, title, source, metadata, content, content_hash,"  # noqa: S608
    " status, chunk_size, chunk_overlap, chunk_count, embedding_model, embedding_dims,"
    " chunks_embedded, chunks_total) VALUES ($1, $2, $3, $4, $5::jsonb, $6, $7, 'ready', $8, $9,"
    f" $10, $11, $12, $10, $10) RETURNING {_DOCUMENT_COLUMNS}"
)


def _ready_values(tenant: str, doc: NewDocument, embedded: EmbeddedChunks) -> list[Any]:
    return [
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
    ]


class DocumentExists(Exception):
    pass


class VersionMoved(Exception):
    """The document changed (or vanished) between reading and writing it."""


def _document(r: Mapping[str, Any], content: str | None = None) -> DocumentRow:
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
        self,
        tenant: str,
        doc: NewDocument,
        embedded: EmbeddedChunks,
        events: Callable[[int], EventRows] = no_events,
    ) -> tuple[DocumentRow, list[StagedEvent]]:
        """Insert a new document with its chunks, their statistics and the outbox rows of
        `events(first_parameter)` (its version is 1), in one statement: one round trip and
        no transaction around it. `DocumentExists` if the id is taken."""
        args = _ready_values(tenant, doc, embedded)
        chunks = chunk_rows.added(tenant, doc, 1, embedded, self.ts_config, first=len(args) + 1)
        args += chunks.args
        outbox = events(len(args) + 1)
        try:
            row = await self.pool.fetchrow(
                f"WITH document AS ({_INSERT_READY}), {chunks.sql}, staged AS ({outbox.sql})"  # noqa: S608 (our own fragments)
                f" SELECT document.*, {chunk_rows.ChunkRows.RESULT},"
                " ARRAY(SELECT id FROM staged) AS staged FROM document",
                *args,
                *outbox.args,
            )
        except asyncpg.UniqueViolationError as exc:
            if exc.constraint_name == "documents_pkey":
                raise DocumentExists(doc.id) from None
            raise
        values = dict(row)
        ids, _, _ = values.pop("staged"), values.pop("corpus_version"), values.pop("emptied")
        return _document(values), outbox.staged(ids)

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
            removed = chunk_rows.NOTHING
            if current is None:
                row = await self._insert_document(conn, tenant, doc, embedded)
                version = 1
            elif current["status"] == "ready" or current["content_hash"] != doc.content_hash:
                return None
            else:
                version = current["version"]
                removed = await chunk_rows.delete_chunks(conn, tenant, doc.id)
                row = await self._set_ready(conn, tenant, doc, version, embedded)
            await chunk_rows.insert_chunks(
                conn, tenant, doc, version, embedded, self.ts_config, removed=removed
            )
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
        job_id: str | None = None,
    ) -> tuple[DocumentRow, T]:
        """Update a ready document; with `embedded`, its chunks are replaced and its version
        incremented, all in one transaction. `VersionMoved` if it changed meanwhile, or if an
        update job other than `job_id` owns it (`processing`)."""
        async with self.pool.acquire() as conn, conn.transaction():
            if embedded is not None:
                # The document's row first (as every writer), then the statistics. A queued
                # update keeps the version until its job swaps its chunks in: without the
                # status check, a replace read before it was queued would silently drop it.
                found = await conn.fetchval(
                    "SELECT 1 FROM rag.documents WHERE tenant = $1 AND id = $2 AND version = $3"
                    " AND (status <> 'processing' OR job_id = $4) FOR UPDATE",
                    tenant,
                    doc.id,
                    expected_version,
                    job_id,
                )
                if found is None:
                    raise VersionMoved(doc.id)
                version = expected_version + 1
                removed = await chunk_rows.delete_chunks(conn, tenant, doc.id)
                await chunk_rows.insert_chunks(
                    conn, tenant, doc, version, embedded, self.ts_config, removed=removed
                )
                row = await self._set_ready(
                    conn, tenant, doc, version, embedded, expected=expected_version
                )
            else:
                row = await self._set_fields(conn, tenant, doc, expected_version)
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
            removed = await chunk_rows.delete_chunks(conn, tenant, document_id)
            await conn.execute(
                "DELETE FROM rag.documents WHERE tenant = $1 AND id = $2", tenant, document_id
            )
            await chunk_rows.change(conn, tenant, chunk_rows.NOTHING.minus(removed))
            return await stage(conn, int(version), removed.chunks)

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
        self, conn: asyncpg.Connection, tenant: str, doc: NewDocument, embedded: EmbeddedChunks
    ) -> DocumentRow:
        return _document(await conn.fetchrow(_INSERT_READY, *_ready_values(tenant, doc, embedded)))

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
            *_ready_values(tenant, doc, embedded),
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
        await chunk_rows.retitle(conn, tenant, doc, self.ts_config)
        return _document(row)
