"""Ingestion over REST: multipart uploads streamed by the bridge into the Object Store, then
through ingestion.upload, the processing job and the RAG stand-in; real bridge, NATS, worker,
PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from nats.aio.client import Client as NATS

from aifleet.embedded import EmbeddedNats, EmbeddedPostgres
from tests.bridge.conftest import bridge_settings, serving
from tests.bridge.test_limits import connect, head, response_of
from tests.support import documents, fake_rag
from tests.support.fleet import running_worker
from workers.ingestion import service as ingestion
from workers.runtime.files import FileStore
from workers.runtime.worker import Worker

LIMIT = 256 * 1024
BASE = "/api/v1/ingestion"


@pytest.fixture(scope="module")
async def ingestion_worker(
    nats_server: EmbeddedNats, postgres: EmbeddedPostgres
) -> AsyncIterator[Worker]:
    with pytest.MonkeyPatch.context() as env:
        env.setenv("AIFLEET_INGESTION_MAX_FILE_BYTES", str(LIMIT))
        async with running_worker(
            [ingestion.component, fake_rag.component],
            nats_server.url,
            database_url=postgres.dsn,
        ) as w:
            yield w


@pytest.fixture
async def rest(
    nats_server: EmbeddedNats, ingestion_worker: Worker, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[httpx.AsyncClient]:
    """A dev-mode bridge whose upload limit is LIMIT (the same variable as the worker's)."""
    monkeypatch.setenv("AIFLEET_INGESTION_MAX_FILE_BYTES", str(LIMIT))
    async with serving(bridge_settings(nats_server.url, components=["ingestion"])) as client:
        yield client


def tenant() -> dict[str, str]:
    return {"X-Tenant-ID": "u" + uuid.uuid4().hex[:12]}


async def objects(nats_url: str, tenant_id: str) -> list[str]:
    """The tenant's object names in the files bucket (read as an operator would)."""
    import nats

    nc: NATS = await nats.connect(nats_url)
    try:
        store = await FileStore.open(nc.jetstream())
        return [f.name async for f in store.list(tenant_id)]
    finally:
        await nc.close()


async def ingested(
    rest: httpx.AsyncClient, headers: dict[str, str], file_id: str
) -> dict[str, object]:
    for _ in range(300):
        reply = await rest.get(f"{BASE}/files/{file_id}", headers=headers)
        assert reply.status_code == 200, reply.text
        found: dict[str, object] = reply.json()["file"]
        if found["status"] in ("ingested", "failed"):
            return found
        await asyncio.sleep(0.1)
    raise AssertionError(f"{file_id} not processed")


@pytest.mark.parametrize(
    ("kind", "name", "content_type", "data"),
    [
        (
            "pdf",
            "log.pdf",
            "application/pdf",
            documents.pdf(["Cover.", documents.SENTENCES["pdf"]]),
        ),
        (
            "docx",
            "tours.docx",
            "application/octet-stream",
            documents.docx_file([("h1", "T"), ("p", documents.SENTENCES["docx"])]),
        ),
        ("html", "harbour.html", "text/html", documents.HTML_PAGE),
        ("csv", "kettles.csv", "text/csv", documents.CSV),
        ("markdown", "dome.md", "text/markdown", documents.MARKDOWN),
    ],
)
async def test_multipart_upload_of_each_type_reaches_rag(
    rest: httpx.AsyncClient, kind: str, name: str, content_type: str, data: bytes
) -> None:
    """201 with the detected type; the file reaches `ingested`; RAG holds the sentence."""
    h = tenant()
    reply = await rest.post(
        f"{BASE}/upload",
        files={"file": (name, data, content_type)},
        data={"title": f"The {kind}", "metadata": json.dumps({"source": "test"})},
        headers=h,
    )
    assert reply.status_code == 201, reply.text
    body = reply.json()
    assert (body["detected_type"], body["file_name"], body["size_bytes"]) == (
        kind,
        name,
        str(len(data)),
    )
    done = await ingested(rest, h, body["file_id"])
    assert done["status"] == "ingested", done
    document = fake_rag.STATE.documents[(h["X-Tenant-ID"], str(done["document_id"]))]
    assert documents.SENTENCES[kind] in document.content
    assert document.title == f"The {kind}"


async def test_a_lying_extension_is_detected_from_the_bytes(rest: httpx.AsyncClient) -> None:
    """A PDF sent as notes.txt with text/plain is a PDF."""
    h = tenant()
    data = documents.pdf(["Hidden in a PDF named like a note."])
    reply = await rest.post(
        f"{BASE}/upload", files={"file": ("notes.txt", data, "text/plain")}, headers=h
    )
    assert reply.status_code == 201, reply.text
    assert reply.json()["detected_type"] == "pdf"


async def test_an_unsupported_type_is_415_and_nothing_is_kept(
    rest: httpx.AsyncClient, nats_server: EmbeddedNats
) -> None:
    """A PNG named report.pdf: 415 naming png; no object stays in the tenant's bucket part."""
    h = tenant()
    png = b"\x89PNG\r\n\x1a\n" + bytes(300)
    reply = await rest.post(
        f"{BASE}/upload", files={"file": ("report.pdf", png, "application/pdf")}, headers=h
    )
    assert reply.status_code == 415, reply.text
    assert reply.json()["code"] == "UNSUPPORTED_MEDIA_TYPE"
    assert reply.json()["details"]["detected_type"] == "png"
    assert await objects(nats_server.url, h["X-Tenant-ID"]) == []


async def test_an_oversized_upload_is_413_while_reading(
    rest: httpx.AsyncClient, nats_server: EmbeddedNats
) -> None:
    """A chunked body (no Content-Length) past the limit is cut off with 413 while it is still
    arriving; nothing is stored. On a raw socket: an HTTP client would hide when it happened."""
    h = tenant()
    boundary = "b0undary"
    reader, writer = await connect(rest)
    writer.write(
        head(
            "POST",
            f"{BASE}/upload",
            f"X-Tenant-ID: {h['X-Tenant-ID']}",
            f"Content-Type: multipart/form-data; boundary={boundary}",
            "Transfer-Encoding: chunked",
        )
    )
    opening = form_part(boundary, 'name="file"; filename="big.txt"', b"")[:-2]
    writer.write(b"%x\r\n%s\r\n" % (len(opening), opening))
    chunk = b"word " * 13107  # 64 KiB; the limit is 256 KiB
    sent, status, data = 0, 0, b""
    for _ in range(64):  # 4 MiB if nothing stopped it
        try:
            writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            await writer.drain()
        except ConnectionError:
            break
        sent += len(chunk)
        try:
            status, data = await response_of(reader, timeout=0.05)
            break
        except TimeoutError:
            continue
    if not status:
        status, data = await response_of(reader)
    writer.close()
    assert status == 413, data[:300]
    assert b"PAYLOAD_TOO_LARGE" in data
    assert sent <= LIMIT + 4 * len(chunk)
    assert await objects(nats_server.url, h["X-Tenant-ID"]) == []


async def test_a_declared_length_over_the_limit_is_refused_before_reading(
    rest: httpx.AsyncClient,
) -> None:
    """Content-Length far over the limit: 413 and close, before any of the body is sent."""
    reader, writer = await connect(rest)
    writer.write(
        head(
            "POST",
            f"{BASE}/upload",
            "X-Tenant-ID: declared",
            "Content-Type: multipart/form-data; boundary=x",
            f"Content-Length: {LIMIT + 8 * 1024 * 1024}",
        )
    )
    await writer.drain()
    status, data = await response_of(reader)
    writer.close()
    assert status == 413
    assert b"connection: close" in data.lower()


def form_part(boundary: str, disposition: str, value: bytes) -> bytes:
    head = f"--{boundary}\r\nContent-Disposition: form-data; {disposition}\r\n\r\n"
    return head.encode() + value + b"\r\n"


async def test_fields_after_the_file_part_are_read(rest: httpx.AsyncClient) -> None:
    """title, auto_ingest and metadata may follow the file in the form."""
    h = tenant()
    boundary = "xyz"
    parts = [
        form_part(boundary, 'name="file"; filename="n.md"', documents.MARKDOWN),
        form_part(boundary, 'name="title"', b"Afterwards"),
        form_part(boundary, 'name="auto_ingest"', b"false"),
        f"--{boundary}--\r\n".encode(),
    ]
    reply = await rest.post(
        f"{BASE}/upload",
        content=b"".join(parts),
        headers={**h, "Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    assert reply.status_code == 201, reply.text
    assert reply.json()["status"] == "uploaded"
    assert reply.json()["file"]["title"] == "Afterwards"


@pytest.mark.parametrize(
    ("data", "files", "field"),
    [
        ({"metadata": "not json"}, {"file": ("a.txt", b"hello", "text/plain")}, "metadata"),
        ({"metadata": "[1, 2]"}, {"file": ("a.txt", b"hello", "text/plain")}, "metadata"),
        ({"auto_ingest": "maybe"}, {"file": ("a.txt", b"hello", "text/plain")}, "auto_ingest"),
        ({"colour": "red"}, {"file": ("a.txt", b"hello", "text/plain")}, "colour"),
        ({"title": "no file"}, {"other": ("a.txt", b"hello", "text/plain")}, "other"),
    ],
)
async def test_a_bad_form_is_400_and_nothing_is_kept(
    rest: httpx.AsyncClient,
    nats_server: EmbeddedNats,
    data: dict[str, str],
    files: dict[str, tuple[str, bytes, str]],
    field: str,
) -> None:
    """Bad JSON fields, unknown fields, a missing file part: 400 naming the field."""
    h = tenant()
    reply = await rest.post(f"{BASE}/upload", data=data, files=files, headers=h)
    assert reply.status_code == 400, reply.text
    assert reply.json()["details"]["field"] == field
    assert await objects(nats_server.url, h["X-Tenant-ID"]) == []


async def test_process_list_and_delete_over_rest(rest: httpx.AsyncClient) -> None:
    """process answers 202 with the run, list pages the files, delete removes the file."""
    h = tenant()
    up = await rest.post(
        f"{BASE}/upload",
        files={"file": ("k.csv", documents.CSV, "text/csv")},
        data={"auto_ingest": "false"},
        headers=h,
    )
    file_id = up.json()["file_id"]
    run = await rest.post(f"{BASE}/files/{file_id}/process", json={"auto_ingest": True}, headers=h)
    assert run.status_code == 202, run.text
    assert run.json()["run_id"]
    assert (await ingested(rest, h, file_id))["status"] == "ingested"
    listed = await rest.get(f"{BASE}/files", params={"status": "ingested"}, headers=h)
    assert [f["file_id"] for f in listed.json()["files"]] == [file_id]
    gone = await rest.delete(
        f"{BASE}/files/{file_id}", params={"delete_document": "true"}, headers=h
    )
    assert gone.status_code == 200, gone.text
    assert gone.json() == {"deleted": True, "document_deleted": True}
    assert (await rest.get(f"{BASE}/files/{file_id}", headers=h)).status_code == 404
    other = await rest.get(f"{BASE}/files/{file_id}", headers=tenant())
    assert other.status_code == 404
