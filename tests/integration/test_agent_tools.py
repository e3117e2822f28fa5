"""Agents as tools (handoff and its depth limit), recall over past sessions, archival memory
through the model's tools, and cancelling a running task; the fake provider scripted."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from nats.aio.client import Client as NATS

from aifleet.embedded import EmbeddedNats, EmbeddedPostgres, EmbeddedValkey
from schemas.v1.agent_pb2 import Task
from tests.support.agent import (
    SCRIPTED,
    Agents,
    agent_models,
    new_tenant,
    reply,
    running_agents,
    script,
)
from tests.support.fake_openai import FakeOpenAI, Fault
from tests.support.polling import eventually
from workers.runtime.client import Client
from workers.runtime.worker import Worker


@pytest.fixture(scope="module")
async def fake() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI() as served:
        yield served


@pytest.fixture(scope="module")
async def worker(
    nats_server: EmbeddedNats,
    valkey: EmbeddedValkey,
    postgres: EmbeddedPostgres,
    fake: FakeOpenAI,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Worker]:
    config = agent_models(fake, tmp_path_factory.mktemp("agent-tools") / "models.yaml", [])
    with pytest.MonkeyPatch.context() as mp:
        async with running_agents(
            mp, nats_server.url, valkey.url, postgres.dsn, config, max_handoff_depth="1"
        ) as w:
            yield w


@pytest.fixture
def agents(nc: NATS, worker: Worker, fake: FakeOpenAI) -> Agents:
    fake.reset()
    return Agents(Client(nc, timeout=30.0), new_tenant("tools"))


def handoff_tool(agent_id: str, name: str) -> dict[str, object]:
    return {"name": name, "description": f"Ask {agent_id}", "agent": {"agent_id": agent_id}}


async def test_an_agent_hands_off_to_another_and_nesting_stops_at_the_depth_limit(
    agents: Agents, fake: FakeOpenAI
) -> None:
    """A asks B (depth 1, allowed); B's own handoff to C (depth 2) is refused to B's model."""
    for agent_id in ("c", "b", "a"):
        tools = []
        if agent_id != "c":
            target = {"a": "b", "b": "c"}[agent_id]
            await agents(
                "tool_create",
                {"tool_id": f"ask-{target}", "tool": handoff_tool(target, f"ask_{target}")},
            )
            tools = [f"ask-{target}"]
        await agents(
            "create_agent",
            {"agent_id": agent_id, "agent": {"name": agent_id, "model": SCRIPTED, "tools": tools}},
        )
    script(
        fake,
        reply(None, ("ask_b", {"message": "what does C say?"})),  # A
        reply(None, ("ask_c", {"message": "hello C"})),  # B, refused: too deep
        reply("C is out of reach"),  # B answers
        reply("B says: C is out of reach"),  # A answers
    )
    answer = await agents("chat", {"agent_id": "a", "message": "go"})
    assert answer.message == "B says: C is out of reach"
    asked = fake.requests("attacker")
    assert len(asked) == 4
    refused = asked[2].body["messages"][-1]
    assert (refused["role"], "nested too deeply" in refused["content"]) == ("tool", True)
    handed = asked[3].body["messages"][-1]
    assert handed["content"] == "C is out of reach"


async def test_recall_and_archival_memory_work_through_the_models_tools(
    agents: Agents, fake: FakeOpenAI
) -> None:
    """conversation_search finds an earlier session's words; archival insert then search
    returns the stored fact, all for the same user."""
    memory = {"archival": True, "recall": True}
    await agents(
        "create_agent",
        {"agent_id": "m", "agent": {"name": "M", "model": SCRIPTED, "memory": memory}},
    )
    me = agents.as_user("u1")
    await agents(
        "grant_permission",
        {"user_id": "u1", "resource_type": "agent", "resource_id": "m", "permission": "execute"},
    )
    script(fake, reply("noted"))
    await me("chat", {"agent_id": "m", "message": "my favourite colour is turquoise"})
    script(
        fake,
        reply(None, ("conversation_search", {"query": "turquoise"})),
        reply(None, ("archival_memory_insert", {"content": "The user likes turquoise."})),
        reply(None, ("archival_memory_search", {"query": "favourite colour"})),
        reply("done"),
    )
    await me("chat", {"agent_id": "m", "message": "remember my colour"})
    results = [r.body["messages"][-1]["content"] for r in fake.requests("attacker")[2:]]
    assert "turquoise" in results[0]
    assert '"created": true' in results[1]
    assert "The user likes turquoise." in results[2]
    stored = await me("memory_list", {"agent_id": "m"})
    assert [m.text for m in stored.memories] == ["The user likes turquoise."]


async def test_a_running_task_cancelled_stops_before_its_next_model_call(
    agents: Agents, fake: FakeOpenAI
) -> None:
    """Cancel while the first model call is in flight: no second call, the task cancelled."""
    await agents(
        "tool_create",
        {
            "tool_id": "kv",
            "tool": {
                "name": "kv",
                "parameters": {"type": "object"},
                "fleet": {"operation": "cache.get"},
            },
        },
    )
    await agents(
        "create_agent",
        {"agent_id": "t", "agent": {"name": "T", "model": SCRIPTED, "tools": ["kv"]}},
    )
    script(
        fake,
        Fault(
            delay=2.0,
            reply={
                "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "kv", "arguments": "{}"}}
                ]
            },
        ),
    )
    await agents("execute", {"agent_id": "t", "task_type": "slow", "task_id": "k"})
    await eventually(lambda: _asked(fake), timeout=30, what="the first model call")
    cancelled = await agents("cancel_task", {"agent_id": "t", "task_id": "k"})
    assert cancelled.task.status == "cancelled"

    async def run_ended() -> str:
        run = await agents("get_run", {"agent_id": "t", "run_id": "r-k"})
        return run.run.outcome if run.run.outcome != "running" else ""

    assert await eventually(run_ended, timeout=30, what="the run's end") == "cancelled"
    await asyncio.sleep(0.2)
    assert len(fake.requests("attacker")) == 1
    task: Task = (await agents("get_task", {"agent_id": "t", "task_id": "k"})).task
    assert task.status == "cancelled"


async def _asked(fake: FakeOpenAI) -> bool:
    return len(fake.requests("attacker")) >= 1


async def test_nul_characters_from_the_model_do_not_fail_the_turn(
    agents: Agents, fake: FakeOpenAI
) -> None:
    """A model's text or tool arguments holding NUL characters (PostgreSQL stores none): the
    turn completes and what is stored and answered has U+FFFD in their place."""
    await agents(
        "create_agent",
        {"agent_id": "n", "agent": {"name": "N", "model": SCRIPTED, "memory": {"archival": True}}},
    )
    script(
        fake,
        reply("a\u0000b", ("archival_memory_insert", {"content": "c\u0000d"})),
        reply("x\u0000y"),
    )
    done = await agents("chat", {"agent_id": "n", "message": "hi"})
    assert (done.outcome, done.message) == ("completed", "x\ufffdy")
    session = await agents("get_session", {"agent_id": "n", "session_id": done.session_id})
    stored = [m.message.content for m in session.messages]
    assert stored[1:] == ["a\ufffdb", stored[2], "x\ufffdy"]
    assert not any("\u0000" in text for text in stored)
    memories = await agents("memory_list", {"agent_id": "n"})
    assert [m.text for m in memories.memories] == ["c\ufffdd"]
