"""kill -9 of the ingestion worker in the middle of a file: after a restart the file is finished
once — one RAG document created, one file_ingested event, the file `ingested`; killed on the
job's last attempt, the file ends `failed` with the reason instead of staying `processing`."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator

import nats
import pytest
from nats.aio.client import Client as NATS

from aifleet.embedded import EmbeddedNats, EmbeddedPostgres
from schemas.v1.ingestion_pb2 import (
    File,
    FileFailedEvent,
    FileIngestedEvent,
    GetFileRequest,
    UploadRequest,
    UploadResponse,
)
from schemas.v1.ingestion_rpc import IngestionService as Ingestion
from subjects import STREAM_DLQ, dlq_subject
from subjects.streams import provision_streams
from tests.conftest import NatsFactory
from tests.faults.conftest import Spawn
from tests.support import documents, fake_rag
from tests.support.fleet import running_worker
from tests.support.ingestion import put_object, stored_events, wait_for_status
from tests.support.polling import eventually
from tests.support.run_worker import WorkerProcess
from workers.runtime.client import Client

pytestmark = pytest.mark.faults

ACK_WAIT = 1.5
PAGES = 600
# Progress is written this often, so that a parse of well under a second shows pages mid-file
# (at the default 0.5 s a quiet machine could parse the whole file between two writes).
PROGRESS_INTERVAL = 0.02


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


def worker_env(nats_url: str, database_url: str, *, attempts: int) -> dict[str, str]:
    return {
        "NATS_URL": nats_url,
        "DATABASE_URL": database_url,
        "AIFLEET_JOB_ACK_WAIT": str(ACK_WAIT),
        "AIFLEET_JOB_MAX_DELIVER": str(attempts),
        "AIFLEET_JOB_BACKOFF": json.dumps([0.2]),
        "AIFLEET_DRAIN_TIMEOUT": "2",
        "AIFLEET_INGESTION_PROGRESS_INTERVAL_SECONDS": str(PROGRESS_INTERVAL),
    }


def long_pdf() -> bytes:
    return documents.pdf(
        [f"Page {i}. " + "The harbour log goes on. " * 40 for i in range(1, PAGES + 1)]
    )


async def kill_mid_file(
    client: Client, nc: NATS, tenant: str, worker: WorkerProcess
) -> UploadResponse:
    """Upload the long PDF, wait until it is half parsed, kill -9 the worker."""
    name = await put_object(nc, tenant, long_pdf())
    reply = await client.call_rpc(
        tenant, Ingestion.Upload, UploadRequest(object_name=name, file_name="long.pdf")
    )

    async def mid_file() -> bool:
        found = await client.call_rpc(
            tenant, Ingestion.GetFile, GetFileRequest(file_id=reply.file_id)
        )
        return found.file.status == "processing" and 0 < found.file.pages_done < PAGES

    await eventually(mid_file, timeout=60, what="the file half parsed")
    worker.kill()
    await worker.wait(10)
    return reply


async def event_runs(
    nc: NATS, tenant: str, event: str, kind: type[FileIngestedEvent] | type[FileFailedEvent]
) -> list[tuple[str, str]]:
    """(file_id, run_id) of every stored `event` of the tenant, once at least one is stored."""

    async def stored() -> bool:
        return len(await stored_events(nc, tenant, event)) >= 1

    await eventually(stored, timeout=10, what=f"the {event} event")
    found = [kind.FromString(m.data) for m in await stored_events(nc, tenant, event)]
    return [(e.file_id, e.run_id) for e in found]


async def killed_and_restarted(
    nc: NATS, spawn_worker: Spawn, env: dict[str, str], tenant: str
) -> tuple[UploadResponse, File]:
    """The long PDF uploaded, its worker killed mid-file and another started: the upload, and
    the file once it is ingested or failed."""
    client = Client(nc, timeout=30)
    async with running_worker([fake_rag.component], env["NATS_URL"]):
        first = await spawn_worker(["workers.ingestion.service"], env)
        reply = await kill_mid_file(client, nc, tenant, first)
        await spawn_worker(["workers.ingestion.service"], env)
        return reply, await wait_for_status(client, tenant, reply.file_id, timeout=120)


async def test_a_file_whose_worker_was_killed_is_finished_once_after_a_restart(
    fault_nats: EmbeddedNats, postgres: EmbeddedPostgres, nc: NATS, spawn_worker: Spawn
) -> None:
    """SIGKILL while pages are being parsed; the redelivered job redoes the file, and its
    effects (RAG document, event, final status) happen exactly once."""
    env = worker_env(fault_nats.url, postgres.dsn, attempts=5)
    tenant = "k" + uuid.uuid4().hex[:12]
    reply, done = await killed_and_restarted(nc, spawn_worker, env, tenant)
    assert done.status == "ingested", done.failure
    assert (done.pages_done, done.pages_total) == (PAGES, PAGES)
    key = (tenant, done.document_id)
    assert fake_rag.STATE.created[key] == 1
    assert fake_rag.STATE.documents[key].content.count(f"Page {PAGES}.") == 1
    runs = await event_runs(nc, tenant, "file_ingested", FileIngestedEvent)
    assert runs == [(reply.file_id, reply.file.run_id)]


async def test_a_file_whose_worker_was_killed_on_the_last_attempt_ends_failed(
    fault_nats: EmbeddedNats, postgres: EmbeddedPostgres, nc: NATS, spawn_worker: Spawn
) -> None:
    """One attempt (AIFLEET_JOB_MAX_DELIVER=1), SIGKILL mid-file: the job is not run again,
    and after the restart the file is `failed` (UNAVAILABLE, retryable, saying why) with one
    file_failed event and the job in the dead letters; no RAG document."""
    env = worker_env(fault_nats.url, postgres.dsn, attempts=1)
    tenant = "l" + uuid.uuid4().hex[:12]
    reply, done = await killed_and_restarted(nc, spawn_worker, env, tenant)
    assert done.status == "failed"
    assert done.failure.code == "UNAVAILABLE"
    assert done.failure.retryable
    assert "last attempt" in done.failure.message
    assert done.pages_done < PAGES  # the second delivery did not parse the file again
    assert not any(key[0] == tenant for key in fake_rag.STATE.created)
    runs = await event_runs(nc, tenant, "file_failed", FileFailedEvent)
    assert runs == [(reply.file_id, reply.file.run_id)]

    async def dead_lettered() -> bool:
        dlq = await nc.jetstream().stream_info(
            STREAM_DLQ, subjects_filter=dlq_subject(tenant, "ingestion", "process_file")
        )
        return sum((dlq.state.subjects or {}).values()) == 1

    await eventually(dead_lettered, timeout=10, what="the job in the dead letters")
