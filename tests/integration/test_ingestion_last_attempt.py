"""A processing job whose last attempt fails in a way the run itself never sees (the runner's
deadline, or fewer attempts than the worker's settings) still ends its run: never `processing`.

Each test runs its own nats-server, so the ingestion consumer it creates is its own.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.aio.client import Client as NATS

from aifleet.embedded import EmbeddedNats, EmbeddedPostgres
from schemas.v1.ingestion_pb2 import UploadRequest
from schemas.v1.ingestion_rpc import IngestionService as Ingestion
from subjects import STREAM_JOBS
from subjects.streams import provision_streams
from tests.conftest import NatsFactory
from tests.support import documents
from tests.support.fleet import running_worker
from tests.support.ingestion import put_object, wait_for_status
from workers.ingestion import service as ingestion
from workers.ingestion.sandbox import ParseSandbox
from workers.runtime.client import Client


@pytest.fixture
async def own_nc(nats_factory: NatsFactory) -> Any:
    """A connection to a nats-server of this test alone, its streams provisioned."""
    server: EmbeddedNats = nats_factory()
    nc = await nats.connect(server.url, name="pytest-ingestion", connect_timeout=5)
    await provision_streams(nc.jetstream())
    try:
        yield server, nc
    finally:
        await nc.close()


async def _upload(nc: NATS, client: Client, tenant: str) -> str:
    name = await put_object(nc, tenant, documents.MARKDOWN)
    reply = await client.call_rpc(
        tenant, Ingestion.Upload, UploadRequest(object_name=name, file_name="d.md")
    )
    return reply.file_id


async def test_a_run_past_the_job_timeout_on_its_last_attempt_ends_failed(
    own_nc: tuple[EmbeddedNats, NATS], postgres: EmbeddedPostgres, monkeypatch: Any
) -> None:
    """A parse outlasting job_timeout on the only attempt: the run ends failed, retryable."""
    server, nc = own_nc

    async def slow(self: ParseSandbox, path: Path, *args: Any, **kwargs: Any) -> Any:
        await asyncio.sleep(30)

    monkeypatch.setattr(ParseSandbox, "process", slow)
    tenant = "d" + uuid.uuid4().hex[:12]
    client = Client(nc, timeout=20)
    settings = {"database_url": postgres.dsn, "job_max_deliver": 1, "job_timeout": 1.5}
    async with running_worker([ingestion.component], server.url, **settings):
        file_id = await _upload(nc, client, tenant)
        failed = await wait_for_status(client, tenant, file_id, ("failed",), timeout=15)
    assert (failed.failure.code, failed.failure.retryable) == ("UNAVAILABLE", True)
    assert failed.failure.details["attempts"] == 1  # the attempts made, as after a lost one


async def test_a_run_under_a_consumer_with_fewer_deliveries_ends_failed(
    own_nc: tuple[EmbeddedNats, NATS], postgres: EmbeddedPostgres
) -> None:
    """Consumer made for 1 attempt, worker set for 3, RAG absent: the run ends failed."""
    server, nc = own_nc
    tenant = "d" + uuid.uuid4().hex[:12]
    client = Client(nc, timeout=20)
    base = {"database_url": postgres.dsn, "job_backoff": [0.1]}
    async with running_worker([ingestion.component], server.url, **base, job_max_deliver=1):
        consumers = await nc.jetstream().consumers_info(STREAM_JOBS)
    # the worker made the durable consumer for 1 attempt (2 deliveries); it stays so
    assert [c.config.max_deliver for c in consumers if "ingestion" in c.name] == [2]
    async with running_worker([ingestion.component], server.url, **base, job_max_deliver=3):
        file_id = await _upload(nc, client, tenant)
        failed = await wait_for_status(client, tenant, file_id, ("failed",), timeout=15)
    assert (failed.failure.code, failed.failure.retryable) == ("UNAVAILABLE", True)
