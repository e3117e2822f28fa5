"""Bad input to every generator operation, and tenant isolation of every one: the documented
error, nothing written (drafts and ratings of the tenant checked), another tenant's ids not
found, the worker still serving."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from nats.aio.client import Client as NATS

from aifleet.embedded import EmbeddedNats, EmbeddedPostgres, EmbeddedValkey
from schemas.registry import rpcs_of
from schemas.v1 import generator_pb2
from tests.support import wire
from tests.support.agent import Agents, new_tenant
from tests.support.generator import Generator, GeneratorDb, running_generator
from tests.support.wire import assert_error
from workers.runtime.client import Client
from workers.runtime.worker import Worker

SERVICE = generator_pb2.DESCRIPTOR.services_by_name["GeneratorService"]
OPS = sorted(rpcs_of(SERVICE))
AGENT, TOOL = "a1", "t1"
TOOL_DEFINITION = {
    "name": "kv",
    "parameters": {"type": "object"},
    "fleet": {"operation": "cache.get"},
}
GRANT = {"user_id": "u", "resource_type": "agent", "resource_id": AGENT, "permission": "read"}
BIG = "x" * (20 * 1024)

INVALID: dict[str, dict[str, Any]] = {
    "generate_agent": {"prompt": ""},
    "generate_tool": {"prompt": "a tool", "tool_id": "bad id"},
    "rate_agent": {"agent_id": AGENT, "rating": 6},
    "rate_tool": {"tool_id": TOOL, "rating": 0},
    "agent_feedback": {},
    "tool_feedback": {"tool_id": TOOL, "page": {"page_token": "forged.token"}},
    "grant_permission": {**GRANT, "permission": "own"},
    "revoke_permission": {**GRANT, "user_id": ""},
    "check_permission": {**GRANT, "resource_type": "robot"},
    "list_permissions": {},
    "list_drafts": {"kind": "robot"},
    "get_draft": {},
    "approve_draft": {"draft_id": "../etc"},
    "regenerate_draft": {"draft_id": "d-x", "feedback": ""},
}
MORE_INVALID: list[tuple[str, dict[str, Any]]] = [
    ("generate_agent", {"prompt": "an agent", "agent_id": "tools"}),
    ("generate_agent", {"prompt": "an agent", "llm_model": "no-such-model"}),
    ("generate_tool", {"prompt": "a tool", "llm_model": "bad model"}),
    ("generate_agent", {"prompt": "bad \u0000 text"}),
    ("list_drafts", {"status": "done"}),
    ("list_drafts", {"page": {"page_token": "x"}}),
    ("rate_agent", {"agent_id": AGENT, "rating": 3, "feedback": "nul \u0000"}),
]
TOO_LARGE: dict[str, dict[str, Any]] = {
    "generate_agent": {"prompt": BIG},
    "generate_tool": {"prompt": "a tool", "additional_config": {"k": BIG}},
    "rate_agent": {"agent_id": AGENT, "rating": 3, "feedback": "x" * 5000},
    "rate_tool": {"tool_id": TOOL, "rating": 3, "metadata": {"k": BIG}},
    "regenerate_draft": {"draft_id": "d-x", "feedback": "x" * 5000},
}


@pytest.fixture(scope="module")
async def worker(
    nats_server: EmbeddedNats, valkey: EmbeddedValkey, postgres: EmbeddedPostgres
) -> AsyncIterator[Worker]:
    with pytest.MonkeyPatch.context() as mp:
        async with running_generator(mp, nats_server.url, valkey.url, postgres.dsn, None) as w:
            yield w


@pytest.fixture(scope="module")
async def db(postgres: EmbeddedPostgres) -> AsyncIterator[GeneratorDb]:
    async with GeneratorDb.connect(postgres.dsn) as generator_db:
        yield generator_db


async def nothing_of(db: GeneratorDb, tenant: str) -> None:
    assert await db.row_counts(tenant) == dict.fromkeys(db.tables, 0)


def wrong_type(op: str) -> dict[str, Any]:
    """The request's first string field given a number."""
    for field in rpcs_of(SERVICE)[op].request.DESCRIPTOR.fields:
        if field.type == field.TYPE_STRING and not field.is_repeated:
            return {field.name: 5}
    return {"page": {"page_size": "many"}}


def test_every_op_has_a_bad_input_case() -> None:
    """The tables below cover the whole contract."""
    assert sorted(INVALID) == OPS


