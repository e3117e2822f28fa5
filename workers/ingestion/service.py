"""Ingestion handlers: register uploaded bytes as files, run their processing as jobs."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from schemas.errors import BadRequest, NotFound, PayloadTooLarge, Unavailable
from schemas.v1 import ingestion_pb2
from schemas.v1.ingestion_pb2 import (
    DeleteFileRequest,
    DeleteFileResponse,
    GetFileRequest,
    GetFileResponse,
    ListFilesRequest,
    ListFilesResponse,
    ProcessFileRequest,
    ProcessFileResponse,
    StartUploadRequest,
    StartUploadResponse,
    UploadPartRequest,
    UploadPartResponse,
    UploadRequest,
    UploadResponse,
)
from schemas.v1.ingestion_rpc import IngestionService as Rpc
from workers.ingestion import rag
from workers.ingestion.errors import unsupported
from workers.ingestion.names import display_name
from workers.ingestion.processing import Processor
from workers.ingestion.records import check_file_id, check_options, file_message
from workers.ingestion.sandbox import ParseSandbox, prestart
from workers.ingestion.settings import IngestionSettings
from workers.ingestion.sniff import SUPPORTED
from workers.ingestion.store import SCHEMA, STATUSES, FileRecord, IngestionStore, NewFile
from workers.ingestion.uploads import Uploads
from workers.runtime import paging
from workers.runtime import validation as check
from workers.runtime.component import Component
from workers.runtime.config import load_settings
from workers.runtime.context import Context
from workers.runtime.files import StoredFile
from workers.runtime.postgres import migrate
from workers.runtime.resources import Resources

MIGRATIONS = Path(__file__).resolve().with_name("migrations")


class IngestionService:
    def __init__(
        self,
        store: IngestionStore,
        uploads: Uploads,
        processor: Processor,
        settings: IngestionSettings,
    ) -> None:
        self.store = store
        self.uploads = uploads
        self.processor = processor
        self.settings = settings

    async def upload(self, ctx: Context, req: UploadRequest) -> UploadResponse:
        if bool(req.object_name) == bool(req.upload_id):
            raise BadRequest(
                "exactly one of object_name and upload_id is required",
                details={"field": "object_name"},
            )
        content_type = check.text(req.content_type, "content_type", max_chars=255, multiline=False)
        title = check.text(req.title, "title", max_chars=1024, multiline=False)
        metadata = check.struct(
            req.metadata, "metadata", max_bytes=self.settings.max_metadata_bytes
        )
        options = check_options(req.options, max_pages=self.settings.max_pages)
        auto_ingest = req.auto_ingest if req.HasField("auto_ingest") else True
        if req.upload_id:
            session = await self.uploads.session(ctx.tenant, req.upload_id)
            file_name = display_name(req.file_name or session.file_name)
            content_type = content_type or session.content_type
            stored = await self.uploads.assemble(ctx.tenant, session)
        else:
            file_name = display_name(req.file_name)
            stored = await self.uploads.claim_object(ctx.tenant, req.object_name)
        try:
            record, created = await self._register(
                ctx, stored, file_name, content_type, title, metadata, auto_ingest, options
            )
        except BaseException:
            await self._drop_unless_registered(ctx, stored)
            raise
        if not created:
            if record.object_name != stored.name:
                await self.uploads.delete_object(ctx.tenant, stored.name)
        elif auto_ingest:
            record = await self._start_run(ctx, record, None, None, on_queue_failure="record")
        return UploadResponse(
            file_id=record.file_id,
            file_name=record.file_name,
            detected_type=record.detected_type,
            size_bytes=record.size_bytes,
            status=record.status,
            sha256=record.sha256,
            deduplicated=not created,
            file=file_message(record),
        )

    async def _drop_unless_registered(self, ctx: Context, stored: StoredFile) -> None:
        """After a failed registration, delete the stored bytes unless the file's row committed
        before the error (a connection lost after COMMIT, a cancelled request): they are then
        that file's. Unsure (the database unreachable), they are kept: an object no row names
        wastes space, a row whose object is gone is a file that cannot be processed."""
        try:
            kept = await self.store.get_by_sha(ctx.tenant, stored.sha256)
        except Exception as exc:
            ctx.log.warning("upload's object kept", object=stored.name, error=type(exc).__name__)
            return
        if kept is None or kept.object_name != stored.name:
            await self.uploads.delete_object(ctx.tenant, stored.name)

    async def _register(
        self,
        ctx: Context,
        stored: StoredFile,
        file_name: str,
        content_type: str,
        title: str,
        metadata: dict[str, object],
        auto_ingest: bool,
        options: dict[str, object],
    ) -> tuple[FileRecord, bool]:
        if stored.size > self.settings.max_file_bytes:
            raise PayloadTooLarge(
                "the file is larger than allowed",
                details={"limit_bytes": self.settings.max_file_bytes},
            )
        existing = await self.store.get_by_sha(ctx.tenant, stored.sha256)
        if existing is not None:
            return existing, False
        detected = await self.uploads.detect(
            ctx.tenant, stored, file_name=file_name, content_type=content_type
        )
        if not detected.supported:
            raise unsupported(detected.kind, SUPPORTED)
        return await self.store.insert_file(
            ctx.tenant,
            NewFile(
                object_name=stored.name,
                file_name=file_name,
                title=title,
                declared_content_type=content_type,
                detected_type=detected.kind,
                size_bytes=stored.size,
                sha256=stored.sha256,
                metadata=metadata,
                auto_ingest=auto_ingest,
                options=options,
            ),
        )

    async def _start_run(
        self,
        ctx: Context,
        record: FileRecord,
        auto_ingest: bool | None,
        options: dict[str, object] | None,
        *,
        on_queue_failure: str,
    ) -> FileRecord:
        """Start a new run and publish its job. If the job cannot be published, the run ends
        as failed (retryable) and, for `process_file`, the request fails with 503."""
        run_id = uuid.uuid4().hex
        started = await self.store.start_run(
            ctx.tenant, record.file_id, run_id, auto_ingest=auto_ingest, options=options
        )
        if started is None:
            raise NotFound("no such file", details={"file_id": record.file_id})
        job = ProcessFileRequest(file_id=record.file_id, run_id=run_id)
        try:
            await ctx.enqueue(
                Rpc.ProcessFile, job, msg_id=f"ingestion-run:{record.file_id}:{run_id}"
            )
        except Exception as exc:
            ctx.log.warning("processing job not queued", error=type(exc).__name__)
            error = Unavailable("the processing job could not be queued; process the file again")
            failed = await self.processor.fail(ctx, started, run_id, error)
            if on_queue_failure == "raise":
                raise error from None
            return failed
        return started

    async def get_file(self, ctx: Context, req: GetFileRequest) -> GetFileResponse:
        return GetFileResponse(file=file_message(await self._file(ctx, req.file_id)))

    async def list_files(self, ctx: Context, req: ListFilesRequest) -> ListFilesResponse:
        status = check.choice(req.status, "status", STATUSES) if req.status else ""
        page = paging.start(ctx.tenant, req.page, query={"status": status})
        rows = await self.store.list_files(
            ctx.tenant, status=status, after=page.after, limit=page.size + 1
        )
        kept, page_response = paging.finish(
            ctx.tenant, page, rows, position=lambda r: (r.created_at, r.file_id)
        )
        return ListFilesResponse(files=[file_message(r) for r in kept], page=page_response)

    async def delete_file(self, ctx: Context, req: DeleteFileRequest) -> DeleteFileResponse:
        record = await self._file(ctx, req.file_id)
        document_deleted = False
        if req.delete_document and record.document_id:
            document_deleted = await rag.delete(ctx, record.document_id)
        deleted = await self.store.delete(ctx.tenant, record.file_id)
        if deleted is not None:
            await self.uploads.delete_object(ctx.tenant, deleted.object_name)
        return DeleteFileResponse(deleted=deleted is not None, document_deleted=document_deleted)

    async def process_file(self, ctx: Context, req: ProcessFileRequest) -> ProcessFileResponse:
        if ctx.message_id is not None:
            return await self._run_job(ctx, req)
        if req.run_id:
            raise BadRequest("run_id is set by the component", details={"field": "run_id"})
        options = (
            check_options(req.options, max_pages=self.settings.max_pages)
            if req.HasField("options")
            else None
        )
        auto_ingest = req.auto_ingest if req.HasField("auto_ingest") else None
        record = await self._file(ctx, req.file_id)
        started = await self._start_run(ctx, record, auto_ingest, options, on_queue_failure="raise")
        return ProcessFileResponse(file=file_message(started), run_id=started.run_id)

    async def _run_job(self, ctx: Context, req: ProcessFileRequest) -> ProcessFileResponse:
        """The job: do the run it names, once. A job a client published itself (no run_id)
        starts its own run, named after its Nats-Msg-Id."""
        file_id = check_file_id(req.file_id)
        record = await self.store.get(ctx.tenant, file_id)
        if record is None:
            return ProcessFileResponse()  # deleted since: nothing to do
        run_id = req.run_id
        if not run_id:
            run_id = f"job-{ctx.message_id}"[:200]
            if record.run_id != run_id:
                options = (
                    check_options(req.options, max_pages=self.settings.max_pages)
                    if req.HasField("options")
                    else None
                )
                auto = req.auto_ingest if req.HasField("auto_ingest") else None
                record = (
                    await self.store.start_run(
                        ctx.tenant, file_id, run_id, auto_ingest=auto, options=options
                    )
                    or record
                )
        if record.run_id != run_id or record.status != "processing":
            return ProcessFileResponse(file=file_message(record), run_id=record.run_id)
        done = await self.processor.run(ctx, record, run_id)
        return ProcessFileResponse(file=file_message(done), run_id=run_id)

    async def process_file_abandoned(self, ctx: Context, req: ProcessFileRequest) -> None:
        """The job's last attempt never finished (its worker was killed or lost): the run ends
        as failed with the reason, retryable, instead of staying `processing`. A run that did
        finish, or was superseded, is left as it is (`fail` changes only a current run)."""
        record = await self.store.get(ctx.tenant, check_file_id(req.file_id))
        if record is None or record.status != "processing":
            return
        run_id = req.run_id or f"job-{ctx.message_id}"[:200]
        if record.run_id != run_id:
            return
        ctx.log.warning("processing run abandoned on its last attempt", file_id=record.file_id)
        error = Unavailable(
            "processing stopped on its last attempt (its worker was stopped, or it ran out of"
            " time); process the file again",
            details={"attempts": ctx.attempt - 1},
        )
        await self.processor.fail(ctx, record, run_id, error)

    async def start_upload(self, ctx: Context, req: StartUploadRequest) -> StartUploadResponse:
        file_name = display_name(req.file_name)
        content_type = check.text(req.content_type, "content_type", max_chars=255, multiline=False)
        if req.size_bytes > self.settings.max_file_bytes:
            raise PayloadTooLarge(
                "the file is larger than allowed",
                details={"field": "size_bytes", "limit_bytes": self.settings.max_file_bytes},
            )
        session = await self.uploads.start(ctx.tenant, file_name, content_type)
        reply = StartUploadResponse(
            upload_id=session.upload_id,
            part_bytes=self.settings.part_bytes,
            max_file_bytes=self.settings.max_file_bytes,
        )
        reply.expires_at.FromDatetime(session.expires_at)
        return reply

    async def upload_part(self, ctx: Context, req: UploadPartRequest) -> UploadPartResponse:
        parts, size = await self.uploads.put_part(ctx.tenant, req.upload_id, req.index, req.data)
        return UploadPartResponse(parts=parts, size_bytes=size)

    async def _file(self, ctx: Context, file_id: str) -> FileRecord:
        record = await self.store.get(ctx.tenant, check_file_id(file_id))
        if record is None:
            raise NotFound("no such file", details={"file_id": file_id})
        return record


@asynccontextmanager
async def start(resources: Resources) -> AsyncIterator[IngestionService]:
    settings = load_settings(IngestionSettings)
    pool = await resources.postgres()
    await migrate(pool, SCHEMA, MIGRATIONS)
    store = IngestionStore(pool)
    files = await resources.files()
    sandbox = ParseSandbox(settings.sandbox_limits(), settings.parse_limits())
    uploads = Uploads(store, files, sandbox, settings)
    processor = Processor(
        store,
        files,
        await resources.outbox(),
        sandbox,
        settings,
        attempts=resources.settings.job_max_deliver,
    )
    sweeper = asyncio.create_task(uploads.sweep_forever(), name="ingestion-upload-sweeper")
    try:
        yield IngestionService(store, uploads, processor, settings)
    finally:
        sweeper.cancel()


component = Component(
    ingestion_pb2.DESCRIPTOR.services_by_name["IngestionService"],
    start=start,
    jobs=frozenset({"process_file"}),
    description="Files of common document types parsed and ingested into RAG",
    preload=prestart,
)
