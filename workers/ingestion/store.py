"""The ingestion component's SQL (schema `ingestion`): every statement names its tenant.

A file row is created once per (tenant, sha256): a second upload of the same bytes finds the
first (`insert_file` returns it with `created=False`). Processing is a sequence of runs; a run
is started by `start_run` (which names it) and every later write of the run (progress, finish,
fail) is conditional on that run still being the file's current one and still processing, so a
redelivered or superseded job cannot overwrite a newer outcome, and a finished run is finished
once. The only statement reading across tenants is `expired_uploads`, for the sweeper that
removes abandoned upload sessions of every tenant.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, TypeAlias

import asyncpg

SCHEMA = "ingestion"
STATUSES = ("uploaded", "processing", "ingested", "failed")
Connection: TypeAlias = Any  # an asyncpg Connection (in a transaction) or the Pool


@dataclass(frozen=True)
class NewFile:
    object_name: str
    file_name: str
    title: str
    declared_content_type: str
    detected_type: str
    size_bytes: int
    sha256: str
    metadata: dict[str, Any]
    auto_ingest: bool
    options: dict[str, Any]


@dataclass(frozen=True)
class FileRecord:
    file_id: str
    object_name: str
    file_name: str
    title: str
    declared_content_type: str
    detected_type: str
    size_bytes: int
    sha256: str
    status: str
    run_id: str
    progress: float
    pages_done: int
    pages_total: int
    characters: int
    sections: int
    document_id: str
    failure: dict[str, Any] | None
    metadata: dict[str, Any]
    auto_ingest: bool
    options: dict[str, Any]
    created_at: dt.datetime
    updated_at: dt.datetime
    processed_at: dt.datetime | None


@dataclass(frozen=True)
class Outcome:
    """What a successful run found."""

    pages_done: int
    pages_total: int
    characters: int
    sections: int
    document_id: str


@dataclass(frozen=True)
class Upload:
    upload_id: str
    file_name: str
    content_type: str
    expires_at: dt.datetime
    parts: list[int] = field(default_factory=list)  # sizes, by index
    size_bytes: int = 0


class PartOutOfOrder(Exception):
    """A part index beyond the next one."""


class TooLarge(Exception):
    """The parts would add up to more than the file size limit."""


_COLUMNS = (
    "file_id::text AS file_id, object_name, file_name, title, declared_content_type, "
    "detected_type, size_bytes, sha256, status, run_id, progress, pages_done, pages_total, "
    "characters, sections, document_id, failure, metadata, auto_ingest, options, created_at, "
    "updated_at, processed_at"
)


def _record(row: asyncpg.Record) -> FileRecord:
    values = dict(row)
    for key in ("failure", "metadata", "options"):
        if isinstance(values[key], str):
            values[key] = json.loads(values[key])
    return FileRecord(**values)


class IngestionStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        # `holding_run` keeps a connection for the length of a call to another component: at
        # most half the pool does, so the component's other requests always find one.
        self._held = asyncio.Semaphore(max(1, pool.get_max_size() // 2))

    # -- files ------------------------------------------------------------------------------

    async def insert_file(self, tenant: str, new: NewFile) -> tuple[FileRecord, bool]:
        """The new file, or the tenant's existing file with the same bytes (created=False)."""
        row = await self.pool.fetchrow(
            "INSERT INTO ingestion.files (tenant, file_id, object_name, file_name, title,"  # noqa: S608
            " declared_content_type, detected_type, size_bytes, sha256, status, metadata,"
            " auto_ingest, options)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'uploaded', $10::jsonb, $11, $12::jsonb)"
            f" ON CONFLICT (tenant, sha256) DO NOTHING RETURNING {_COLUMNS}",
            tenant,
            uuid.uuid4(),
            new.object_name,
            new.file_name,
            new.title,
            new.declared_content_type,
            new.detected_type,
            new.size_bytes,
            new.sha256,
            json.dumps(new.metadata),
            new.auto_ingest,
            json.dumps(new.options),
        )
        if row is not None:
            return _record(row), True
        existing = await self.pool.fetchrow(
            f"SELECT {_COLUMNS} FROM ingestion.files WHERE tenant = $1 AND sha256 = $2",  # noqa: S608
            tenant,
            new.sha256,
        )
        if existing is None:  # the conflicting file was deleted after the insert met it
            return await self.insert_file(tenant, new)
        return _record(existing), False

    async def get_by_sha(self, tenant: str, sha256: str) -> FileRecord | None:
        row = await self.pool.fetchrow(
            f"SELECT {_COLUMNS} FROM ingestion.files WHERE tenant = $1 AND sha256 = $2",  # noqa: S608
            tenant,
            sha256,
        )
        return _record(row) if row else None

    async def object_in_use(self, tenant: str, object_name: str) -> bool:
        return bool(
            await self.pool.fetchval(
                "SELECT EXISTS (SELECT 1 FROM ingestion.files"
                " WHERE tenant = $1 AND object_name = $2)",
                tenant,
                object_name,
            )
        )

    async def get(self, tenant: str, file_id: str) -> FileRecord | None:
        row = await self.pool.fetchrow(
            f"SELECT {_COLUMNS} FROM ingestion.files WHERE tenant = $1 AND file_id = $2",  # noqa: S608
            tenant,
            uuid.UUID(file_id),
        )
        return _record(row) if row else None

    async def list_files(
        self, tenant: str, *, status: str, after: tuple[Any, ...] | None, limit: int
    ) -> list[FileRecord]:
        """Newest first, keyset after (created_at, file_id); `status` "" means any."""
        created, file_id = (after[0], uuid.UUID(after[1])) if after else (None, None)
        rows = await self.pool.fetch(
            f"SELECT {_COLUMNS} FROM ingestion.files"  # noqa: S608
            " WHERE tenant = $1 AND ($2 = '' OR status = $2)"
            " AND ($3::timestamptz IS NULL OR (created_at, file_id) < ($3, $4::uuid))"
            " ORDER BY created_at DESC, file_id DESC LIMIT $5",
            tenant,
            status,
            created,
            file_id,
            limit,
        )
        return [_record(r) for r in rows]

    async def delete(self, tenant: str, file_id: str) -> FileRecord | None:
        row = await self.pool.fetchrow(
            f"DELETE FROM ingestion.files WHERE tenant = $1 AND file_id = $2 RETURNING {_COLUMNS}",  # noqa: S608
            tenant,
            uuid.UUID(file_id),
        )
        return _record(row) if row else None

    # -- processing runs --------------------------------------------------------------------

    async def start_run(
        self,
        tenant: str,
        file_id: str,
        run_id: str,
        *,
        auto_ingest: bool | None = None,
        options: dict[str, Any] | None = None,
    ) -> FileRecord | None:
        """Make `run_id` the file's current run (status processing, progress reset)."""
        row = await self.pool.fetchrow(
            "UPDATE ingestion.files SET status = 'processing', run_id = $3, progress = 0,"  # noqa: S608
            " pages_done = 0, pages_total = 0, failure = NULL,"
            " auto_ingest = COALESCE($4, auto_ingest), options = COALESCE($5::jsonb, options),"
            " updated_at = clock_timestamp()"
            f" WHERE tenant = $1 AND file_id = $2 RETURNING {_COLUMNS}",
            tenant,
            uuid.UUID(file_id),
            run_id,
            auto_ingest,
            None if options is None else json.dumps(options),
        )
        return _record(row) if row else None

    @asynccontextmanager
    async def holding_run(self, tenant: str, file_id: str, run_id: str) -> AsyncIterator[bool]:
        """Whether `run_id` is still the file's current processing run, the file's row locked
        for the block: no newer run starts, and no delete lands, until it ends. Runs beyond
        half the pool wait their turn here (they would wait for RAG's embedding anyway)."""
        async with self._held, self.pool.acquire() as conn, conn.transaction():
            found = await conn.fetchval(
                "SELECT 1 FROM ingestion.files WHERE tenant = $1 AND file_id = $2"
                " AND run_id = $3 AND status = 'processing' FOR UPDATE",
                tenant,
                uuid.UUID(file_id),
                run_id,
            )
            yield found is not None

    async def report_progress(
        self, tenant: str, file_id: str, run_id: str, *, done: int, total: int, progress: float
    ) -> bool:
        """Record progress of the current run; False when the run is no longer current."""
        status: str = await self.pool.execute(
            "UPDATE ingestion.files SET pages_done = $4, pages_total = $5, progress = $6,"
            " updated_at = clock_timestamp()"
            " WHERE tenant = $1 AND file_id = $2 AND run_id = $3 AND status = 'processing'",
            tenant,
            uuid.UUID(file_id),
            run_id,
            done,
            total,
            progress,
        )
        return status.endswith(" 1")

    async def finish_run(
        self, conn: Connection, tenant: str, file_id: str, run_id: str, outcome: Outcome
    ) -> FileRecord | None:
        """Mark the run ingested; None when it was not the current processing run (then
        nothing changes: a repeat or a superseded job)."""
        row = await conn.fetchrow(
            "UPDATE ingestion.files SET status = 'ingested', progress = 1, pages_done = $4,"  # noqa: S608
            " pages_total = $5, characters = $6, sections = $7, document_id = $8,"
            " failure = NULL, processed_at = clock_timestamp(), updated_at = clock_timestamp()"
            " WHERE tenant = $1 AND file_id = $2 AND run_id = $3 AND status = 'processing'"
            f" RETURNING {_COLUMNS}",
            tenant,
            uuid.UUID(file_id),
            run_id,
            outcome.pages_done,
            outcome.pages_total,
            outcome.characters,
            outcome.sections,
            outcome.document_id,
        )
        return _record(row) if row else None

    async def fail_run(
        self, conn: Connection, tenant: str, file_id: str, run_id: str, failure: dict[str, Any]
    ) -> FileRecord | None:
        """Mark the run failed with its reason; None when it was not the current run."""
        row = await conn.fetchrow(
            "UPDATE ingestion.files SET status = 'failed', failure = $4::jsonb,"  # noqa: S608
            " processed_at = clock_timestamp(), updated_at = clock_timestamp()"
            " WHERE tenant = $1 AND file_id = $2 AND run_id = $3 AND status = 'processing'"
            f" RETURNING {_COLUMNS}",
            tenant,
            uuid.UUID(file_id),
            run_id,
            json.dumps(failure),
        )
        return _record(row) if row else None

    # -- chunked uploads --------------------------------------------------------------------

    async def start_upload(
        self, tenant: str, file_name: str, content_type: str, expires_at: dt.datetime
    ) -> Upload:
        upload_id = uuid.uuid4()
        await self.pool.execute(
            "INSERT INTO ingestion.uploads (tenant, upload_id, file_name, content_type, expires_at)"
            " VALUES ($1, $2, $3, $4, $5)",
            tenant,
            upload_id,
            file_name,
            content_type,
            expires_at,
        )
        return Upload(str(upload_id), file_name, content_type, expires_at)

    async def get_upload(self, tenant: str, upload_id: str) -> Upload | None:
        row = await self.pool.fetchrow(
            "SELECT upload_id::text AS upload_id, file_name, content_type, expires_at"
            " FROM ingestion.uploads WHERE tenant = $1 AND upload_id = $2"
            " AND expires_at > clock_timestamp()",
            tenant,
            uuid.UUID(upload_id),
        )
        if row is None:
            return None
        parts = await self.pool.fetch(
            "SELECT index, size_bytes FROM ingestion.upload_parts"
            " WHERE tenant = $1 AND upload_id = $2 ORDER BY index",
            tenant,
            uuid.UUID(upload_id),
        )
        sizes = [int(p["size_bytes"]) for p in parts]
        return Upload(**dict(row), parts=sizes, size_bytes=sum(sizes))

    async def record_part(
        self, tenant: str, upload_id: str, index: int, size: int, *, max_bytes: int
    ) -> tuple[int, int]:
        """Record part `index` (the next one, or a resend); (parts, bytes) so far. The upload's
        row is locked, so concurrent parts of one upload are counted one after the other."""
        key = uuid.UUID(upload_id)
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "SELECT 1 FROM ingestion.uploads WHERE tenant = $1 AND upload_id = $2 FOR UPDATE",
                tenant,
                key,
            )
            rows = await conn.fetch(
                "SELECT index, size_bytes FROM ingestion.upload_parts"
                " WHERE tenant = $1 AND upload_id = $2",
                tenant,
                key,
            )
            sizes = {int(r["index"]): int(r["size_bytes"]) for r in rows}
            if index > len(sizes):
                raise PartOutOfOrder(len(sizes))
            sizes[index] = size
            if sum(sizes.values()) > max_bytes:
                raise TooLarge
            await conn.execute(
                "INSERT INTO ingestion.upload_parts (tenant, upload_id, index, size_bytes)"
                " VALUES ($1, $2, $3, $4) ON CONFLICT (tenant, upload_id, index)"
                " DO UPDATE SET size_bytes = EXCLUDED.size_bytes",
                tenant,
                key,
                index,
                size,
            )
        return len(sizes), sum(sizes.values())

    async def delete_upload(self, tenant: str, upload_id: str) -> bool:
        status: str = await self.pool.execute(
            "DELETE FROM ingestion.uploads WHERE tenant = $1 AND upload_id = $2",
            tenant,
            uuid.UUID(upload_id),
        )
        return status.endswith(" 1")

    async def held_objects(self, tenant: str, names: list[str]) -> set[str]:
        """Those of `names` that a file of the tenant holds."""
        rows = await self.pool.fetch(
            "SELECT object_name FROM ingestion.files WHERE tenant = $1 AND object_name = ANY($2)",
            tenant,
            names,
        )
        return {r["object_name"] for r in rows}

    async def known_uploads(self, tenant: str, upload_ids: list[str]) -> set[str]:
        """Those of `upload_ids` that are sessions of the tenant (expired or not)."""
        rows = await self.pool.fetch(
            "SELECT upload_id::text AS upload_id FROM ingestion.uploads"
            " WHERE tenant = $1 AND upload_id = ANY($2::uuid[])",
            tenant,
            upload_ids,
        )
        return {r["upload_id"] for r in rows}

    async def expired_uploads(self, limit: int = 100) -> list[tuple[str, str, int]]:
        """(tenant, upload_id, parts) of sessions past their expiry, of every tenant."""
        rows = await self.pool.fetch(
            "SELECT u.tenant, u.upload_id::text AS upload_id, count(p.index) AS parts"
            " FROM ingestion.uploads u LEFT JOIN ingestion.upload_parts p"
            " ON p.tenant = u.tenant AND p.upload_id = u.upload_id"
            " WHERE u.expires_at <= clock_timestamp()"
            " GROUP BY u.tenant, u.upload_id ORDER BY min(u.expires_at) LIMIT $1",
            limit,
        )
        return [(r["tenant"], r["upload_id"], int(r["parts"])) for r in rows]
