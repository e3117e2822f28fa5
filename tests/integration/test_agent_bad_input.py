"""Bad input to every agent operation: the documented error, nothing written, still serving.

Wrong types and unknown fields are refused by the codec for every op; missing and invalid
fields, oversized values and another tenant's ids by the handlers. "Nothing written" is
checked in every table of the agent schema.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import msgpack
import pytest
from nats.aio.client import Client as NATS

from aifleet.embedded import EmbeddedNats, EmbeddedPostgres, EmbeddedValkey
from schemas.registry import rpcs_of
from schemas.v1 import agent_pb2
from tests.support import wire
from tests.support.agent import AgentDb, Agents, new_tenant, offline_fleet
from tests.support.wire import assert_error
from workers.runtime.client import Client
from workers.runtime.worker import Worker

OPS = sorted(rpcs_of(agent_pb2.DESCRIPTOR.services_by_name["AgentService"]))
STREAMING = {"chat_stream"}
BIG = "x" * (70 * 1024)
AGENT = "a1"

# A body naming an agent/tool/session/task/memory/run of the other tenant (404 for this one).
FOREIGN: dict[str, dict[str, Any]] = {
    "tool_get": {"tool_id": "t1"},
    "tool_update": {
        "tool_id": "t1",
        "tool": {
            "name": "n",
            "parameters": {"type": "object"},
            "fleet": {"operation": "cache.get"},
        },
    },
    "tool_delete": {"tool_id": "t1"},
    "grant_permission": {
        "user_id": "u",
        "resource_type": "agent",
        "resource_id": AGENT,
        "permission": "read",
    },
    "revoke_permission": {
        "user_id": "u",
        "resource_type": "agent",
        "resource_id": AGENT,
        "permission": "read",
    },
    "get_agent": {"agent_id": AGENT},
    "update_agent": {"agent_id": AGENT, "agent": {"name": "n"}},
    "delete_agent": {"agent_id": AGENT},
    "list_agent_tools": {"agent_id": AGENT},
    "chat": {"agent_id": AGENT, "message": "hi"},
    "list_sessions": {"agent_id": AGENT},
    "get_session": {"agent_id": AGENT, "session_id": "s1"},
    "delete_session": {"agent_id": AGENT, "session_id": "s1"},
    "get_run": {"agent_id": AGENT, "run_id": "r1"},
    "execute": {"agent_id": AGENT, "task_type": "x"},
    "get_task": {"agent_id": AGENT, "task_id": "k1"},
    "cancel_task": {"agent_id": AGENT, "task_id": "k1"},
    "list_tasks": {"agent_id": AGENT},
    "memory_list": {"agent_id": AGENT},
    "memory_search": {"agent_id": AGENT, "query": "q"},
    "memory_insert": {"agent_id": AGENT, "text": "t"},
    "memory_delete": {"agent_id": AGENT, "memory_id": "m1"},
    "memory_delete_user": {"agent_id": AGENT, "user_id": "u"},
    "memory_blocks": {"agent_id": AGENT},
    "memory_set_block": {"agent_id": AGENT, "label": "human", "value": "v"},
}
# (body, field) that is refused with 400 because a required field is missing or invalid.
INVALID: dict[str, tuple[dict[str, Any], int]] = {
    "tool_create": (
        {
            "tool": {
                "name": "bad name!",
                "parameters": {"type": "object"},
                "fleet": {"operation": "cache.get"},
            }
        },
        400,
    ),
    "tool_get": ({}, 400),
    "tool_update": ({"tool_id": "t1"}, 400),
    "tool_delete": ({"tool_id": "../etc"}, 400),
    "tool_list": ({"page": {"page_token": "forged.token"}}, 400),
    "grant_permission": (
        {"user_id": "u", "resource_type": "agent", "resource_id": AGENT, "permission": "own"},
        400,
    ),
    "revoke_permission": (
        {"user_id": "", "resource_type": "agent", "resource_id": AGENT, "permission": "read"},
        400,
    ),
    "check_permission": (
        {"user_id": "u", "resource_type": "robot", "resource_id": AGENT, "permission": "read"},
        400,
    ),
    "list_permissions": ({}, 400),
    "create_agent": ({"agent": {"name": ""}}, 400),
    "get_agent": ({}, 400),
    "update_agent": ({"agent_id": AGENT, "agent": {"name": "n", "max_turns": 500}}, 400),
    "delete_agent": ({"agent_id": "has space"}, 400),
    "list_agents": ({"page": {"page_token": "x"}}, 400),
    "list_agent_tools": ({}, 400),
    "chat": ({"agent_id": AGENT, "message": ""}, 400),
    "chat_stream": ({"agent_id": AGENT}, 400),
    "list_sessions": ({"agent_id": AGENT, "user_id": "bad user"}, 400),
    "get_session": ({"agent_id": AGENT}, 400),
    "delete_session": ({"agent_id": AGENT, "session_id": ""}, 400),
    "get_run": ({"agent_id": AGENT}, 400),
    "execute": ({"agent_id": AGENT, "task_type": ""}, 400),
    "get_task": ({"agent_id": AGENT}, 400),
    "cancel_task": ({"agent_id": AGENT, "task_id": ""}, 400),
    "list_tasks": ({}, 400),
    "memory_list": ({"agent_id": AGENT, "user_id": "not ok"}, 400),
    "memory_search": ({"agent_id": AGENT, "query": ""}, 400),
    "memory_insert": ({"agent_id": AGENT, "text": " "}, 400),
    "memory_delete": ({"agent_id": AGENT}, 400),
    "memory_delete_user": ({"agent_id": AGENT}, 400),
    "memory_blocks": ({}, 400),
    "memory_set_block": ({"agent_id": AGENT, "label": "human", "value": "\u0000"}, 400),
}
TOO_LARGE: dict[str, dict[str, Any]] = {
    "chat": {"agent_id": AGENT, "message": BIG},
    "create_agent": {"agent": {"name": "n", "metadata": {"k": BIG * 4}}},
    "tool_create": {
        "tool": {
            "name": "n",
            "parameters": {"type": "object", "description": BIG},
            "fleet": {"operation": "cache.get"},
        }
    },
    "memory_insert": {"agent_id": AGENT, "text": BIG},
}


# What PostgreSQL cannot store, in a field no pattern covers: 400 naming its path (was 500).
UNSTORABLE: dict[str, tuple[str, dict[str, Any], str]] = {
    "agent system prompt": (
        "create_agent",
        {"agent": {"name": "n", "system_prompt": "a\u0000b"}},
        "agent.system_prompt",
    ),
    "agent metadata": (
        "update_agent",
        {"agent_id": AGENT, "agent": {"name": "n", "metadata": {"k": ["ok", "\u0000"]}}},
        "agent.metadata.k[1]",
    ),
    "agent metadata, infinite number": (
        "create_agent",
        {"agent": {"name": "n", "metadata": {"k": float("inf")}}},
        "agent",
    ),
    "tool description": (
        "tool_create",
        {
            "tool": {
                "name": "n",
                "description": "\u0000",
                "parameters": {"type": "object"},
                "fleet": {"operation": "cache.get"},
            }
        },
        "tool.description",
    ),
    "task parameters": (
        "execute",
        {"agent_id": AGENT, "task_type": "report", "parameters": {"note": "a\u0000"}},
        "parameters",
    ),
    "task parameters, infinite number": (
        "execute",
        {"agent_id": AGENT, "task_type": "report", "parameters": {"n": float("-inf")}},
        "parameters",
    ),
    "memory metadata": (
        "memory_insert",
        {"agent_id": AGENT, "text": "t", "metadata": {"k\u0000": 1}},
        "metadata",
    ),
}


@pytest.fixture(scope="module")
async def offline_agents(
    nats_server: EmbeddedNats, valkey: EmbeddedValkey, postgres: EmbeddedPostgres
) -> AsyncIterator[Worker]:
    async with offline_fleet(nats_server, valkey, postgres) as worker:
        yield worker


@pytest.fixture(scope="module")
async def db(postgres: EmbeddedPostgres) -> AsyncIterator[AgentDb]:
    async with AgentDb.connect(postgres.dsn) as agent_db:
        yield agent_db


async def other_tenant_with_everything(client: Client) -> str:
    """A tenant holding an agent, tool, session, run, task and memory under the ids above."""
    owner = Agents(client, new_tenant("own"))
    await owner("tool_create", {"tool_id": "t1", "tool": FOREIGN["tool_update"]["tool"]})
    memory = {"archival": True, "core_blocks": [{"label": "human"}]}
    await owner("create_agent", {"agent_id": AGENT, "agent": {"name": "A", "memory": memory}})
    await owner("chat", {"agent_id": AGENT, "message": "hi", "session_id": "s1"})
    await owner("execute", {"agent_id": AGENT, "task_type": "x", "task_id": "k1"})
    await owner("memory_insert", {"agent_id": AGENT, "text": "fact"})
    return owner.tenant


async def nothing_of(db: AgentDb, tenant: str) -> None:
    counts = await db.row_counts(tenant)
    assert counts == dict.fromkeys(db.tables, 0)


def wrong_type(op: str) -> dict[str, Any]:
    """The request's first string field given a number."""
    request = rpcs_of(agent_pb2.DESCRIPTOR.services_by_name["AgentService"])[op].request
    for field in request.DESCRIPTOR.fields:
        if field.type == field.TYPE_STRING and not field.is_repeated:
            return {field.name: 5}
    return {"page": {"page_size": "many"}}


