"""One processing run of a file, as the job `process_file` does it.

download the object to a private temporary file -> detect and parse it in the sandbox (progress
per page) -> `rag.create_document` when the file ingests into RAG -> mark the run ingested or
failed, its event staged in the outbox in the same transaction.

A run is identified by its run id; every write is conditional on the run still being the
file's current one (workers/ingestion/store.py), and the RAG document id is derived from the
file, so a redelivered job (a worker killed mid-file) repeats the work but has its effects once:
one RAG document, one `file_ingested` event, whose Nats-Msg-Id is the run's.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from schemas.errors import ServiceError
from schemas.v1.ingestion_pb2 import (
    FileFailedEvent,
    FileIngestedEvent,
    IngestionProgressEvent,
)
from subjects.events import INGESTION_FILE_FAILED, INGESTION_FILE_INGESTED, INGESTION_PROGRESS
from workers.ingestion import rag
from workers.ingestion.records import failure_message, parse_options
from workers.ingestion.sandbox import ParseSandbox
from workers.ingestion.settings import IngestionSettings
from workers.ingestion.store import FileRecord, IngestionStore, Outcome
from workers.runtime.context import Context
from workers.runtime.files import FileStore
from workers.runtime.outbox import Outbox

# Share of a run's progress that parsing takes when the text then goes into RAG.
PARSE_SHARE = 0.7


class Progress:
    """Records a run's progress (row and event), at most every `interval` seconds per stage."""

    def __init__(
        self,
        ctx: Context,
        store: IngestionStore,
        record: FileRecord,
        run_id: str,
        interval: float,
    ) -> None:
        self.ctx = ctx
        self.store = store
        self.record = record
        self.run_id = run_id
        self._last = 0.0
        self._interval = interval
        self._share = PARSE_SHARE if record.auto_ingest else 1.0
        self.pages = (0, 0)

    async def parsed(self, done: int, total: int) -> None:
        self.pages = (done, total)
        await self._report("parse", done, total, self._share * done / max(total, 1))

    async def ingesting(self, done: int, total: int) -> None:
        progress = self._share + (1 - self._share) * done / max(total, 1)
        await self._report("ingest", done, total, min(progress, 0.99))

    async def _report(self, stage: str, done: int, total: int, progress: float) -> None:
        now = time.monotonic()
        if now - self._last < self._interval and done not in (0, total):
            return
        self._last = now
        pages_done, pages_total = self.pages
        await self.store.report_progress(
            self.ctx.tenant,
            self.record.file_id,
            self.run_id,
            done=pages_done,
            total=pages_total,
            progress=progress,
        )
        event = IngestionProgressEvent(
            file_id=self.record.file_id,
            run_id=self.run_id,
            stage=stage,
            pages_done=done,
            pages_total=total,
            progress=progress,
        )
        try:
            await self.ctx.emit(
                INGESTION_PROGRESS,
                event,
                msg_id=f"ingestion-progress:{self.record.file_id}:{self.run_id}:{stage}:{done}",
            )
        except Exception as exc:  # progress is informative; the run goes on without it
            self.ctx.log.warning("progress event not published", error=type(exc).__name__)


