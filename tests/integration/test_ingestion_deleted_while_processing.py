"""A file deleted while its first run is parsing: the run that then finds it gone leaves no
RAG document behind (no file names it, so nothing would ever delete it)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from nats.aio.client import Client as NATS

from aifleet.embedded import EmbeddedNats, EmbeddedPostgres
from schemas.v1.ingestion_pb2 import DeleteFileRequest, UploadRequest
from schemas.v1.ingestion_rpc import IngestionService as Ingestion
from tests.support import documents, fake_rag
from tests.support.fleet import running_worker
from tests.support.ingestion import put_object
from workers.ingestion import service as ingestion
from workers.ingestion.rag import document_id_for
from workers.ingestion.sandbox import ParseSandbox
from workers.runtime.client import Client


async def test_a_file_deleted_during_its_first_run_leaves_no_rag_document(
    nats_server: EmbeddedNats, postgres: EmbeddedPostgres, nc: NATS, monkeypatch: Any
) -> None:
    """delete_file(delete_document) while parsing, then the run ends: no RAG document left."""
    parsing, release, parsed = asyncio.Event(), asyncio.Event(), asyncio.Event()
    process = ParseSandbox.process

    async def gated(self: ParseSandbox, *args: Any, **kwargs: Any) -> Any:
        parsing.set()
        await release.wait()
        try:
            return await process(self, *args, **kwargs)
        finally:
            parsed.set()

    monkeypatch.setattr(ParseSandbox, "process", gated)
    tenant = "d" + uuid.uuid4().hex[:12]
    client = Client(nc, timeout=20)
    async with (
        running_worker([fake_rag.component], nats_server.url),
        running_worker([ingestion.component], nats_server.url, database_url=postgres.dsn),
    ):
        name = await put_object(nc, tenant, documents.MARKDOWN)
        reply = await client.call_rpc(
            tenant, Ingestion.Upload, UploadRequest(object_name=name, file_name="d.md")
        )
        await asyncio.wait_for(parsing.wait(), 20)
        deleted = await client.call_rpc(
            tenant,
            Ingestion.DeleteFile,
            DeleteFileRequest(file_id=reply.file_id, delete_document=True),
        )
        assert deleted.deleted
        release.set()
        await asyncio.wait_for(parsed.wait(), 20)
        # Leaving the block stops the worker gracefully: the run ends before it returns.
    assert (tenant, document_id_for(reply.file_id)) not in fake_rag.STATE.documents
