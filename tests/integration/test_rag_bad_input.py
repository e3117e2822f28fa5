"""Bad input to every RAG operation: the documented error, nothing written, still serving.

"Nothing written" is checked in PostgreSQL (no row of the tenant in any rag table) and in
AI_EVENTS (no rag event of the tenant).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from aifleet.embedded import EmbeddedNats, EmbeddedPostgres, EmbeddedValkey
from subjects import STREAM_EVENTS, event_subject
from tests.support import wire
from tests.support.rag import RagDb, configure, running_rag
from tests.support.wire import assert_error
from workers.runtime.worker import Worker

OPS = [
    "create_document",
    "get_document",
    "update_document",
    "delete_document",
    "list_documents",
    "search",
    "query",
    "reembed",
]
FORMATS = ["json", "msgpack", "protobuf"]
EMPTY = {"documents": 0, "chunks": 0, "corpora": 0, "lexemes": 0}
LIMIT = 16 * 1024

VALID: dict[str, dict[str, Any]] = {
    "create_document": {"document_id": "d", "title": "t", "content": "Some text."},
    "get_document": {"document_id": "d"},
    "update_document": {"document_id": "d", "title": "x"},
    "delete_document": {"document_id": "d"},
    "list_documents": {"page": {"page_size": 5}},
    "search": {"query_text": "text"},
    "query": {"query": "what?"},
    "reembed": {},
}
WRONG_TYPE: dict[str, dict[str, Any]] = {
    "create_document": {"title": "t", "content": 5},
    "get_document": {"document_id": ["d"]},
    "update_document": {"document_id": "d", "reprocess": "yes"},
    "delete_document": {"document_id": 7},
    "list_documents": {"page": {"page_size": "many"}},
    "search": {"query_text": "x", "top_k": "ten"},
    "query": {"query": {"text": "x"}},
    "reembed": {"x": 1},
}
MALFORMED = {"json": b'{"query": ', "msgpack": b"\xc1", "protobuf": b"\xff\xff\xff"}

# (op, body, status) — each refused before anything is embedded or written.
SEMANTIC: dict[str, tuple[str, dict[str, Any], int]] = {
    "create_no_title": ("create_document", {"content": "x"}, 400),
    "create_no_content": ("create_document", {"title": "t"}, 400),
    "create_blank_content": ("create_document", {"title": "t", "content": " \n\t "}, 400),
    "create_nul_content": ("create_document", {"title": "t", "content": "a\u0000b"}, 400),
    "create_title_newline": ("create_document", {"title": "a\nb", "content": "x"}, 400),
    "create_bad_id": ("create_document", {"document_id": "a b", "title": "t", "content": "x"}, 400),
    "create_id_too_long": (
        "create_document",
        {"document_id": "d" * 129, "title": "t", "content": "x"},
        400,
    ),
    "create_chunk_too_small": (
        "create_document",
        {"title": "t", "content": "x", "chunk_size": 10},
        400,
    ),
    "create_chunk_too_large": (
        "create_document",
        {"title": "t", "content": "x", "chunk_size": 5000},
        400,
    ),
    "create_overlap_too_large": (
        "create_document",
        {"title": "t", "content": "x", "chunk_size": 100, "chunk_overlap": 80},
        400,
    ),
    "create_oversized": ("create_document", {"title": "t", "content": "x" * (LIMIT + 1)}, 413),
    "create_metadata_too_large": (
        "create_document",
        {"title": "t", "content": "x", "metadata": {"k": "v" * 20_000}},
        413,
    ),
    "create_metadata_nul": (
        "create_document",
        {"title": "t", "content": "x", "metadata": {"k": "\u0000"}},
        400,
    ),
    "get_no_id": ("get_document", {}, 400),
    "get_bad_id": ("get_document", {"document_id": "../etc"}, 400),
    "get_unknown": ("get_document", {"document_id": "nope"}, 404),
    "update_unknown": ("update_document", {"document_id": "nope", "title": "x"}, 404),
    "update_blank_content": ("update_document", {"document_id": "d", "content": "  "}, 400),
    "update_bad_chunk": ("update_document", {"document_id": "d", "chunk_size": 1}, 400),
    "delete_no_id": ("delete_document", {}, 400),
    "delete_unknown": ("delete_document", {"document_id": "nope"}, 404),
    "list_bad_status": ("list_documents", {"status": "done"}, 400),
    "list_bad_filter": ("list_documents", {"metadata_filters": {"k": {"$regex": "x"}}}, 400),
    "list_bad_token": ("list_documents", {"page": {"page_token": "bm90IGEgdG9rZW4"}}, 400),
    "search_nothing": ("search", {}, 400),
    "search_top_k": ("search", {"query_text": "x", "top_k": 101}, 400),
    "search_threshold": ("search", {"query_text": "x", "threshold": 1.5}, 400),
    "search_dimension": ("search", {"query_embedding": [0.1] * 383}, 400),
    "search_zero_vector": ("search", {"query_embedding": [0.0] * 384}, 400),
    "search_filter_operator": (
        "search",
        {"query_text": "x", "metadata_filters": {"year": {"$near": 3}}},
        400,
    ),
    "search_filter_nested": (
        "search",
        {"query_text": "x", "metadata_filters": {"a": {"b": 1}}},
        400,
    ),
    "search_mode": ("search", {"query_text": "x", "mode": "semantic"}, 400),
    "search_rerank": ("search", {"query_text": "x", "rerank": "cross-encoder"}, 400),
    "search_keyword_without_text": (
        "search",
        {"query_embedding": [0.1] * 384, "mode": "keyword"},
        400,
    ),
    "search_text_too_long": ("search", {"query_text": "x" * 5000}, 400),
    "query_no_query": ("query", {}, 400),
    "query_top_k": ("query", {"query": "x", "top_k": 1000}, 400),
    "query_answer_mode": ("query", {"query": "x", "answer_mode": "poetic"}, 400),
    "query_max_tokens": ("query", {"query": "x", "max_tokens": 1_000_000}, 400),
    "query_filter": ("query", {"query": "x", "metadata_filters": {"k": {"$in": []}}}, 400),
}


@pytest.fixture(scope="module")
async def worker(
    nats_server: EmbeddedNats, valkey: EmbeddedValkey, postgres: EmbeddedPostgres
) -> AsyncIterator[Worker]:
    with pytest.MonkeyPatch.context() as mp:
        configure(mp, max_document_bytes=LIMIT, job_threshold_bytes=LIMIT)
        async with running_rag(nats_server.url, valkey.url, postgres.dsn) as w:
            yield w


@pytest.fixture(scope="module")
async def db(postgres: EmbeddedPostgres) -> AsyncIterator[RagDb]:
    async with RagDb.connect(postgres.dsn) as found:
        yield found


@pytest.fixture
def tenant() -> str:
    return "b" + uuid.uuid4().hex[:16]


def encode(fmt: str, op: str, body: Any) -> bytes:
    return wire.encode(fmt, "rag", op, body)


async def send(nc: NATS, tenant: str, op: str, fmt: str, data: bytes) -> Msg:
    return await wire.send(nc, tenant, "rag", op, fmt, data, timeout=60)


async def event_count(nc: NATS, tenant: str) -> int:
    info = await nc.jetstream().stream_info(
        STREAM_EVENTS, subjects_filter=event_subject(tenant, "rag", "*")
    )
    return sum((info.state.subjects or {}).values())


async def assert_nothing_written(db: RagDb, nc: NATS, tenant: str) -> None:
    assert await db.row_counts(tenant) == EMPTY
    assert await event_count(nc, tenant) == 0


async def assert_still_serving(nc: NATS, tenant: str) -> None:
    """A good create and search right after the bad request are answered normally."""
    body = {"title": "ok", "content": "The worker still serves after bad input."}
    reply = await send(nc, tenant, "create_document", "json", json.dumps(body).encode())
    assert json.loads(reply.data)["document"]["status"] == "ready", reply.data
    reply = await send(nc, tenant, "search", "json", b'{"query_text": "still serves"}')
    assert json.loads(reply.data)["results"], reply.data


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("op", OPS)
async def test_malformed_body_is_400(
    worker: Worker, nc: NATS, db: RagDb, tenant: str, op: str, fmt: str
) -> None:
    """Bytes that are not a body of the declared encoding: 400 INVALID_ARGUMENT."""
    reply = await send(nc, tenant, op, fmt, MALFORMED[fmt])
    assert_error(reply, fmt, 400, "INVALID_ARGUMENT")
    await assert_nothing_written(db, nc, tenant)


@pytest.mark.parametrize("fmt", ["json", "msgpack"])
@pytest.mark.parametrize("op", OPS)
async def test_unknown_field_is_400(
    worker: Worker, nc: NATS, db: RagDb, tenant: str, op: str, fmt: str
) -> None:
    """A field the contract does not declare is refused, not dropped."""
    reply = await send(nc, tenant, op, fmt, encode(fmt, op, {**VALID[op], "colour": "red"}))
    assert_error(reply, fmt, 400, "INVALID_ARGUMENT")
    await assert_nothing_written(db, nc, tenant)


@pytest.mark.parametrize("fmt", ["json", "msgpack"])
@pytest.mark.parametrize("op", OPS)
async def test_wrong_type_is_400(
    worker: Worker, nc: NATS, db: RagDb, tenant: str, op: str, fmt: str
) -> None:
    """A field of the wrong type is refused."""
    reply = await send(nc, tenant, op, fmt, encode(fmt, op, WRONG_TYPE[op]))
    assert_error(reply, fmt, 400, "INVALID_ARGUMENT")
    await assert_nothing_written(db, nc, tenant)


@pytest.mark.parametrize("case", sorted(SEMANTIC))
async def test_invalid_request_is_refused_and_changes_nothing(
    worker: Worker, nc: NATS, db: RagDb, tenant: str, case: str
) -> None:
    """Missing, malformed or out-of-range fields: the documented status naming the field."""
    op, body, status = SEMANTIC[case]
    code = {400: "INVALID_ARGUMENT", 404: "NOT_FOUND", 413: "PAYLOAD_TOO_LARGE"}[status]
    fmt = "msgpack" if status == 413 else "json"
    reply = await send(nc, tenant, op, fmt, encode(fmt, op, body))
    assert_error(reply, fmt, status, code)
    await assert_nothing_written(db, nc, tenant)
    await assert_still_serving(nc, "ok-" + tenant)


@pytest.mark.parametrize("op", OPS)
async def test_invalid_tenant_token_in_the_subject_is_400(
    worker: Worker, nc: NATS, db: RagDb, op: str
) -> None:
    """A request under a tenant token outside the grammar is refused before any effect."""
    bad = "T" + uuid.uuid4().hex.upper()[:16]
    reply = await send(nc, bad, op, "json", encode("json", op, VALID[op]))
    assert_error(reply, "json", 400, "INVALID_ARGUMENT")
    assert await db.row_counts(bad) == EMPTY
    assert await db.row_counts(bad.lower()) == EMPTY


async def test_a_document_at_the_limit_is_stored(
    worker: Worker, nc: NATS, db: RagDb, tenant: str
) -> None:
    """The size limit is inclusive: exactly max_document_bytes is ingested."""
    body = {"title": "t", "content": ("word " * (LIMIT // 5))[:LIMIT]}
    reply = await send(nc, tenant, "create_document", "json", json.dumps(body).encode())
    assert json.loads(reply.data)["document"]["status"] == "ready", reply.data[:300]
    assert (await db.row_counts(tenant))["documents"] == 1
