"""kill -9 of the ingestion worker in the middle of a file: after a restart the file is finished
once — one RAG document created, one file_ingested event, the file `ingested`."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator

import nats
import pytest
from nats.aio.client import Client as NATS

from aifleet.embedded import EmbeddedNats, EmbeddedPostgres
from schemas.v1.ingestion_pb2 import FileIngestedEvent, GetFileRequest, UploadRequest
from schemas.v1.ingestion_rpc import IngestionService as Ingestion
from subjects.streams import provision_streams
from tests.conftest import NatsFactory
from tests.faults.conftest import Spawn
from tests.support import documents, fake_rag
from tests.support.fleet import running_worker
from tests.support.ingestion import put_object, stored_events, wait_for_status
from tests.support.polling import eventually
from workers.runtime.client import Client

pytestmark = pytest.mark.faults

ACK_WAIT = 1.5
PAGES = 400


@pytest.fixture
def fault_nats(nats_factory: NatsFactory) -> EmbeddedNats:
    return nats_factory()


@pytest.fixture
async def nc(fault_nats: EmbeddedNats) -> AsyncIterator[NATS]:
    conn = await nats.connect(fault_nats.url, name="pytest-ingestion-faults")
    try:
        await provision_streams(conn.jetstream())
        yield conn
    finally:
        await conn.close()


async def test_a_file_whose_worker_was_killed_is_finished_once_after_a_restart(
    fault_nats: EmbeddedNats, postgres: EmbeddedPostgres, nc: NATS, spawn_worker: Spawn
) -> None:
    """SIGKILL while pages are being parsed; the redelivered job redoes the file, and its
    effects (RAG document, event, final status) happen exactly once."""
    env = {
        "NATS_URL": fault_nats.url,
        "DATABASE_URL": postgres.dsn,
        "AIFLEET_JOB_ACK_WAIT": str(ACK_WAIT),
        "AIFLEET_JOB_MAX_DELIVER": "5",
        "AIFLEET_JOB_BACKOFF": json.dumps([0.2]),
        "AIFLEET_DRAIN_TIMEOUT": "2",
    }
    tenant = "k" + uuid.uuid4().hex[:12]
    client = Client(nc, timeout=30)
    data = documents.pdf(
        [f"Page {i}. " + "The harbour log goes on. " * 40 for i in range(1, PAGES + 1)]
    )
    async with running_worker([fake_rag.component], fault_nats.url):
        first = await spawn_worker(["workers.ingestion.service"], env)
        name = await put_object(nc, tenant, data)
        reply = await client.call_rpc(
            tenant, Ingestion.Upload, UploadRequest(object_name=name, file_name="long.pdf")
        )

        async def mid_file() -> bool:
            found = await client.call_rpc(
                tenant, Ingestion.GetFile, GetFileRequest(file_id=reply.file_id)
            )
            return found.file.status == "processing" and 0 < found.file.pages_done < PAGES

        await eventually(mid_file, timeout=60, what="the file half parsed")
        first.kill()
        await first.wait(10)

        await spawn_worker(["workers.ingestion.service"], env)
        done = await wait_for_status(client, tenant, reply.file_id, timeout=120)
        assert done.status == "ingested", done.failure
        assert (done.pages_done, done.pages_total) == (PAGES, PAGES)
        key = (tenant, done.document_id)
        assert fake_rag.STATE.created[key] == 1
        assert fake_rag.STATE.documents[key].content.count("Page 400.") == 1

        async def one_event() -> bool:
            return len(await stored_events(nc, tenant, "file_ingested")) >= 1

        await eventually(one_event, timeout=10, what="the file_ingested event")
        events = [
            FileIngestedEvent.FromString(m.data)
            for m in await stored_events(nc, tenant, "file_ingested")
        ]
        assert [(e.file_id, e.run_id) for e in events] == [(reply.file_id, reply.file.run_id)]
