"""The agent component over REST, through the real bridge, NATS, the agent worker (with the
gateway's offline model, prompt and cache) and PostgreSQL, on the seed's /api/v1/agents paths."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from aifleet.embedded import EmbeddedNats, EmbeddedPostgres, EmbeddedValkey
from tests.bridge.conftest import bridge_settings, serving
from tests.support.agent import offline_fleet
from tests.support.polling import eventually
from workers.runtime.worker import Worker

TOOL = {"name": "kv", "parameters": {"type": "object"}, "fleet": {"operation": "cache.get"}}


@pytest.fixture(scope="module")
async def offline_agents(
    nats_server: EmbeddedNats, valkey: EmbeddedValkey, postgres: EmbeddedPostgres
) -> AsyncIterator[Worker]:
    async with offline_fleet(nats_server, valkey, postgres) as worker:
        yield worker


@pytest.fixture
async def rest(
    nats_server: EmbeddedNats, offline_agents: Worker
) -> AsyncIterator[httpx.AsyncClient]:
    settings = bridge_settings(nats_server.url, components=["agent"])
    async with serving(settings) as client:
        client.timeout = httpx.Timeout(30.0)
        yield client


def caller(user: str | None = None) -> dict[str, str]:
    headers = {"X-Tenant-ID": "r" + uuid.uuid4().hex[:12]}
    if user:
        headers["X-User-ID"] = user
    return headers


def sse_messages(text: str) -> list[dict[str, Any]]:
    events, kind = [], ""
    for line in text.splitlines():
        if line.startswith("event:"):
            kind = line.split(":", 1)[1].strip()
        elif line.startswith("data:") and kind == "message":
            events.append(json.loads(line.split(":", 1)[1]))
    return events


async def test_agents_and_tools_lifecycle_over_rest(rest: httpx.AsyncClient) -> None:
    """Create, read, replace, list and delete agents and tools on the seed's paths; the tools
    collection is never read as an agent id."""
    h = caller()
    tool = await rest.post("/api/v1/agents/tools", json={"tool_id": "kv", "tool": TOOL}, headers=h)
    assert tool.status_code == 201, tool.text
    created = await rest.post(
        "/api/v1/agents",
        json={"agent_id": "helper", "agent": {"name": "Helper", "tools": ["kv"]}},
        headers=h,
    )
    assert created.status_code == 201, created.text
    assert created.json()["agent"]["version"] == 1
    got = await rest.get("/api/v1/agents/helper", headers=h)
    assert got.json()["agent"]["definition"]["name"] == "Helper"
    put = await rest.put(
        "/api/v1/agents/helper", json={"agent": {"name": "Helper 2", "tools": ["kv"]}}, headers=h
    )
    assert put.json()["agent"]["version"] == 2
    tools = await rest.get("/api/v1/agents/tools", headers=h)
    assert [t["tool_id"] for t in tools.json()["tools"]] == ["kv"]
    agent_tools = await rest.get("/api/v1/agents/helper/tools", headers=h)
    assert [t["name"] for t in agent_tools.json()["tools"]] == ["kv"]
    listed = await rest.get("/api/v1/agents", params={"page.page_size": 10}, headers=h)
    assert [a["agent_id"] for a in listed.json()["agents"]] == ["helper"]
    in_use = await rest.delete("/api/v1/agents/tools/kv", headers=h)
    assert in_use.status_code == 409
    assert (await rest.delete("/api/v1/agents/helper", headers=h)).json() == {"deleted": True}
    assert (await rest.get("/api/v1/agents/helper", headers=h)).status_code == 404
    schemas = await rest.get("/api/v1/agents/schemas", headers=h)
    assert schemas.json()["agent_definition"]["title"] == "AgentDefinition"


async def test_chat_and_streamed_chat_over_rest(rest: httpx.AsyncClient) -> None:
    """POST chat answers with the session; chat/stream is SSE ending with the final event."""
    h = caller()
    await rest.post("/api/v1/agents", json={"agent_id": "c", "agent": {"name": "C"}}, headers=h)
    first = await rest.post("/api/v1/agents/c/chat", json={"message": "hello"}, headers=h)
    assert first.status_code == 200, first.text
    body = first.json()
    assert body["outcome"] == "completed"
    assert "hello" in body["message"]
    streamed = await rest.post(
        "/api/v1/agents/c/chat/stream",
        json={"message": "again", "session_id": body["session_id"]},
        headers=h,
    )
    assert streamed.headers["content-type"].startswith("text/event-stream")
    events = sse_messages(streamed.text)
    assert events[0]["type"] == "run_started"
    assert events[-1]["type"] == "final"
    assert events[-1]["response"]["session_id"] == body["session_id"]
    session = await rest.get(f"/api/v1/agents/c/sessions/{body['session_id']}", headers=h)
    assert len(session.json()["messages"]) == 4
    sessions = await rest.get("/api/v1/agents/c/sessions", headers=h)
    assert len(sessions.json()["sessions"]) == 1


async def test_tasks_over_rest(rest: httpx.AsyncClient) -> None:
    """POST execute answers with a task id at once; GET tasks/{id} shows it completing."""
    h = caller()
    await rest.post("/api/v1/agents", json={"agent_id": "t", "agent": {"name": "T"}}, headers=h)
    queued = await rest.post(
        "/api/v1/agents/t/execute",
        json={"task_type": "report", "parameters": {"year": 2026}, "priority": 1},
        headers=h,
    )
    assert queued.status_code == 202, queued.text
    task_id = queued.json()["task_id"]

    async def done() -> dict[str, Any] | None:
        task = (await rest.get(f"/api/v1/agents/t/tasks/{task_id}", headers=h)).json()["task"]
        return task if task["status"] == "completed" else None

    task = await eventually(done, timeout=30, what="the task completed")
    assert task is not None
    assert task["parameters"] == {"year": 2026}


async def test_permissions_and_bad_input_over_rest(rest: httpx.AsyncClient) -> None:
    """Another user is 403 until granted; unknown fields are 400; another tenant's id is 404."""
    owner = caller("owner")
    other = {**owner, "X-User-ID": "other"}
    await rest.post("/api/v1/agents", json={"agent_id": "p", "agent": {"name": "P"}}, headers=owner)
    denied = await rest.post("/api/v1/agents/p/chat", json={"message": "hi"}, headers=other)
    assert denied.status_code == 403
    assert denied.json()["code"] == "PERMISSION_DENIED"
    grant = {
        "user_id": "other",
        "resource_type": "agent",
        "resource_id": "p",
        "permission": "execute",
    }
    granted = await rest.post("/api/v1/agents/permissions", json=grant, headers=owner)
    assert granted.json()["changed"] is True
    allowed = await rest.post("/api/v1/agents/p/chat", json={"message": "hi"}, headers=other)
    assert allowed.status_code == 200, allowed.text
    unknown = await rest.post(
        "/api/v1/agents/p/chat", json={"message": "hi", "x": 1}, headers=owner
    )
    assert unknown.status_code == 400
    stranger = await rest.get("/api/v1/agents/p", headers=caller())
    assert stranger.status_code == 404
