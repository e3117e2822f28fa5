"""`aifleet ingest` as a person runs it: files uploaded over NATS, followed until searchable."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from aifleet.embedded import EmbeddedNats, EmbeddedPostgres
from tests.integration.test_cli import aifleet
from tests.support import documents, fake_rag
from tests.support.fleet import running_worker
from workers.ingestion import service as ingestion
from workers.runtime.worker import Worker


@pytest.fixture(scope="module")
async def worker(nats_server: EmbeddedNats, postgres: EmbeddedPostgres) -> AsyncIterator[Worker]:
    async with running_worker(
        [ingestion.component, fake_rag.component], nats_server.url, database_url=postgres.dsn
    ) as w:
        yield w


async def test_ingest_follow_uploads_each_file_and_waits_until_ingested(
    worker: Worker, nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    """Two files, one bar each; the table names their type, status and RAG document; exit 0."""
    tenant = "c" + uuid.uuid4().hex[:12]
    pdf = tmp_path / "log.pdf"
    pdf.write_bytes(documents.pdf(["One.", documents.SENTENCES["pdf"], "Three."]))
    notes = tmp_path / "dome.md"
    notes.write_bytes(documents.MARKDOWN)
    code, out, err = await aifleet(
        nats_server.url, "ingest", str(pdf), str(notes), "--tenant", tenant, "--follow"
    )
    assert code == 0, err
    assert "log.pdf" in err  # the progress bars go to stderr
    lines = [line for line in out.splitlines() if "ingested" in line]
    assert len(lines) == 2, out
    assert any("pdf" in line and "file-" in line for line in lines)
    docs = [d for (t, _), d in fake_rag.STATE.documents.items() if t == tenant]
    assert any(documents.SENTENCES["pdf"] in d.content for d in docs)


async def test_ingest_reports_a_refused_file_and_exits_1(
    worker: Worker, nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    """An unsupported file is listed as refused with the 415 reason; the exit status is 1."""
    image = tmp_path / "photo.pdf"
    image.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    code, out, _ = await aifleet(nats_server.url, "ingest", str(image), "--tenant", "cli-refused")
    assert code == 1
    assert "refused" in out
    assert "415" in out


async def test_ingest_of_a_missing_path_is_a_usage_error(
    worker: Worker, nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    """A path that is no file: exit 2 before anything is sent."""
    code, _, err = await aifleet(nats_server.url, "ingest", str(tmp_path / "nope.pdf"))
    assert code == 2
    assert "not a file" in err