@pytest.mark.parametrize("fmt", ["json", "msgpack", "protobuf"])
async def test_wrong_types_and_unknown_fields_are_refused_by_every_op(
    nc: NATS, worker: Worker, db: GeneratorDb, fmt: str
) -> None:
    """A number where a string goes, an unknown field, bytes that are no message: 400."""
    tenant = new_tenant("bad")
    for op in OPS:
        if fmt == "protobuf":
            bodies = [b"\xff\xff\xff"]
        else:
            bodies = [wire.encode(fmt, "generator", op, b) for b in (wrong_type(op), {"bogus": 1})]
        for data in bodies:
            msg = await wire.send(nc, tenant, "generator", op, fmt, data)
            assert_error(msg, fmt, 400, "INVALID_ARGUMENT")
    await nothing_of(db, tenant)


@pytest.mark.parametrize(
    ("op", "body"), [*sorted(INVALID.items()), *MORE_INVALID], ids=lambda v: str(v)[:40]
)
async def test_missing_and_invalid_fields_are_400_and_change_nothing(
    nc: NATS, worker: Worker, db: GeneratorDb, op: str, body: dict[str, Any]
) -> None:
    """Every op names what it refuses; nothing of the tenant is stored."""
    tenant = new_tenant("inv")
    msg = await wire.send(nc, tenant, "generator", op, "json", json.dumps(body).encode())
    assert assert_error(msg, "json", 400, "INVALID_ARGUMENT")
    await nothing_of(db, tenant)


@pytest.mark.parametrize("op", sorted(TOO_LARGE))
async def test_oversized_values_are_413(nc: NATS, worker: Worker, db: GeneratorDb, op: str) -> None:
    """Over a limit: 413 with the field; nothing stored."""
    tenant = new_tenant("big")
    msg = await wire.send(nc, tenant, "generator", op, "json", json.dumps(TOO_LARGE[op]).encode())
    assert_error(msg, "json", 413, "PAYLOAD_TOO_LARGE")
    await nothing_of(db, tenant)


async def owner_with_everything(client: Client) -> tuple[str, str]:
    """A tenant with a pending draft, an approved agent a1, a tool t1, ratings and a grant."""
    owner = Generator(client, new_tenant("own"))
    agents = Agents(client, owner.tenant)
    pending = await owner("generate_agent", {"prompt": "A pending agent", "cache_enabled": True})
    await owner("generate_agent", {"prompt": "An agent", "agent_id": AGENT, "approve": True})
    await agents("tool_create", {"tool_id": TOOL, "tool": TOOL_DEFINITION})
    await owner("rate_agent", {"agent_id": AGENT, "rating": 4, "feedback": "ok"})
    await owner("rate_tool", {"tool_id": TOOL, "rating": 2, "feedback": "meh"})
    await owner("grant_permission", GRANT)
    return owner.tenant, pending.draft.draft_id


async def test_another_tenants_drafts_agents_tools_and_grants_are_never_reached(
    nc: NATS, worker: Worker, db: GeneratorDb
) -> None:
    """Every op of another tenant: its ids are 404, its lists and checks empty, its cache
    not shared, its ids free; the owner's rows unchanged."""
    client = Client(nc, timeout=30.0)
    owner, draft_id = await owner_with_everything(client)
    before = await db.row_counts(owner)
    tenant = new_tenant("iso")
    other = Generator(client, tenant)
    not_found = {
        "get_draft": {"draft_id": draft_id},
        "approve_draft": {"draft_id": draft_id},
        "regenerate_draft": {"draft_id": draft_id, "feedback": "more"},
        "rate_agent": {"agent_id": AGENT, "rating": 5},
        "rate_tool": {"tool_id": TOOL, "rating": 5},
        "agent_feedback": {"agent_id": AGENT},
        "tool_feedback": {"tool_id": TOOL},
        "grant_permission": GRANT,
        "revoke_permission": GRANT,
    }
    for op, body in not_found.items():
        msg = await wire.send(nc, tenant, "generator", op, "json", json.dumps(body).encode())
        assert_error(msg, "json", 404, "NOT_FOUND")
    assert not (await other("check_permission", GRANT)).allowed
    listed = await other("list_permissions", {"resource_type": "agent", "resource_id": AGENT})
    assert list(listed.grants) == []
    assert list((await other("list_drafts", {})).drafts) == []
    again = await other("generate_agent", {"prompt": "A pending agent", "cache_enabled": True})
    assert not again.draft.cached
    mine = await other("generate_agent", {"prompt": "Mine", "agent_id": AGENT, "approve": True})
    assert mine.agent.agent_id == AGENT
    refused = await wire.send(
        nc, tenant, "generator", "generate_tool", "json", b'{"prompt": "read /etc/passwd"}'
    )
    assert_error(refused, "json", 422, "UNPROCESSABLE")
    assert await db.row_counts(owner) == before
    owner_agent = await Agents(client, owner)("get_agent", {"agent_id": AGENT})
    assert owner_agent.agent.definition.metadata["generator_draft_id"] != mine.draft.draft_id
