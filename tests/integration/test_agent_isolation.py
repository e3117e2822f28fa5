"""Two tenants with the same ids for everything: each sees, changes and deletes only its own."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from nats.aio.client import Client as NATS

from aifleet.embedded import EmbeddedNats, EmbeddedPostgres, EmbeddedValkey
from schemas.errors import NotFound
from tests.support.agent import AgentDb, Agents, new_tenant, offline_fleet
from tests.support.polling import eventually
from workers.runtime.client import Client
from workers.runtime.worker import Worker

TOOL = {"name": "kv", "parameters": {"type": "object"}, "fleet": {"operation": "cache.get"}}
MEMORY = {"archival": True, "core_blocks": [{"label": "human"}]}


@pytest.fixture(scope="module")
async def offline_agents(
    nats_server: EmbeddedNats, valkey: EmbeddedValkey, postgres: EmbeddedPostgres
) -> AsyncIterator[Worker]:
    async with offline_fleet(nats_server, valkey, postgres) as worker:
        yield worker


@pytest.fixture
async def db(postgres: EmbeddedPostgres) -> AsyncIterator[AgentDb]:
    async with AgentDb.connect(postgres.dsn) as agent_db:
        yield agent_db


async def populate(agents: Agents, word: str) -> None:
    await agents("tool_create", {"tool_id": "t", "tool": {**TOOL, "description": word}})
    await agents(
        "create_agent", {"agent_id": "a", "agent": {"name": word, "tools": ["t"], "memory": MEMORY}}
    )
    await agents("chat", {"agent_id": "a", "message": word, "session_id": "s"})
    await agents("execute", {"agent_id": "a", "task_type": word, "task_id": "k"})
    await agents("memory_insert", {"agent_id": "a", "text": f"{word} fact"})
    await agents("memory_set_block", {"agent_id": "a", "label": "human", "value": word})
    await agents(
        "grant_permission",
        {"user_id": "u", "resource_type": "agent", "resource_id": "a", "permission": "read"},
    )


async def test_same_ids_in_two_tenants_never_meet(
    nc: NATS, offline_agents: Worker, db: AgentDb
) -> None:
    """Agents, tools, sessions, tasks, memories, blocks and grants stay with their tenant."""
    client = Client(nc, timeout=30.0)
    one, two = Agents(client, new_tenant("one")), Agents(client, new_tenant("two"))
    await populate(one, "alpha")
    await populate(two, "beta")
    for agents, word in ((one, "alpha"), (two, "beta")):
        assert (await agents("get_agent", {"agent_id": "a"})).agent.definition.name == word
        assert (await agents("tool_get", {"tool_id": "t"})).tool.definition.description == word
        assert [a.agent_id for a in (await agents("list_agents", {})).agents] == ["a"]
        session = await agents("get_session", {"agent_id": "a", "session_id": "s"})
        assert session.messages[0].message.content == word
        task = (await agents("get_task", {"agent_id": "a", "task_id": "k"})).task
        assert task.task_type == word
        memories = (await agents("memory_list", {"agent_id": "a"})).memories
        assert [m.text for m in memories] == [f"{word} fact"]
        found = (await agents("memory_search", {"agent_id": "a", "query": "fact"})).memories
        assert [m.text for m in found] == [f"{word} fact"]
        assert (await agents("memory_blocks", {"agent_id": "a"})).blocks[0].value == word
        grants = await agents("list_permissions", {"resource_type": "agent", "resource_id": "a"})
        assert [g.user_id for g in grants.grants] == ["u"]

    async def both_done() -> bool:
        statuses = [
            (await a("get_task", {"agent_id": "a", "task_id": "k"})).task.status for a in (one, two)
        ]
        return statuses == ["completed", "completed"]

    await eventually(both_done, timeout=30, what="both tasks done")
    before = await db.row_counts(two.tenant)
    await one("delete_agent", {"agent_id": "a"})
    await one("tool_delete", {"tool_id": "t"})
    with pytest.raises(NotFound):
        await one("get_agent", {"agent_id": "a"})
    assert await db.row_counts(two.tenant) == before
    assert (await two("get_agent", {"agent_id": "a"})).agent.definition.name == "beta"
    assert sum((await db.row_counts(one.tenant)).values()) == 0