@pytest.mark.parametrize("fmt", ["json", "msgpack", "protobuf"])
async def test_wrong_types_and_unknown_fields_are_refused_by_every_op(
    nc: NATS, offline_agents: Worker, db: AgentDb, fmt: str
) -> None:
    """A number where a string goes, a field the contract lacks, bytes that are no message:
    400 for every op, nothing written."""
    tenant = new_tenant("bad")
    for op in OPS:
        if fmt == "protobuf":
            bodies = [b"\xff\xff\xff"]
        else:
            bodies = [
                wire.encode(fmt, "agent", op, b) for b in (wrong_type(op), {"no_such_field": 1})
            ]
        for data in bodies:
            msg = await wire.send(nc, tenant, "agent", op, fmt, data)
            assert_error(msg, fmt, 400, "INVALID_ARGUMENT")
    await nothing_of(db, tenant)


@pytest.mark.parametrize("op", sorted(INVALID))
async def test_missing_and_invalid_fields_are_400_and_change_nothing(
    nc: NATS, offline_agents: Worker, db: AgentDb, op: str
) -> None:
    """Every op names the field it refuses; nothing of the tenant is stored."""
    tenant = new_tenant("inv")
    body, status = INVALID[op]
    msg = await wire.send(nc, tenant, "agent", op, "json", json.dumps(body).encode())
    message = assert_error(msg, "json", status, "INVALID_ARGUMENT")
    assert message
    await nothing_of(db, tenant)


