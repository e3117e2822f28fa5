"""Files of the fleet (uploads, training data, model artifacts, batch outputs) in the JetStream
Object Store, one bucket for the fleet (`subjects.FILES_BUCKET`), every object under its
tenant's name.

An object is named `<tenant>/<name>` and every method takes the tenant apart from the name, so
no operation can reach another tenant's object; `name` is checked (no control characters, no
`.` or `..` segment, no leading `/`). Bytes move in 1 MiB chunks in both directions and a whole
object is never held in memory: `put` streams from bytes, a binary file or an async iterable,
counting as it goes and refusing (413) past `max_bytes` with nothing stored; `get` writes into a
file; `read` yields chunks as they arrive. The SHA-256 of an object is kept in its metadata and
checked when it is read back (at the end of the object: a reader that acts on chunks before then
must be ready to discard them).

The layout on the wire is the Object Store's own (chunks on `$O.<bucket>.C.<nuid>`, metadata on
`$O.<bucket>.M.<base64 name>`), so any NATS Object Store client can read what the fleet stored.
`put` is written here rather than taken from nats-py because nats-py's reads only from file-like
objects, not from an async stream such as an HTTP upload.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import io
import json
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass, field
from typing import BinaryIO

from nats.js import JetStreamContext, api
from nats.js.errors import BucketNotFoundError, NotFoundError, ObjectNotFoundError
from nats.js.kv import MSG_ROLLUP_SUBJECT
from nats.js.object_store import (
    OBJ_CHUNKS_PRE_TEMPLATE,
    OBJ_DIGEST_TEMPLATE,
    OBJ_DIGEST_TYPE,
    OBJ_META_PRE_TEMPLATE,
    OBJ_STREAM_TEMPLATE,
    ObjectStore,
)
from nats.nuid import NUID

from schemas.errors import BadRequest, Internal, NotFound, PayloadTooLarge
from subjects import FILES_BUCKET, file_object, file_prefix, is_valid_tenant

CHUNK_BYTES = 1024 * 1024
MAX_NAME_BYTES = 512
# Object Store headers are multi-valued (Go's nats.Header); ours carry one value each.
CONTENT_TYPE = "Content-Type"
METADATA_PREFIX = "Aifleet-Meta-"

Source = bytes | BinaryIO | AsyncIterable[bytes]


@dataclass(frozen=True, slots=True)
class StoredFile:
    """What the Object Store knows of one of a tenant's objects."""

    name: str  # the tenant's name for it, without the tenant
    size: int
    sha256: str  # hex
    content_type: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    modified: dt.datetime | None = None


def check_name(name: str, field: str = "name") -> str:
    """A tenant's object name: 1-512 bytes, printable, a relative path without `.`/`..`."""
    if not name:
        raise BadRequest(f"{field} is required", details={"field": field})
    if len(name.encode()) > MAX_NAME_BYTES:
        raise BadRequest(f"{field} is longer than {MAX_NAME_BYTES} bytes", details={"field": field})
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in name) or "\\" in name:
        raise BadRequest(f"{field} contains control characters or '\\'", details={"field": field})
    if name.startswith("/") or any(part in ("", ".", "..") for part in name.split("/")):
        raise BadRequest(
            f"{field} must be a relative path without empty, '.' or '..' segments",
            details={"field": field},
        )
    return name


