"""Bytes on their way to becoming a file: objects the bridge wrote, chunked NATS uploads.

Every object lives in the tenant's part of the files bucket (the kit's `FileStore` scopes each
call to one tenant). The bridge streams a multipart upload to `uploads/<uuid>`; a NATS client
sends parts, each stored as `parts/<upload_id>/<index>`, which `assemble` streams, in order,
into one `uploads/<uuid>` object (chunk by chunk: never a whole file in memory) before removing
them. Sessions nobody completes are removed with their parts by `sweep` after their expiry;
objects nobody claims, by the orphan sweep (workers/ingestion/orphans.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import tempfile
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from pathlib import Path
from typing import cast

from schemas.errors import BadRequest, Conflict, NotFound, PayloadTooLarge
from workers.ingestion import sniff
from workers.ingestion.orphans import OrphanSweep, claimable
from workers.ingestion.sandbox import ParseSandbox
from workers.ingestion.settings import IngestionSettings
from workers.ingestion.store import IngestionStore, PartOutOfOrder, TooLarge, Upload
from workers.runtime.files import FileStore, StoredFile
from workers.runtime.files import check_name as check_object_name
from workers.runtime.logs import get_logger

UPLOADS_PREFIX = "uploads/"
log = get_logger(component="ingestion")


def new_object_name() -> str:
    return f"{UPLOADS_PREFIX}{uuid.uuid4()}"


def part_name(upload_id: str, index: int) -> str:
    return f"parts/{upload_id}/{index:06d}"


def check_upload_id(value: str, field: str = "upload_id") -> str:
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise BadRequest(f"{field} is not an upload id", details={"field": field}) from None


class Uploads:
    def __init__(
        self,
        store: IngestionStore,
        files: FileStore,
        sandbox: ParseSandbox,
        settings: IngestionSettings,
    ) -> None:
        self.store = store
        self.files = files
        self.sandbox = sandbox
        self.settings = settings
        self.orphans = OrphanSweep(store, files, settings.orphan_grace_seconds)

    async def claim_object(self, tenant: str, object_name: str) -> StoredFile:
        """An object a client (the bridge) wrote under uploads/, not yet any file's bytes."""
        name = check_object_name(object_name, "object_name")
        if not name.startswith(UPLOADS_PREFIX):
            raise BadRequest(
                f"object_name must be under {UPLOADS_PREFIX}", details={"field": "object_name"}
            )
        if await self.store.object_in_use(tenant, name):
            raise Conflict("the object already belongs to a file", details={"field": "object_name"})
        stored = await self.files.info(tenant, name)
        if stored is None:
            raise NotFound("no such object", details={"object_name": name})
        if not claimable(stored, self.settings.orphan_grace_seconds):
            # Soon removed as an orphan (workers/ingestion/orphans.py): store it again.
            raise NotFound(
                "the object is too old to be claimed; store it again",
                details={"object_name": name},
            )
        return stored

    async def session(self, tenant: str, upload_id: str) -> Upload:
        found = await self.store.get_upload(tenant, check_upload_id(upload_id))
        if found is None:
            raise NotFound("no such upload (or it expired)", details={"upload_id": upload_id})
        return found

    async def start(self, tenant: str, file_name: str, content_type: str) -> Upload:
        expires = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=self.settings.upload_ttl_seconds)
        return await self.store.start_upload(tenant, file_name, content_type, expires)

    async def put_part(
        self, tenant: str, upload_id: str, index: int, data: bytes
    ) -> tuple[int, int]:
        """Store one part; (parts, bytes) received so far."""
        if len(data) > self.settings.part_bytes:
            raise PayloadTooLarge(
                "the part is larger than allowed",
                details={"field": "data", "limit_bytes": self.settings.part_bytes},
            )
        session = await self.session(tenant, upload_id)
        if index > len(session.parts):
            raise _out_of_order(len(session.parts))
        if session.size_bytes - _size_at(session, index) + len(data) > self.settings.max_file_bytes:
            raise _too_large(self.settings.max_file_bytes)
        await self.files.put(
            tenant, part_name(session.upload_id, index), data, max_bytes=self.settings.part_bytes
        )
        try:
            return await self.store.record_part(
                tenant, session.upload_id, index, len(data), max_bytes=self.settings.max_file_bytes
            )
        except PartOutOfOrder as exc:
            raise _out_of_order(exc.args[0]) from None
        except TooLarge:
            raise _too_large(self.settings.max_file_bytes) from None

    async def assemble(self, tenant: str, session: Upload) -> StoredFile:
        """The session's parts as one new object under uploads/; the parts are removed."""
        if not session.parts:
            raise BadRequest("the upload has no parts", details={"field": "upload_id"})

        async def chunks() -> AsyncIterator[bytes]:
            for index in range(len(session.parts)):
                async for chunk in self.files.read(tenant, part_name(session.upload_id, index)):
                    yield chunk

        stored = await self.files.put(
            tenant,
            new_object_name(),
            chunks(),
            max_bytes=self.settings.max_file_bytes,
            content_type=session.content_type,
        )
        await self.discard(tenant, session.upload_id, len(session.parts))
        return stored

    async def discard(self, tenant: str, upload_id: str, parts: int) -> None:
        for index in range(parts):
            await self.files.delete(tenant, part_name(upload_id, index))
        await self.store.delete_upload(tenant, upload_id)

    async def detect(
        self, tenant: str, stored: StoredFile, *, file_name: str, content_type: str
    ) -> sniff.Detected:
        """The type of an object's bytes: from its first 64 KiB, or for a zip archive from its
        member names (the archive is copied to a temporary file and opened in the sandbox)."""
        head = bytearray()
        reader = cast(AsyncGenerator[bytes, None], self.files.read(tenant, stored.name))
        async with contextlib.aclosing(reader) as chunks:
            async for chunk in chunks:
                head += chunk
                if len(head) > sniff.SAMPLE_BYTES:
                    break
        if not sniff.is_zip(bytes(head[:4])):
            return sniff.detect(
                bytes(head[: sniff.SAMPLE_BYTES]),
                file_name=file_name,
                content_type=content_type,
                complete=len(head) <= sniff.SAMPLE_BYTES,
            )
        with tempfile.TemporaryDirectory(prefix="aifleet-ingest-") as directory:
            path = Path(directory) / "source"
            with path.open("wb") as target:
                await self.files.get(tenant, stored.name, into=target)
            return await self.sandbox.detect(path, file_name=file_name, content_type=content_type)

    async def delete_object(self, tenant: str, name: str) -> None:
        """Remove an object that will not become a file; a failure is logged, not raised (the
        request's own outcome matters more than a leftover object)."""
        try:
            await asyncio.shield(self.files.delete(tenant, name))
        except Exception as exc:
            log.warning("upload object not removed", error=type(exc).__name__, tenant=tenant)

    async def sweep(self) -> int:
        """Remove expired upload sessions of every tenant with their parts; how many."""
        removed = 0
        for tenant, upload_id, parts in await self.store.expired_uploads():
            await self.discard(tenant, upload_id, parts)
            removed += 1
        return removed

    async def sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.sweep_interval_seconds)
            try:
                removed = await self.sweep()
                if removed:
                    log.info("expired uploads removed", uploads=removed)
                orphans = await self.orphans.sweep()
                if orphans:
                    log.info("orphaned upload objects removed", objects=orphans)
            except Exception as exc:  # the database or NATS is down: next round
                log.warning("upload sweep failed", error=type(exc).__name__)


def _size_at(session: Upload, index: int) -> int:
    return session.parts[index] if index < len(session.parts) else 0


def _out_of_order(expected: int) -> Conflict:
    return Conflict(
        f"parts are sent in order: the next part is {expected}",
        details={"field": "index", "expected_index": expected},
    )


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge("the file is larger than allowed", details={"limit_bytes": limit})