async def tenant_with_agent(nc: NATS, prefix: str) -> str:
    """A new tenant holding the agent AGENT (archival memory on)."""
    tenant = new_tenant(prefix)
    client = Agents(Client(nc, timeout=30.0), tenant)
    await client(
        "create_agent", {"agent_id": AGENT, "agent": {"name": "A", "memory": {"archival": True}}}
    )
    return tenant


@pytest.mark.parametrize("op", sorted(TOO_LARGE))
async def test_oversized_values_are_413(
    nc: NATS, offline_agents: Worker, db: AgentDb, op: str
) -> None:
    """Over a component limit: 413 with the field; nothing stored."""
    tenant = await tenant_with_agent(nc, "big")
    before = await db.row_counts(tenant)
    msg = await wire.send(nc, tenant, "agent", op, "json", json.dumps(TOO_LARGE[op]).encode())
    assert_error(msg, "json", 413, "PAYLOAD_TOO_LARGE")
    assert await db.row_counts(tenant) == before


@pytest.mark.parametrize("case", sorted(UNSTORABLE))
async def test_values_postgresql_cannot_store_are_400_naming_the_path(
    nc: NATS, offline_agents: Worker, db: AgentDb, case: str
) -> None:
    """A NUL character or an infinite number is refused with its field; nothing stored."""
    tenant = await tenant_with_agent(nc, "nul")
    before = await db.row_counts(tenant)
    op, body, field = UNSTORABLE[case]
    msg = await wire.send(nc, tenant, "agent", op, "msgpack", msgpack.packb(body))
    assert_error(msg, "msgpack", 400, "INVALID_ARGUMENT")
    assert msgpack.unpackb(msg.data)["details"]["field"] == field
    assert await db.row_counts(tenant) == before


async def test_another_tenants_ids_are_not_found_by_any_op(
    nc: NATS, offline_agents: Worker, db: AgentDb
) -> None:
    """Ids that exist under another tenant are 404 for every op naming them."""
    client = Client(nc, timeout=30.0)
    owner = await other_tenant_with_everything(client)
    before = await db.row_counts(owner)
    tenant = new_tenant("iso")
    for op, body in FOREIGN.items():
        msg = await wire.send(nc, tenant, "agent", op, "json", json.dumps(body).encode())
        assert_error(msg, "json", 404, "NOT_FOUND")
    await nothing_of(db, tenant)
    assert await db.row_counts(owner) == before
