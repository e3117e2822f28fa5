"""Test helpers for the ingestion component: direct reads of its schema."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from pathlib import Path
from typing import Any

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from schemas.v1.ingestion_pb2 import File, GetFileRequest
from schemas.v1.ingestion_rpc import IngestionService
from subjects import STREAM_EVENTS, event_subject
from tests.support.database import ComponentDb
from workers.ingestion.store import SCHEMA, NewFile
from workers.runtime.client import Client
from workers.runtime.files import FileStore

MIGRATIONS = Path(__file__).resolve().parents[2] / "workers" / "ingestion" / "migrations"


class IngestionDb(ComponentDb):
    """Direct reads of the ingestion schema, as a test checks what the worker wrote."""

    schema = SCHEMA
    migrations = MIGRATIONS
    tables = ("files", "uploads", "upload_parts")


def new_file(content: bytes = b"hello", **overrides: Any) -> NewFile:
    values: dict[str, Any] = {
        "object_name": f"uploads/{uuid.uuid4()}",
        "file_name": "a.txt",
        "title": "A",
        "declared_content_type": "text/plain",
        "detected_type": "text",
        "size_bytes": len(content),
        "sha256": hashlib.sha256(content).hexdigest(),
        "metadata": {"k": "v"},
        "auto_ingest": True,
        "options": {},
    }
    return NewFile(**{**values, **overrides})


async def put_object(nc: NATS, tenant: str, data: bytes) -> str:
    """Store bytes as the bridge does (fleet credentials): `uploads/<uuid>` of the tenant."""
    files = await FileStore.open(nc.jetstream())
    name = f"uploads/{uuid.uuid4()}"
    await files.put(tenant, name, data, max_bytes=len(data) + 1)
    return name


async def object_exists(nc: NATS, tenant: str, name: str) -> bool:
    files = await FileStore.open(nc.jetstream())
    return await files.info(tenant, name) is not None


async def wait_for_status(
    client: Client,
    tenant: str,
    file_id: str,
    statuses: tuple[str, ...] = ("ingested", "failed"),
    timeout: float = 30.0,
) -> File:
    """The file once its status is one of `statuses`."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        reply = await client.call_rpc(
            tenant, IngestionService.GetFile, GetFileRequest(file_id=file_id)
        )
        if reply.file.status in statuses:
            return reply.file
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"file {file_id} still {reply.file.status} after {timeout}s")
        await asyncio.sleep(0.1)


async def stored_events(nc: NATS, tenant: str, event: str) -> list[Msg]:
    """Every `evt.ingestion.<event>` of the tenant in AI_EVENTS, oldest first."""
    js = nc.jetstream()
    subject = event_subject(tenant, "ingestion", event)
    info = await js.stream_info(STREAM_EVENTS, subjects_filter=subject)
    count = (info.state.subjects or {}).get(subject, 0)
    if not count:
        return []
    sub = await js.subscribe(subject, ordered_consumer=True)
    try:
        return [await sub.next_msg(timeout=2.0) for _ in range(count)]
    finally:
        await sub.unsubscribe()
