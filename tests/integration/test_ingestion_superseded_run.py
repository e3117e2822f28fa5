"""A run superseded by a newer one (process_file again while the first still parses) must not
write its stale text into the file's RAG document after the newer run has finished."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from nats.aio.client import Client as NATS

from aifleet.embedded import EmbeddedNats, EmbeddedPostgres
from schemas.v1.ingestion_pb2 import ProcessFileRequest, ProcessingOptions, UploadRequest
from schemas.v1.ingestion_rpc import IngestionService as Ingestion
from tests.support import documents, fake_rag
from tests.support.fleet import running_worker
from tests.support.ingestion import put_object, wait_for_status
from workers.ingestion import service as ingestion
from workers.ingestion.sandbox import ParseSandbox
from workers.runtime.client import Client


async def test_a_superseded_run_leaves_the_newer_runs_document_in_rag(
    nats_server: EmbeddedNats, postgres: EmbeddedPostgres, nc: NATS, monkeypatch: Any
) -> None:
    """Run 1 (3 pages) held in its parse, run 2 (max_pages=1) ingested, run 1 let go: RAG
    still holds run 2's one page."""
    parsing, release = asyncio.Event(), asyncio.Event()
    process = ParseSandbox.process
    calls = 0

    async def gated(self: ParseSandbox, *args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            parsing.set()
            await release.wait()
        return await process(self, *args, **kwargs)

    monkeypatch.setattr(ParseSandbox, "process", gated)
    tenant = "d" + uuid.uuid4().hex[:12]
    client = Client(nc, timeout=20)
    data = documents.pdf(["First page words.", "Second page words.", "Third page words."])
    async with (
        running_worker([fake_rag.component], nats_server.url),
        running_worker([ingestion.component], nats_server.url, database_url=postgres.dsn),
    ):
        name = await put_object(nc, tenant, data)
        reply = await client.call_rpc(
            tenant, Ingestion.Upload, UploadRequest(object_name=name, file_name="three.pdf")
        )
        await asyncio.wait_for(parsing.wait(), 20)
        await client.call_rpc(
            tenant,
            Ingestion.ProcessFile,
            ProcessFileRequest(file_id=reply.file_id, options=ProcessingOptions(max_pages=1)),
        )
        second = await wait_for_status(client, tenant, reply.file_id, ("ingested",))
        assert second.pages_done == 1
        updates = fake_rag.STATE.calls["update_document"]
        release.set()
        for _ in range(50):  # run 1 goes on: parse, create (a conflict), maybe update
            await asyncio.sleep(0.1)
            if fake_rag.STATE.calls["update_document"] > updates:
                break
        await asyncio.sleep(0.5)
        document = fake_rag.STATE.documents[(tenant, second.document_id)]
        after = await wait_for_status(client, tenant, reply.file_id, ("ingested",))
    assert (after.pages_done, after.options.max_pages) == (1, 1)
    assert "Third page" not in document.content