class FileStore:
    """The tenant-scoped view of the fleet's Object Store bucket."""

    def __init__(self, js: JetStreamContext, store: ObjectStore, bucket: str) -> None:
        self._js = js
        self._store = store
        self.bucket = bucket
        self._stream = OBJ_STREAM_TEMPLATE.format(bucket=bucket)
        self._nuid = NUID()

    @classmethod
    async def open(
        cls, js: JetStreamContext, *, bucket: str = FILES_BUCKET, max_bytes: int | None = None
    ) -> FileStore:
        """The bucket, created (file storage) when missing; an existing one is used as it is."""
        try:
            store = await js.object_store(bucket)
        except BucketNotFoundError:
            config = api.ObjectStoreConfig(
                description="aifleet files: uploads, training data, model artifacts",
                storage=api.StorageType.FILE,
                max_bytes=max_bytes,
            )
            store = await js.create_object_store(bucket, config=config)
        return cls(js, store, bucket)

    async def put(
        self,
        tenant: str,
        name: str,
        source: Source,
        *,
        max_bytes: int,
        content_type: str = "",
        metadata: dict[str, str] | None = None,
    ) -> StoredFile:
        """Store (or replace) an object; 413 past `max_bytes`, with nothing stored."""
        key = file_object(tenant, check_name(name))
        nuid = self._nuid.next().decode()
        chunk_subject = OBJ_CHUNKS_PRE_TEMPLATE.format(bucket=self.bucket, obj=nuid)
        digest = hashlib.sha256()
        size = chunks = 0
        try:
            async for chunk in _chunks(source, max_bytes):
                size += len(chunk)
                digest.update(chunk)
                await self._js.publish(chunk_subject, chunk)
                chunks += 1
            previous = await self._meta(key)
            headers = {CONTENT_TYPE: [content_type]} if content_type else {}
            headers.update({METADATA_PREFIX + k: [v] for k, v in (metadata or {}).items()})
            info = api.ObjectInfo(
                name=key,
                bucket=self.bucket,
                nuid=nuid,
                size=size,
                chunks=chunks,
                mtime=dt.datetime.now(dt.UTC).isoformat(),
                digest=OBJ_DIGEST_TEMPLATE.format(
                    digest=base64.urlsafe_b64encode(digest.digest()).decode()
                ),
                headers=headers or None,
                options=api.ObjectMetaOptions(max_chunk_size=CHUNK_BYTES),
            )
            await self._js.publish(
                self._meta_subject(key),
                json.dumps(info.as_dict()).encode(),
                headers={api.Header.ROLLUP: MSG_ROLLUP_SUBJECT},
            )
        except BaseException:
            await asyncio.shield(self._purge(chunk_subject))
            raise
        if previous is not None and previous.nuid and not previous.deleted:
            await self._purge(OBJ_CHUNKS_PRE_TEMPLATE.format(bucket=self.bucket, obj=previous.nuid))
        return _stored(tenant, info)

    async def get(self, tenant: str, name: str, into: BinaryIO) -> StoredFile:
        """Write an object into a binary file, checking its SHA-256; 404 when missing."""
        info = await self._existing(tenant, name)
        async for chunk in self._read(info):
            await asyncio.to_thread(into.write, chunk)
        return _stored(tenant, info)

    async def read(self, tenant: str, name: str) -> AsyncIterator[bytes]:
        """The object's chunks as they arrive; raises at the end if the digest does not match."""
        info = await self._existing(tenant, name)
        async for chunk in self._read(info):
            yield chunk

    async def info(self, tenant: str, name: str) -> StoredFile | None:
        info = await self._meta(file_object(tenant, check_name(name)))
        return None if info is None or info.deleted else _stored(tenant, info)

    async def delete(self, tenant: str, name: str) -> bool:
        """Remove an object and its chunks; False when there was none."""
        key = file_object(tenant, check_name(name))
        info = await self._meta(key)
        if info is None or info.deleted:
            return False
        await self._store.delete(key)
        return True

    async def list(self, tenant: str, prefix: str = "") -> AsyncIterator[StoredFile]:
        """The tenant's objects whose name starts with `prefix`. Object metadata is keyed by the
        base64 of the name, so this reads the metadata of the whole bucket: an operator's tool,
        not a request's hot path (components keep their own index of what they stored)."""
        start = file_prefix(tenant) + prefix
        try:
            entries = await self._store.list(ignore_deletes=True)
        except NotFoundError:
            return
        for info in entries:
            if info.name.startswith(start) and not info.deleted:
                yield _stored(tenant, info)

    # -- sweeps (every tenant: a component's background task, never a request) --------------

    async def every_tenant(self) -> AsyncIterator[tuple[str, StoredFile]]:
        """(tenant, object) for every object of the bucket, read from its metadata stream."""
        try:
            entries = await self._store.list(ignore_deletes=True)
        except NotFoundError:
            return
        for info in entries:
            tenant, slash, _ = info.name.partition("/")
            if slash and not info.deleted and is_valid_tenant(tenant):
                yield tenant, _stored(tenant, info)

    async def purge_unreferenced_chunks(self, older_than: float) -> int:
        """Remove chunks no object refers to, last written over `older_than` seconds ago: those
        of a put whose writer died before it stored the object's metadata, or of an object
        replaced by a writer that died before removing the old chunks. How many objects' worth."""
        try:
            live = {info.nuid for info in await self._store.list(ignore_deletes=True)}
        except NotFoundError:
            live = set()
        every = OBJ_CHUNKS_PRE_TEMPLATE.format(bucket=self.bucket, obj=">")
        state = (await self._js.stream_info(self._stream, subjects_filter=every)).state
        cutoff = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=older_than)
        purged = 0
        for subject in state.subjects or {}:
            if subject.rsplit(".", 1)[-1] in live:
                continue
            try:
                last = await self._js.get_last_msg(self._stream, subject)
            except NotFoundError:
                continue
            if last.time is not None and last.time < cutoff:
                await self._purge(subject)
                purged += 1
        return purged

    # -- internals --------------------------------------------------------------------------

    def _meta_subject(self, key: str) -> str:
        return OBJ_META_PRE_TEMPLATE.format(
            bucket=self.bucket, obj=base64.urlsafe_b64encode(key.encode()).decode()
        )

    async def _meta(self, key: str) -> api.ObjectInfo | None:
        try:
            return await self._store.get_info(key, show_deleted=True)
        except (NotFoundError, ObjectNotFoundError):
            return None

    async def _existing(self, tenant: str, name: str) -> api.ObjectInfo:
        info = await self._meta(file_object(tenant, check_name(name)))
        if info is None or info.deleted:
            raise NotFound("no such file", details={"name": name})
        return info

    async def _read(self, info: api.ObjectInfo) -> AsyncIterator[bytes]:
        digest = hashlib.sha256()
        if info.size:
            subject = OBJ_CHUNKS_PRE_TEMPLATE.format(bucket=self.bucket, obj=info.nuid)
            sub = await self._js.subscribe(subject, ordered_consumer=True)
            try:
                received = 0
                while received < (info.size or 0):
                    msg = await sub.next_msg(timeout=30.0)
                    received += len(msg.data)
                    digest.update(msg.data)
                    yield msg.data
            finally:
                await sub.unsubscribe()
        expected = (info.digest or "").removeprefix(OBJ_DIGEST_TYPE)
        if base64.urlsafe_b64encode(digest.digest()).decode() != expected:
            raise Internal("stored file failed its checksum", details={"name": info.name})

    async def _purge(self, chunk_subject: str) -> None:
        await self._js.purge_stream(self._stream, subject=chunk_subject)


