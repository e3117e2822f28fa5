"""`aifleet agent chat` and `aifleet agent task` as a person uses them, against the agent worker
with the gateway's offline model."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator

import pytest
from nats.aio.client import Client as NATS

from aifleet.embedded import EmbeddedNats, EmbeddedPostgres, EmbeddedValkey
from tests.support.agent import Agents, new_tenant, offline_fleet
from tests.support.polling import eventually
from workers.runtime.client import Client
from workers.runtime.worker import Worker


@pytest.fixture(scope="module")
async def offline_agents(
    nats_server: EmbeddedNats, valkey: EmbeddedValkey, postgres: EmbeddedPostgres
) -> AsyncIterator[Worker]:
    async with offline_fleet(nats_server, valkey, postgres) as worker:
        yield worker


async def aifleet(nats_url: str, *args: str, stdin: str = "") -> tuple[int, str, str]:
    """Run the CLI in a child process with `stdin` typed in."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "aifleet.cli",
        *args,
        env={**os.environ, "NATS_URL": nats_url, "COLUMNS": "200"},
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(stdin.encode()), timeout=60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_agent_chat_streams_answers_and_keeps_the_session(
    nats_server: EmbeddedNats, nc: NATS, offline_agents: Worker
) -> None:
    """Two lines typed: two streamed answers in one session, tool calls shown, then exit 0."""
    agents = Agents(Client(nc, timeout=30.0), new_tenant("cli"))
    tool = {"name": "kv", "parameters": {"type": "object"}, "fleet": {"operation": "cache.get"}}
    await agents("tool_create", {"tool_id": "kv", "tool": tool})
    await agents(
        "create_agent",
        {"agent_id": "demo", "agent": {"name": "D", "tools": ["kv"], "tool_choice": "required"}},
    )
    code, out, err = await aifleet(
        nats_server.url, "agent", "chat", "demo", "--tenant", agents.tenant, stdin="hello\nagain\n"
    )
    assert code == 0, err
    assert out.count("[tool] kv(") == 2
    assert "You said: hello" in out
    assert "You said: again" in out
    assert out.count("model calls") == 2
    sessions = await agents("list_sessions", {"agent_id": "demo"})
    assert [s.message_count for s in sessions.sessions] == [8]


async def test_agent_task_shows_the_status_and_result(
    nats_server: EmbeddedNats, nc: NATS, offline_agents: Worker
) -> None:
    """--watch waits for the task and prints its result; an unknown task fails."""
    agents = Agents(Client(nc, timeout=30.0), new_tenant("cli"))
    await agents("create_agent", {"agent_id": "w", "agent": {"name": "W"}})
    await agents("execute", {"agent_id": "w", "task_type": "digest", "task_id": "t1"})
    code, out, err = await aifleet(
        nats_server.url, "agent", "task", "w", "t1", "--tenant", agents.tenant, "--watch"
    )
    assert code == 0, err
    assert "task t1: completed (100%)" in out
    assert "digest" in out

    async def finished() -> bool:
        task = (await agents("get_task", {"agent_id": "w", "task_id": "t1"})).task
        return bool(task.status == "completed")

    await eventually(finished, timeout=10, what="the task completed")
    missing = await aifleet(
        nats_server.url, "agent", "task", "w", "nope", "--tenant", agents.tenant
    )
    assert missing[0] == 1
    assert "404" in missing[2]
