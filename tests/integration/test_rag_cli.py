"""`aifleet rag ingest` as a person uses it: a file in, a ready document out; a large one goes
through the job and the command waits for it."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from aifleet.embedded import EmbeddedNats, EmbeddedPostgres, EmbeddedValkey
from tests.integration.test_cli import aifleet
from tests.support.rag import configure, running_rag
from workers.runtime.worker import Worker


@pytest.fixture(scope="module")
async def worker(
    nats_server: EmbeddedNats, valkey: EmbeddedValkey, postgres: EmbeddedPostgres
) -> AsyncIterator[Worker]:
    with pytest.MonkeyPatch.context() as mp:
        configure(mp, job_threshold_bytes=2048)
        async with running_rag(nats_server.url, valkey.url, postgres.dsn) as w:
            yield w


@pytest.mark.parametrize("size", ["small", "large"])
async def test_ingest_a_file_and_wait_until_it_is_ready(
    worker: Worker, nats_server: EmbeddedNats, tmp_path: Path, size: str
) -> None:
    """Exit 0 and the ready document as JSON, directly or after the job."""
    text = "# Notes\n\nThe deploy runs every night after the backup. " * (
        1 if size == "small" else 80
    )
    path = tmp_path / "notes.md"
    path.write_text(text)
    tenant = "c" + uuid.uuid4().hex[:12]
    code, out, err = await aifleet(nats_server.url, "rag", "ingest", str(path), "--tenant", tenant)
    assert code == 0, err
    doc = json.loads(out)
    assert doc["status"] == "ready"
    assert doc["title"] == "notes.md"
    assert doc["chunk_count"] >= (1 if size == "small" else 3)
