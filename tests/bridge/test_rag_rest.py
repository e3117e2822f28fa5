"""The RAG component over REST, through the real bridge, NATS, the RAG, gateway (offline) and
cache workers and PostgreSQL, on the seed's paths under /api/v1/rag/: ingest a document, ask a
question, stream the answer, page, update, delete; the contract's statuses (201, 204, 202, and
202 for a create or update queued as a job)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from aifleet.embedded import EmbeddedNats, EmbeddedPostgres, EmbeddedValkey
from tests.bridge.conftest import bridge_settings, serving
from tests.bridge.test_echo_rest import events as sse
from tests.support.polling import eventually
from tests.support.rag import CORPUS, configure, running_rag
from workers.runtime.worker import Worker

BASE = "/api/v1/rag"
LARGE = "\n\n".join(
    f"Paragraph {i} says how replica {i} catches up after a restart." for i in range(60)
)


@pytest.fixture(scope="module")
async def rag_worker(
    nats_server: EmbeddedNats, valkey: EmbeddedValkey, postgres: EmbeddedPostgres
) -> AsyncIterator[Worker]:
    with pytest.MonkeyPatch.context() as mp:
        configure(mp, job_threshold_bytes=2048)  # the small CORPUS synchronously, LARGE as a job
        async with running_rag(nats_server.url, valkey.url, postgres.dsn) as w:
            yield w


@pytest.fixture
async def rest(nats_server: EmbeddedNats, rag_worker: Worker) -> AsyncIterator[httpx.AsyncClient]:
    """A dev-mode bridge (auth off, loopback) in front of the RAG worker."""
    settings = bridge_settings(nats_server.url, components=["rag"], request_timeout=30)
    async with serving(settings) as client:
        client.timeout = httpx.Timeout(30)
        yield client


def tenant() -> dict[str, str]:
    return {"X-Tenant-ID": "w" + uuid.uuid4().hex[:12]}


async def ingest(rest: httpx.AsyncClient, h: dict[str, str]) -> None:
    for doc_id, content in CORPUS.items():
        body = {"document_id": doc_id, "title": doc_id, "content": content, "source": "wiki"}
        created = await rest.post(f"{BASE}/documents", json=body, headers=h)
        assert created.status_code == 201, created.text
        assert created.json()["document"]["status"] == "ready"


async def test_ingest_and_ask_over_rest(rest: httpx.AsyncClient) -> None:
    """POST a document (201), GET it, search it, ask a question: the answer cites it."""
    h = tenant()
    await ingest(rest, h)
    got = await rest.get(f"{BASE}/documents/nats", headers=h)
    assert got.status_code == 200, got.text
    assert got.json()["document"]["chunk_count"] >= 1
    found = await rest.post(
        f"{BASE}/search", json={"query_text": "Lua scripts", "top_k": 2}, headers=h
    )
    assert found.status_code == 200, found.text
    assert found.json()["results"][0]["document_id"] == "valkey"
    asked = await rest.post(
        f"{BASE}/query",
        json={"query": "What does pgvector add?", "enable_hallucination_detection": True},
        headers=h,
    )
    assert asked.status_code == 200, asked.text
    answer = asked.json()
    assert answer["answer_mode"] == "extractive"
    assert "[1]" in answer["answer"]
    assert answer["sources"][0]["document_id"] == "postgres"
    assert answer["citations"][0]["document_ids"] == ["postgres"]


async def test_the_answer_streams_as_server_sent_events(rest: httpx.AsyncClient) -> None:
    """query/stream: documents first, then the text, then the whole reply, then `end`."""
    h = tenant()
    await ingest(rest, h)
    response = await rest.post(f"{BASE}/query/stream", json={"query": "What is NATS?"}, headers=h)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    events = sse(response.text)
    assert events[0][1]["documents"][0]["document_id"] == "nats"
    assert events[-1][0] == "end"
    assert events[-2][1]["done"] is True
    assert events[-2][1]["response"]["citations"]


async def test_update_list_delete_over_rest(rest: httpx.AsyncClient) -> None:
    """PUT changes content (new version), GET lists with a source filter and pages, DELETE is
    204 with no body, and the document is gone (404)."""
    h = tenant()
    await ingest(rest, h)
    updated = await rest.put(
        f"{BASE}/documents/nats", json={"content": "NATS was rewritten."}, headers=h
    )
    assert updated.status_code == 200, updated.text
    assert updated.json()["document"]["version"] == 2
    page = await rest.get(
        f"{BASE}/documents", params={"source": "wiki", "page.page_size": 2}, headers=h
    )
    assert page.status_code == 200, page.text
    body = page.json()
    assert len(body["documents"]) == 2
    assert body["page"]["next_page_token"]
    deleted = await rest.delete(f"{BASE}/documents/nats", headers=h)
    assert deleted.status_code == 204, deleted.text
    assert deleted.content == b""
    missing = await rest.get(f"{BASE}/documents/nats", headers=h)
    assert missing.status_code == 404
    assert missing.json()["code"] == "NOT_FOUND"


async def test_bad_input_over_rest(rest: httpx.AsyncClient) -> None:
    """The fleet's error shape over HTTP: 400 naming the field, 413 for a huge document."""
    h = tenant()
    bad = await rest.post(f"{BASE}/search", json={"query_text": "x", "top_k": 500}, headers=h)
    assert bad.status_code == 400
    assert bad.json()["details"]["field"] == "top_k"
    op = await rest.post(
        f"{BASE}/search",
        json={"query_text": "x", "metadata_filters": {"a": {"$regex": "."}}},
        headers=h,
    )
    assert op.status_code == 400
    assert op.json()["details"]["field"] == "metadata_filters.a.$regex"
    empty = await rest.post(f"{BASE}/documents", json={"title": "t", "content": ""}, headers=h)
    assert empty.status_code == 400


