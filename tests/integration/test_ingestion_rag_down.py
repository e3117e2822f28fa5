"""RAG not running: a file's run is retried with the job backoff, then ends failed with a
retryable UNAVAILABLE, and process_file runs it again once RAG is there."""

from __future__ import annotations

import uuid

from nats.aio.client import Client as NATS

from aifleet.embedded import EmbeddedNats, EmbeddedPostgres
from schemas.v1.ingestion_pb2 import ProcessFileRequest, UploadRequest
from schemas.v1.ingestion_rpc import IngestionService as Ingestion
from tests.support import documents, fake_rag
from tests.support.fleet import running_worker
from tests.support.ingestion import put_object, stored_events, wait_for_status
from workers.ingestion import service as ingestion
from workers.runtime.client import Client


async def test_without_rag_the_run_fails_retryable_and_process_file_recovers_it(
    nats_server: EmbeddedNats, postgres: EmbeddedPostgres, nc: NATS
) -> None:
    """Two attempts without responders, the run failed UNAVAILABLE; with RAG back, ingested."""
    tenant = "d" + uuid.uuid4().hex[:12]
    client = Client(nc, timeout=20)
    settings = {"database_url": postgres.dsn, "job_backoff": [0.1], "job_max_deliver": 2}
    async with running_worker([ingestion.component], nats_server.url, **settings):
        name = await put_object(nc, tenant, documents.MARKDOWN)
        reply = await client.call_rpc(
            tenant, Ingestion.Upload, UploadRequest(object_name=name, file_name="d.md")
        )
        failed = await wait_for_status(client, tenant, reply.file_id)
        assert (failed.status, failed.failure.code, failed.failure.retryable) == (
            "failed",
            "UNAVAILABLE",
            True,
        )
        assert len(await stored_events(nc, tenant, "file_failed")) == 1
        async with running_worker([fake_rag.component], nats_server.url):
            await client.call_rpc(
                tenant, Ingestion.ProcessFile, ProcessFileRequest(file_id=reply.file_id)
            )
            done = await wait_for_status(client, tenant, reply.file_id)
    assert done.status == "ingested"
    assert not done.HasField("failure")