def _stored(tenant: str, info: api.ObjectInfo) -> StoredFile:
    headers = info.headers or {}

    def first(value: object) -> str:
        return str(value[0]) if isinstance(value, list) and value else str(value or "")

    digest = base64.urlsafe_b64decode((info.digest or "").removeprefix(OBJ_DIGEST_TYPE) or b"")
    return StoredFile(
        name=info.name.removeprefix(file_prefix(tenant)),
        size=info.size or 0,
        sha256=digest.hex(),
        content_type=first(headers.get(CONTENT_TYPE)),
        metadata={
            k.removeprefix(METADATA_PREFIX): first(v)
            for k, v in headers.items()
            if k.startswith(METADATA_PREFIX)
        },
        modified=dt.datetime.fromisoformat(info.mtime) if info.mtime else None,
    )


async def _chunks(source: Source, max_bytes: int) -> AsyncIterator[bytes]:
    """1 MiB chunks of any source (an async source's own pieces are regrouped); 413 as soon
    as what was read passes `max_bytes`, not a chunk later."""
    if isinstance(source, bytes):
        source = io.BytesIO(source)
    seen = 0

    def count(piece: bytes) -> bytes:
        nonlocal seen
        seen += len(piece)
        if seen > max_bytes:
            raise PayloadTooLarge(
                "the file is larger than allowed", details={"limit_bytes": max_bytes}
            )
        return piece

    if isinstance(source, io.IOBase) or hasattr(source, "readinto"):
        reader: BinaryIO = source  # type: ignore[assignment]
        while chunk := await asyncio.to_thread(reader.read, CHUNK_BYTES):
            yield count(chunk)
        return
    pending = bytearray()
    async for piece in source:  # type: ignore[union-attr]
        pending += count(piece)
        while len(pending) >= CHUNK_BYTES:
            yield bytes(pending[:CHUNK_BYTES])
            del pending[:CHUNK_BYTES]
    if pending:
        yield bytes(pending)