async def test_reembed_is_accepted_as_a_job(rest: httpx.AsyncClient) -> None:
    """POST /reembed answers 202 (nothing stale here: no job id)."""
    h = tenant()
    reply = await rest.post(f"{BASE}/reembed", json={}, headers=h)
    assert reply.status_code == 202, reply.text


async def ready(rest: httpx.AsyncClient, h: dict[str, str], document_id: str) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        got = (await rest.get(f"{BASE}/documents/{document_id}", headers=h)).json()["document"]
        return got if got["status"] != "processing" else None

    found = await eventually(probe, timeout=60, what=f"{document_id} ready")
    assert found is not None
    return found


async def test_a_create_or_update_queued_as_a_job_is_202(rest: httpx.AsyncClient) -> None:
    """Large content: 202 with the job id and `processing`; polling the document shows it
    ready; a small create stays 201 and a small update 200."""
    h = tenant()
    body = {"document_id": "big", "title": "Replicas", "content": LARGE}
    queued = await rest.post(f"{BASE}/documents", json=body, headers=h)
    assert queued.status_code == 202, queued.text
    assert queued.json()["job_id"].startswith("rag-create:")
    assert queued.json()["document"]["status"] == "processing"
    assert (await ready(rest, h, "big"))["status"] == "ready"
    changed = await rest.put(
        f"{BASE}/documents/big", json={"content": LARGE.replace("restart", "crash")}, headers=h
    )
    assert changed.status_code == 202, changed.text
    assert changed.json()["job_id"].startswith("rag-update:")
    assert (await ready(rest, h, "big"))["version"] == 2
    small = await rest.post(
        f"{BASE}/documents", json={"title": "s", "content": CORPUS["nats"]}, headers=h
    )
    assert (small.status_code, small.json()["job_id"]) == (201, "")
    renamed = await rest.put(f"{BASE}/documents/big", json={"title": "Replicas 2"}, headers=h)
    assert (renamed.status_code, renamed.json()["job_id"]) == (200, "")