class Processor:
    def __init__(
        self,
        store: IngestionStore,
        files: FileStore,
        outbox: Outbox,
        sandbox: ParseSandbox,
        settings: IngestionSettings,
        *,
        attempts: int,
    ) -> None:
        self.store = store
        self.files = files
        self.outbox = outbox
        self.sandbox = sandbox
        self.settings = settings
        self.attempts = attempts

    async def run(self, ctx: Context, record: FileRecord, run_id: str) -> FileRecord:
        """Do the run; returns the file as it stands afterwards. A retryable failure before the
        last attempt is raised (the job is retried); any other ends the run as failed."""
        try:
            outcome = await self._work(ctx, record, run_id)
        except ServiceError as exc:
            if exc.retryable and ctx.attempt < self.attempts:
                raise
            return await self.fail(ctx, record, run_id, exc)
        except Exception:
            if ctx.attempt < self.attempts:
                raise
            ctx.log.error("processing failed on its last attempt", file_id=record.file_id)
            return await self.fail(ctx, record, run_id, None)
        return await self._finish(ctx, record, run_id, outcome)

    async def _work(self, ctx: Context, record: FileRecord, run_id: str) -> Outcome:
        progress = Progress(
            ctx, self.store, record, run_id, self.settings.progress_interval_seconds
        )
        with tempfile.TemporaryDirectory(prefix="aifleet-ingest-") as directory:
            path = Path(directory) / "source"  # never the client's file name
            with path.open("wb") as target:
                await self.files.get(ctx.tenant, record.object_name, into=target)
            detected = await self.sandbox.detect(
                path, file_name=record.file_name, content_type=record.declared_content_type
            )
            doc = await self.sandbox.process(
                path, detected, parse_options(record.options), progress.parsed
            )
        document_id = ""
        if record.auto_ingest:
            # Written only while this run is still the file's current one, its row locked: a
            # superseded run would replace the newer run's document with its stale text, and a
            # deleted file's would be left to nobody.
            async with self.store.holding_run(ctx.tenant, record.file_id, run_id) as current:
                document = await rag.put(ctx, record, doc) if current else None
            if document is not None:
                wait = min(self.settings.rag_wait_seconds, max(ctx.remaining() - 1.0, 1.0))
                document = await rag.until_ready(ctx, document, wait, progress.ingesting)
                document_id = document.document_id
        return Outcome(
            pages_done=doc.pages_parsed,
            pages_total=doc.pages,
            characters=doc.characters,
            sections=len(doc.sections),
            document_id=document_id,
        )

    async def _finish(
        self, ctx: Context, record: FileRecord, run_id: str, outcome: Outcome
    ) -> FileRecord:
        async with self.store.pool.acquire() as conn, conn.transaction():
            done = await self.store.finish_run(conn, ctx.tenant, record.file_id, run_id, outcome)
            staged = None
            if done is not None:
                event = FileIngestedEvent(
                    file_id=done.file_id,
                    run_id=run_id,
                    file_name=done.file_name,
                    detected_type=done.detected_type,
                    document_id=done.document_id,
                    pages=outcome.pages_total,
                    characters=outcome.characters,
                    sections=outcome.sections,
                )
                staged = await self.outbox.stage(
                    conn,
                    ctx,
                    INGESTION_FILE_INGESTED,
                    event,
                    msg_id=f"ingestion-file_ingested:{done.file_id}:{run_id}",
                )
        if staged is not None:
            await self.outbox.publish(staged)
        if done is None and outcome.document_id and not record.document_id:
            current = await self.store.get(ctx.tenant, record.file_id)
            if current is None:
                await self._drop_document(ctx, outcome.document_id)
            return current or record
        return done or await self._current(ctx, record)

    async def _drop_document(self, ctx: Context, document_id: str) -> None:
        """The file was deleted during its first run: the RAG document the run created after
        that names no file, and `delete_file` found none to delete, so nothing else ever would."""
        try:
            await rag.delete(ctx, document_id)
        except Exception as exc:  # a retry would find no file and do nothing: log it instead
            ctx.log.warning("document of a deleted file not deleted", error=type(exc).__name__)

    async def fail(
        self, ctx: Context, record: FileRecord, run_id: str, error: ServiceError | None
    ) -> FileRecord:
        failure: dict[str, Any] = (
            {"code": "INTERNAL", "message": "internal error", "retryable": True}
            if error is None
            else {
                "code": error.code,
                "message": error.message,
                "details": error.details or {},
                "retryable": error.retryable,
            }
        )
        async with self.store.pool.acquire() as conn, conn.transaction():
            failed = await self.store.fail_run(conn, ctx.tenant, record.file_id, run_id, failure)
            staged = None
            if failed is not None:
                event = FileFailedEvent(
                    file_id=failed.file_id,
                    run_id=run_id,
                    file_name=failed.file_name,
                    failure=failure_message(failure),
                )
                staged = await self.outbox.stage(
                    conn,
                    ctx,
                    INGESTION_FILE_FAILED,
                    event,
                    msg_id=f"ingestion-file_failed:{failed.file_id}:{run_id}",
                )
        if staged is not None:
            await self.outbox.publish(staged)
        return failed or await self._current(ctx, record)

    async def _current(self, ctx: Context, record: FileRecord) -> FileRecord:
        found = await self.store.get(ctx.tenant, record.file_id)
        return found or record
