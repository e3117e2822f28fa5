"""Acceptance of ingestion with the real RAG: `aifleet up` (what `make run` starts), over REST.

One fleet for the module: embedded nats-server, PostgreSQL and Valkey, every component and the
HTTP bridge in one process, as a user starts it. Five files generated here are uploaded as
multipart forms; each must reach `ingested`, and `rag.query` must find a sentence of each with
a citation naming the file (and, for the PDF, the page).
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from aifleet.embedded import free_port
from tests.conftest import NATS_CONFIG, postgres_home
from tests.support import documents
from tests.support.fleet_up import clean_env, interrupt

FILLER = (
    "Page {n} of the harbour log lists the tides, the wind and the names of the boats that "
    "stayed in port. The clerk copied the weather from the board by the office door, and the "
    "harbour master signed every entry before noon. "
)
# Six pages of about 900 characters: a chunk (1,000 characters by default) spans one or two.
PDF_PAGES = [
    FILLER.format(n=n) * 2
    + (documents.SENTENCES["pdf"] + " " if n == 3 else "")
    + FILLER.format(n=n) * 2
    for n in range(1, 7)
]
CSV = (
    b"item,material,price\n"
    b"Copper kettle,copper,41.50\n"
    b"Iron skillet,cast iron,29.00\n"
    b"Oak stool,oak,65.00\n"
)
MARKDOWN = (
    "# Observatory\n\nIntro paragraph about the hill and its road.\n\n"
    f"## Dome\n\n{documents.SENTENCES['markdown']}\n\n"
    "## Telescope\n\nThe refractor was ground by hand in the old workshop.\n"
).encode()

# name, bytes, the sentence a question must find, the page it is on (PDF only)
FILES: list[tuple[str, bytes, str, int | None]] = [
    ("harbour-log.pdf", documents.pdf(PDF_PAGES), documents.SENTENCES["pdf"], 3),
    (
        "glacier-tours.docx",
        documents.docx_file(
            [("h1", "Tours"), ("p", "The season opens in May."), ("p", documents.SENTENCES["docx"])]
        ),
        documents.SENTENCES["docx"],
        None,
    ),
    ("harbour.html", documents.HTML_PAGE, documents.SENTENCES["html"], None),
    ("kitchen-prices.csv", CSV, "Copper kettle", None),
    ("observatory.md", MARKDOWN, documents.SENTENCES["markdown"], None),
]
QUESTIONS = {
    "harbour-log.pdf": "How many ships did the lighthouse keeper log during the autumn storm?",
    "glacier-tours.docx": "What happened to glacier tour revenue after the cable car opened?",
    "harbour.html": "Where do migrating swallows rest before crossing the sea?",
    "kitchen-prices.csv": "What is the price of the copper kettle?",
    "observatory.md": "How does the observatory dome rotate?",
}


@pytest.fixture(scope="module")
async def fleet(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[httpx.AsyncClient]:
    """`aifleet up` in a fresh directory with the repository's nats-server.conf, and an HTTP
    client for its bridge; stopped with Ctrl-C (SIGINT) at the end."""
    with postgres_home() as home:
        shutil.copy(NATS_CONFIG, home / "nats-server.conf")
        bridge_port = free_port()
        env = clean_env()
        log_path = home / "up.log"
        with log_path.open("wb") as log:
            up = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "aifleet.cli", "up",
                "--nats-port", str(free_port()), "--redis-port", str(free_port()),
                "--bridge-port", str(bridge_port),
                cwd=home, env=env, stdout=log, stderr=asyncio.subprocess.STDOUT,
            )  # fmt: skip
        try:
            deadline = time.monotonic() + 90
            while "aifleet is up" not in log_path.read_text(errors="replace"):
                assert up.returncode is None, "aifleet up exited: " + log_path.read_text()[-3000:]
                assert time.monotonic() < deadline, log_path.read_text()[-3000:]
                await asyncio.sleep(0.1)
            async with httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{bridge_port}", timeout=30
            ) as client:
                yield client
        finally:
            await interrupt(up)


@pytest.fixture(scope="module")
def tenant() -> str:
    return "e2e" + uuid.uuid4().hex[:12]


async def wait_ingested(client: httpx.AsyncClient, tenant: str, file_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 90
    while True:
        reply = await client.get(
            f"/api/v1/ingestion/files/{file_id}", headers={"X-Tenant-ID": tenant}
        )
        assert reply.status_code == 200, reply.text
        file = reply.json()["file"]
        if file["status"] in ("ingested", "failed"):
            return dict(file)
        assert time.monotonic() < deadline, f"{file_id} still {file['status']}"
        await asyncio.sleep(0.2)


@pytest.fixture(scope="module")
async def ingested(fleet: httpx.AsyncClient, tenant: str) -> dict[str, dict[str, Any]]:
    """The five files uploaded through the bridge and waited for, by file name."""
    files: dict[str, dict[str, Any]] = {}
    for name, data, _, _ in FILES:
        reply = await fleet.post(
            "/api/v1/ingestion/upload",
            headers={"X-Tenant-ID": tenant},
            files={"file": (name, data, "application/octet-stream")},
            data={"title": f"Title of {name}", "metadata": '{"suite": "acceptance"}'},
        )
        assert reply.status_code == 201, reply.text
        files[name] = reply.json()
    return {
        name: await wait_ingested(fleet, tenant, upload["file_id"])
        for name, upload in files.items()
    }


async def test_the_bridge_is_ready_when_up_says_so(fleet: httpx.AsyncClient) -> None:
    """Right after "aifleet is up" the bridge serves: NATS connected, every component found."""
    reply = await fleet.get("/readyz")
    assert reply.status_code == 200, reply.text


@pytest.mark.parametrize("name", [f[0] for f in FILES])
async def test_uploaded_file_reaches_ingested(
    ingested: dict[str, dict[str, Any]], name: str
) -> None:
    """Each generated file, uploaded as a multipart form, ends `ingested` with a RAG document."""
    file = ingested[name]
    assert file["status"] == "ingested", file.get("failure")
    assert file["document_id"] == f"file-{file['file_id']}"


@pytest.mark.parametrize(("name", "sentence", "page"), [(f[0], f[2], f[3]) for f in FILES])
async def test_query_cites_the_file_holding_the_sentence(
    fleet: httpx.AsyncClient,
    tenant: str,
    ingested: dict[str, dict[str, Any]],
    name: str,
    sentence: str,
    page: int | None,
) -> None:
    """`rag.query` over REST answers a question about each file with the sentence, cited: the
    cited chunk holds it and names the file (its source and file id), and the PDF's page."""
    reply = await fleet.post(
        "/api/v1/rag/query",
        headers={"X-Tenant-ID": tenant},
        json={"query": QUESTIONS[name], "top_k": 3},
    )
    assert reply.status_code == 200, reply.text
    body = reply.json()
    answer = body["answer"]
    # The answer sentence holding the sentence, exactly as written (the PDF's layout wrapped
    # it, cleaning joined it again), and the chunks its citation points at.
    cited = [
        body["documents"][index]
        for citation in body.get("citations", [])
        if sentence in answer[int(citation["start"]) : int(citation["end"])]
        for index in citation.get("result_indexes", [])
    ]
    hits = [d for d in cited if sentence in d["text"]]
    assert hits, body
    hit = hits[0]
    assert hit["source"] == name
    assert hit["metadata"]["file_id"] == ingested[name]["file_id"]
    assert hit["metadata"]["file_name"] == name
    if page is not None:
        # The sentence's offset in the document lies on its page, and the chunk spans it.
        starts = hit["metadata"]["page_starts"]
        offset = int(hit["start"]) + hit["text"].index(sentence)
        assert starts[page - 1] <= offset < starts[page]
        assert hit["page_start"] <= page <= hit["page_end"], hit
        assert hit["page_end"] - hit["page_start"] <= 1
