"""kill -9 of the RAG worker in the middle of an ingestion job: the job is redelivered to the
next worker and takes effect once (one set of chunks, one ingested event, nothing dead-lettered).

The workers are real processes (rag, gateway offline and cache in one, as `aifleet up` runs
them) killed with SIGKILL after the job reported progress.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client as NATS

from aifleet.embedded import EmbeddedNats, EmbeddedPostgres, EmbeddedValkey
from schemas.v1.rag_pb2 import Document, GetDocumentRequest, UpdateDocumentRequest
from schemas.v1.rag_rpc import RagService
from subjects import STREAM_DLQ, STREAM_JOBS, dlq_subject, job_consumer
from tests.conftest import NatsFactory
from tests.support.polling import eventually
from tests.support.rag import RagDb, create, events
from tests.support.run_worker import WorkerProcess
from workers.runtime.client import Client

pytestmark = pytest.mark.faults

MODULES = ["workers.rag.service", "workers.gateway.service", "workers.cache.service"]
LARGE = "\n\n".join(
    f"Paragraph {i}: the worker acknowledges job {i} only after its chunks are committed."
    for i in range(300)
)


@pytest.fixture
async def nc(nats_factory: NatsFactory) -> AsyncIterator[tuple[EmbeddedNats, NATS]]:
    server = nats_factory()
    client = await nats.connect(server.url, connect_timeout=5)
    try:
        yield server, client
    finally:
        await client.close()


@pytest.fixture
async def db(postgres: EmbeddedPostgres) -> AsyncIterator[RagDb]:
    async with RagDb.connect(postgres.dsn) as found:
        yield found


@pytest.fixture
async def workers() -> AsyncIterator[list[WorkerProcess]]:
    """Worker processes of the test, killed and reaped at its end."""
    started: list[WorkerProcess] = []
    try:
        yield started
    finally:
        for proc in started:
            await proc.close()


def rag_env(
    server: EmbeddedNats, postgres: EmbeddedPostgres, valkey: EmbeddedValkey
) -> dict[str, str]:
    return {
        "NATS_URL": server.url,
        "DATABASE_URL": postgres.dsn,
        "REDIS_URL": valkey.url,
        "AIFLEET_JOB_ACK_WAIT": "2",
        "AIFLEET_JOB_BACKOFF": "[0.2, 0.4]",
        "AIFLEET_DRAIN_TIMEOUT": "5",
        "AIFLEET_RAG_JOB_THRESHOLD_BYTES": "1024",
        "AIFLEET_RAG_EMBED_BATCH": "2",
        "AIFLEET_RAG_CHUNK_MAX_TOKENS": "32",
    }


async def start(workers: list[WorkerProcess], env: dict[str, str], log: Path) -> WorkerProcess:
    # The gateway imports litellm at start: on a loaded machine that takes more than the
    # spawn fixture's 30 s.
    proc = WorkerProcess(MODULES, env, log)
    workers.append(proc)
    return await proc.start(timeout=120)


async def kill_midway(
    client: Client, tenant: str, workers: list[WorkerProcess], env: dict[str, str], log: Path
) -> None:
    """A large create queued as a job; its worker killed after some chunks were embedded."""
    first = await start(workers, env, log)
    reply = await client.call_rpc(tenant, RagService.CreateDocument, create("big", LARGE))
    assert reply.document.status == "processing"
    await kill_halfway(client, tenant, first)


async def kill_halfway(client: Client, tenant: str, worker: WorkerProcess) -> None:
    """SIGKILL `worker` once the job on "big" has embedded some of its chunks."""

    async def midway() -> bool:
        got = await client.call_rpc(
            tenant, RagService.GetDocument, GetDocumentRequest(document_id="big")
        )
        return 0 < got.document.chunks_embedded < got.document.chunks_total

    await eventually(midway, timeout=60, what="the job halfway")
    worker.kill()
    assert await worker.wait(timeout=10) == -9


async def big_once(client: Client, tenant: str, status: str) -> Document:
    """The document "big" once its status is `status`."""

    async def reached() -> Document | None:
        got = await client.call_rpc(
            tenant, RagService.GetDocument, GetDocumentRequest(document_id="big")
        )
        return got.document if got.document.status == status else None

    found = await eventually(reached, timeout=120, what=f"the document {status}")
    assert found is not None
    return found


async def test_a_killed_ingestion_job_is_redelivered_and_takes_effect_once(
    nc: tuple[EmbeddedNats, NATS],
    postgres: EmbeddedPostgres,
    valkey: EmbeddedValkey,
    db: RagDb,
    workers: list[WorkerProcess],
    tmp_path: Path,
) -> None:
    """Killed after some chunks were embedded: the next worker ingests the document once."""
    server, conn = nc
    env = rag_env(server, postgres, valkey)
    tenant = "k" + uuid.uuid4().hex[:12]
    client = Client(conn, timeout=60.0)
    await kill_midway(client, tenant, workers, env, tmp_path / "first.log")
    assert (await db.row_counts(tenant))["chunks"] == 0  # nothing committed yet

    await start(workers, env, tmp_path / "second.log")

    document = await big_once(client, tenant, "ready")
    assert document.version == 1
    assert (await db.row_counts(tenant))["chunks"] == document.chunk_count
    assert len(await events(conn, tenant, "document_ingested")) == 1
    js = conn.jetstream()
    info = await js.consumer_info(STREAM_JOBS, job_consumer("rag"))
    assert info.num_ack_pending == 0
    dlq = await js.stream_info(STREAM_DLQ, subjects_filter=dlq_subject(tenant, "rag", "*"))
    assert not dlq.state.subjects


async def test_a_job_killed_on_its_last_attempt_leaves_the_document_failed(
    nc: tuple[EmbeddedNats, NATS],
    postgres: EmbeddedPostgres,
    valkey: EmbeddedValkey,
    db: RagDb,
    workers: list[WorkerProcess],
    tmp_path: Path,
) -> None:
    """One attempt (AIFLEET_JOB_MAX_DELIVER=1), killed midway: the next worker does not run
    the job again but marks the document failed with the reason; no chunks, one dead letter."""
    server, conn = nc
    env = {**rag_env(server, postgres, valkey), "AIFLEET_JOB_MAX_DELIVER": "1"}
    tenant = "l" + uuid.uuid4().hex[:12]
    client = Client(conn, timeout=60.0)
    await kill_midway(client, tenant, workers, env, tmp_path / "first.log")
    await start(workers, env, tmp_path / "second.log")

    document = await big_once(client, tenant, "failed")
    assert "last attempt" in document.error
    assert (await db.row_counts(tenant))["chunks"] == 0
    js = conn.jetstream()

    async def dead_lettered() -> bool:
        dlq = await js.stream_info(STREAM_DLQ, subjects_filter=dlq_subject(tenant, "rag", "*"))
        return sum((dlq.state.subjects or {}).values()) == 1

    await eventually(dead_lettered, timeout=10, what="the job in the dead letters")


async def test_an_update_job_killed_on_its_last_attempt_keeps_the_current_version(
    nc: tuple[EmbeddedNats, NATS],
    postgres: EmbeddedPostgres,
    valkey: EmbeddedValkey,
    db: RagDb,
    workers: list[WorkerProcess],
    tmp_path: Path,
) -> None:
    """A large update's only attempt killed midway: the next worker marks it failed with the
    reason, the document stays `ready` at version 1 with its chunks, and takes updates again."""
    server, conn = nc
    env = {**rag_env(server, postgres, valkey), "AIFLEET_JOB_MAX_DELIVER": "1"}
    tenant = "u" + uuid.uuid4().hex[:12]
    client = Client(conn, timeout=60.0)
    first = await start(workers, env, tmp_path / "first.log")
    created = await client.call_rpc(tenant, RagService.CreateDocument, create("big", "Small."))
    assert created.document.status == "ready"
    queued = await client.call_rpc(
        tenant,
        RagService.UpdateDocument,
        UpdateDocumentRequest(document_id="big", content=LARGE),
    )
    assert queued.job_id
    await kill_halfway(client, tenant, first)
    await start(workers, env, tmp_path / "second.log")

    async def settled() -> Document | None:
        got = await client.call_rpc(
            tenant, RagService.GetDocument, GetDocumentRequest(document_id="big")
        )
        return got.document if got.document.status != "processing" else None

    document = await eventually(settled, timeout=120, what="the update settled")
    assert document is not None
    assert (document.status, document.version) == ("ready", 1)
    assert "last attempt" in document.error
    assert (await db.row_counts(tenant))["chunks"] == 1
    again = await client.call_rpc(
        tenant, RagService.UpdateDocument, UpdateDocumentRequest(document_id="big", title="T")
    )
    assert again.document.version >= 1
