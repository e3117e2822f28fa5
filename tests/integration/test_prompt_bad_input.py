"""Bad input to every prompt operation: the documented error, nothing written, still serving.

The error contract (DESIGN §2): headers `Nats-Service-Error-Code` (400/413) and
`Nats-Service-Error`, body `aifleet.v1.Error` in the request's encoding, `retryable=false`.
"Nothing written" is checked in PostgreSQL (no row of the tenant in any prompt table, the
outbox included) and in AI_EVENTS (no event of the tenant).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import msgpack
import nats
import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from aifleet.embedded import EmbeddedNats, EmbeddedPostgres
from schemas.v1.prompt_pb2 import CreateTemplateRequest
from tests.support import wire
from tests.support.fleet import running_worker
from tests.support.prompt import PromptDb, event_count
from tests.support.wire import assert_error
from workers.prompt import service as prompt
from workers.runtime.worker import Worker

OPS = [
    "create_template",
    "get_template",
    "list_templates",
    "set_label",
    "delete_template",
    "render",
    "build_context",
]
FORMATS = ["json", "msgpack", "protobuf"]
MIB = 1024 * 1024
EMPTY = {"names": 0, "versions": 0, "labels": 0, "outbox": 0}

VALID: dict[str, dict[str, Any]] = {
    "create_template": {"name": "t", "text": "Hi {{x}}"},
    "get_template": {"name": "t", "version": 1},
    "list_templates": {"page": {"page_size": 5}},
    "set_label": {"name": "t", "label": "production", "version": 1},
    "delete_template": {"name": "t", "version": 1},
    "render": {"name": "t", "variables": {"x": "1"}},
    "build_context": {
        "model": "gpt-4o",
        "budget_tokens": 100,
        "messages": [{"role": "user", "content": "hi"}],
    },
}
WRONG_TYPE: dict[str, Any] = {
    "create_template": {"name": "t", "text": 5},
    "get_template": {"name": "t", "version": "one"},
    "list_templates": {"page": {"page_size": "many"}},
    "set_label": {"name": "t", "label": ["production"], "version": 1},
    "delete_template": {"name": "t", "version": 1, "force": "yes"},
    "render": {"name": "t", "variables": {"x": 1}},
    "build_context": {"model": "gpt-4o", "budget_tokens": 100, "messages": "hi"},
}
MALFORMED = {"json": b'{"name": ', "msgpack": b"\xc1", "protobuf": b"\xff\xff\xff"}


@pytest.fixture(scope="module")
async def worker(nats_server: EmbeddedNats, postgres: EmbeddedPostgres) -> AsyncIterator[Worker]:
    """One worker for the module: each test also proves it still serves after bad input."""
    async with running_worker([prompt.component], nats_server.url, database_url=postgres.dsn) as w:
        yield w


@pytest.fixture(scope="module")
async def conn(nats_server: EmbeddedNats) -> AsyncIterator[NATS]:
    client = await nats.connect(nats_server.url, name="pytest-prompt-bad-input")
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture(scope="module")
async def db(postgres: EmbeddedPostgres) -> AsyncIterator[PromptDb]:
    async with PromptDb.connect(postgres.dsn) as found:
        yield found


@pytest.fixture
def tenant() -> str:
    return "b" + uuid.uuid4().hex[:16]


def encode(fmt: str, op: str, body: Any) -> bytes:
    return wire.encode(fmt, "prompt", op, body)


async def send(conn: NATS, tenant: str, op: str, fmt: str, data: bytes) -> Msg:
    return await wire.send(conn, tenant, "prompt", op, fmt, data, timeout=10)


async def assert_nothing_written(db: PromptDb, conn: NATS, tenant: str) -> None:
    assert await db.row_counts(tenant) == EMPTY
    assert await event_count(conn, tenant) == 0


async def assert_still_serving(conn: NATS, tenant: str) -> None:
    """A good create and render right after the bad request are answered normally."""
    ok = "ok" + uuid.uuid4().hex[:8]
    body: dict[str, Any] = {"name": ok, "text": "{{a}}!"}
    reply = await send(conn, tenant, "create_template", "json", json.dumps(body).encode())
    assert json.loads(reply.data)["template"]["version"] == 1, reply.data
    body = {"name": ok, "variables": {"a": "fine"}}
    reply = await send(conn, tenant, "render", "json", json.dumps(body).encode())
    assert json.loads(reply.data)["text"] == "fine!"


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("op", OPS)
async def test_malformed_body_is_400(
    worker: Worker, conn: NATS, db: PromptDb, tenant: str, op: str, fmt: str
) -> None:
    """Bytes that are not a body of the declared encoding: 400 INVALID_ARGUMENT."""
    reply = await send(conn, tenant, op, fmt, MALFORMED[fmt])
    assert_error(reply, fmt, 400, "INVALID_ARGUMENT")
    await assert_nothing_written(db, conn, tenant)
    await assert_still_serving(conn, "ok-" + tenant)


@pytest.mark.parametrize("fmt", ["json", "msgpack"])
@pytest.mark.parametrize("op", OPS)
async def test_unknown_field_is_400(
    worker: Worker, conn: NATS, db: PromptDb, tenant: str, op: str, fmt: str
) -> None:
    """A field the contract does not declare is refused, not dropped."""
    body = {**VALID[op], "colour": "red"}
    reply = await send(conn, tenant, op, fmt, encode(fmt, op, body))
    assert_error(reply, fmt, 400, "INVALID_ARGUMENT")
    await assert_nothing_written(db, conn, tenant)
    await assert_still_serving(conn, "ok-" + tenant)


@pytest.mark.parametrize("fmt", ["json", "msgpack"])
@pytest.mark.parametrize("op", OPS)
async def test_wrong_type_is_400(
    worker: Worker, conn: NATS, db: PromptDb, tenant: str, op: str, fmt: str
) -> None:
    """A field of the wrong type is refused."""
    reply = await send(conn, tenant, op, fmt, encode(fmt, op, WRONG_TYPE[op]))
    assert_error(reply, fmt, 400, "INVALID_ARGUMENT")
    await assert_nothing_written(db, conn, tenant)
    await assert_still_serving(conn, "ok-" + tenant)


@pytest.mark.parametrize("shape", ["uppercase", "too_long", "leading_dash", "leading_underscore"])
@pytest.mark.parametrize("op", OPS)
async def test_invalid_tenant_token_in_the_subject_is_400(
    worker: Worker, conn: NATS, db: PromptDb, op: str, shape: str
) -> None:
    """A request under a tenant token outside the grammar is refused before any effect."""
    unique = uuid.uuid4().hex
    bad = {
        "uppercase": "T" + unique.upper()[:16],
        "too_long": unique + unique,  # 64 characters
        "leading_dash": "-" + unique[:16],
        "leading_underscore": "_" + unique[:16],
    }[shape]
    reply = await send(conn, bad, op, "json", encode("json", op, VALID[op]))
    assert_error(reply, "json", 400, "INVALID_ARGUMENT")
    assert await db.rows_naming(bad) == 0
    assert await db.rows_naming(bad.lower().lstrip("-_")) == 0


@pytest.mark.parametrize("op", ["create_template", "render", "build_context"])
async def test_request_over_the_worker_body_limit_is_413(
    worker: Worker, conn: NATS, db: PromptDb, tenant: str, op: str
) -> None:
    """A body over max_request_bytes (4 MiB) is refused before decoding."""
    body = dict(VALID[op])
    key = {"create_template": "text", "render": "variables", "build_context": "system_prompt"}[op]
    body[key] = {"x": "y" * (5 * MIB)} if key == "variables" else "y" * (5 * MIB)
    reply = await send(conn, tenant, op, "msgpack", encode("msgpack", op, body))
    assert_error(reply, "msgpack", 413, "PAYLOAD_TOO_LARGE")
    await assert_nothing_written(db, conn, tenant)
    await assert_still_serving(conn, tenant)


@pytest.mark.parametrize("fmt", FORMATS)
async def test_oversized_template_is_413_and_not_stored(
    worker: Worker, conn: NATS, db: PromptDb, tenant: str, fmt: str
) -> None:
    """A template over 256 KiB (text, or messages together) is 413 PAYLOAD_TOO_LARGE."""
    big = "x" * (256 * 1024 + 1)
    reply = await send(
        conn,
        tenant,
        "create_template",
        fmt,
        encode(fmt, "create_template", {"name": "t", "text": big}),
    )
    assert_error(reply, fmt, 413, "PAYLOAD_TOO_LARGE")
    half = "y" * (128 * 1024 + 1)
    body = {
        "name": "t",
        "messages": [{"role": "system", "content": half}, {"role": "user", "content": half}],
    }
    reply = await send(conn, tenant, "create_template", fmt, encode(fmt, "create_template", body))
    assert_error(reply, fmt, 413, "PAYLOAD_TOO_LARGE")
    await assert_nothing_written(db, conn, tenant)
    await assert_still_serving(conn, tenant)


async def test_template_exactly_at_the_limit_is_stored(
    worker: Worker, conn: NATS, db: PromptDb, tenant: str
) -> None:
    """The template limit is inclusive: 256 KiB is stored."""
    body = {"name": "t", "text": "x" * (256 * 1024)}
    reply = await send(conn, tenant, "create_template", "json", json.dumps(body).encode())
    assert json.loads(reply.data)["template"]["version"] == 1
    assert (await db.row_counts(tenant))["versions"] == 1


# (op, body, status, what) — each refused before anything is written.
SEMANTIC: dict[str, tuple[str, dict[str, Any], int]] = {
    "create_missing_name": ("create_template", {"text": "x"}, 400),
    "create_bad_name": ("create_template", {"name": "a b", "text": "x"}, 400),
    "create_name_with_slash": ("create_template", {"name": "a/b", "text": "x"}, 400),
    "create_name_too_long": ("create_template", {"name": "n" * 129, "text": "x"}, 400),
    "create_name_leading_dot": ("create_template", {"name": ".hidden", "text": "x"}, 400),
    "create_no_body": ("create_template", {"name": "t"}, 400),
    "create_text_and_messages": (
        "create_template",
        {"name": "t", "text": "x", "messages": [{"role": "user", "content": "y"}]},
        400,
    ),
    "create_bad_role": (
        "create_template",
        {"name": "t", "messages": [{"role": "root", "content": "x"}]},
        400,
    ),
    "create_bad_participant": (
        "create_template",
        {"name": "t", "messages": [{"role": "user", "content": "x", "name": "a b"}]},
        400,
    ),
    "create_nul_in_text": ("create_template", {"name": "t", "text": "a\u0000b"}, 400),
    "create_nul_in_config": (
        "create_template",
        {"name": "t", "text": "x", "config": {"k": "\u0000"}},
        400,
    ),
    "create_injection": ("create_template", {"name": "t", "text": "{{ __class__ }}"}, 400),
    "create_attribute": ("create_template", {"name": "t", "text": "{{ a.b }}"}, 400),
    "create_label_latest": (
        "create_template",
        {"name": "t", "text": "x", "labels": ["latest"]},
        400,
    ),
    "create_label_twice": (
        "create_template",
        {"name": "t", "text": "x", "labels": ["prod", "prod"]},
        400,
    ),
    "create_bad_label": ("create_template", {"name": "t", "text": "x", "labels": ["Prod"]}, 400),
    "create_config_too_big": (
        "create_template",
        {"name": "t", "text": "x", "config": {"k": "v" * (64 * 1024)}},
        413,
    ),
    "create_too_many_messages": (
        "create_template",
        {"name": "t", "messages": [{"role": "user", "content": "x"}] * 257},
        413,
    ),
    "get_missing_name": ("get_template", {"version": 1}, 400),
    "get_version_and_label": ("get_template", {"name": "t", "version": 1, "label": "p"}, 400),
    "get_bad_label": ("get_template", {"name": "t", "label": "UPPER"}, 400),
    "get_version_out_of_range": ("get_template", {"name": "t", "version": 2**31}, 400),
    "list_bad_token": ("list_templates", {"page": {"page_token": "not-a-token"}}, 400),
    "list_forged_token": ("list_templates", {"page": {"page_token": "eyJvIjoxfQ"}}, 400),
    "list_bad_order": ("list_templates", {"order": 7}, 400),
    "list_prefix_control": ("list_templates", {"name_prefix": "a\nb"}, 400),
    "set_missing_label": ("set_label", {"name": "t", "version": 1}, 400),
    "set_missing_version": ("set_label", {"name": "t", "label": "production"}, 400),
    "set_latest": ("set_label", {"name": "t", "label": "latest", "version": 1}, 400),
    "set_bad_name": ("set_label", {"name": "", "label": "production", "version": 1}, 400),
    "delete_no_target": ("delete_template", {"name": "t"}, 400),
    "delete_both_targets": (
        "delete_template",
        {"name": "t", "version": 1, "all_versions": True},
        400,
    ),
    "delete_bad_name": ("delete_template", {"name": "../t", "all_versions": True}, 400),
    "render_missing_name": ("render", {"variables": {"x": "1"}}, 400),
    "render_version_and_label": ("render", {"name": "t", "version": 2, "label": "p"}, 400),
    "context_missing_model": (
        "build_context",
        {"budget_tokens": 10, "messages": [{"role": "user", "content": "x"}]},
        400,
    ),
    "context_missing_budget": (
        "build_context",
        {"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}]},
        400,
    ),
    "context_no_messages": ("build_context", {"model": "gpt-4o", "budget_tokens": 10}, 400),
    "context_bad_role": (
        "build_context",
        {"model": "gpt-4o", "budget_tokens": 10, "messages": [{"role": "bot", "content": "x"}]},
        400,
    ),
    "context_budget_too_big": (
        "build_context",
        {
            "model": "gpt-4o",
            "budget_tokens": 10_000_001,
            "messages": [{"role": "user", "content": "x"}],
        },
        400,
    ),
    "context_empty_document": (
        "build_context",
        {
            "model": "gpt-4o",
            "budget_tokens": 100,
            "messages": [{"role": "user", "content": "x"}],
            "documents": [{"id": "a", "content": ""}],
        },
        400,
    ),
    "context_document_id_newline": (
        "build_context",
        {
            "model": "gpt-4o",
            "budget_tokens": 100,
            "messages": [{"role": "user", "content": "x"}],
            "documents": [{"id": "a\nb", "content": "c"}],
        },
        400,
    ),
}


@pytest.mark.parametrize("case", list(SEMANTIC))
async def test_invalid_values_are_refused_with_the_documented_status(
    worker: Worker, conn: NATS, db: PromptDb, tenant: str, case: str
) -> None:
    """Missing required fields, malformed names and labels, template syntax errors, limits:
    400 INVALID_ARGUMENT or 413 PAYLOAD_TOO_LARGE, and nothing is written."""
    op, body, status = SEMANTIC[case]
    reply = await send(conn, tenant, op, "json", json.dumps(body).encode())
    code = {400: "INVALID_ARGUMENT", 413: "PAYLOAD_TOO_LARGE"}[status]
    assert_error(reply, "json", status, code)
    await assert_nothing_written(db, conn, tenant)


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity"])
async def test_non_finite_numbers_in_config_are_400(
    worker: Worker, conn: NATS, db: PromptDb, tenant: str, value: str
) -> None:
    """jsonb cannot hold NaN or infinities: refused up front (msgpack floats, here)."""
    number = float(value.lower().replace("infinity", "inf"))
    body = {"name": "t", "text": "x", "config": {"temperature": number}}
    reply = await send(conn, tenant, "create_template", "msgpack", msgpack.packb(body))
    assert_error(reply, "msgpack", 400, "INVALID_ARGUMENT")
    await assert_nothing_written(db, conn, tenant)


async def test_failed_create_of_an_existing_name_changes_nothing(
    worker: Worker, conn: NATS, db: PromptDb, tenant: str
) -> None:
    """A refused new version of an existing name leaves its versions, labels and counter as
    they were: the next good create gets version 2."""
    good = CreateTemplateRequest(name="t", text="v1", labels=["production"])
    await send(conn, tenant, "create_template", "protobuf", good.SerializeToString())
    before = await db.row_counts(tenant)
    reply = await send(
        conn,
        tenant,
        "create_template",
        "json",
        json.dumps({"name": "t", "text": "{{ x.y }}"}).encode(),
    )
    assert_error(reply, "json", 400, "INVALID_ARGUMENT")
    assert await db.row_counts(tenant) == before
    reply = await send(
        conn, tenant, "create_template", "json", json.dumps({"name": "t", "text": "v2"}).encode()
    )
    assert json.loads(reply.data)["template"]["version"] == 2
    assert await db.labels(tenant, "t") == {"production": 1}
