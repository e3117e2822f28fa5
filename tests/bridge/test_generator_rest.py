"""The generator over REST, through the real bridge, NATS and the fleet on the gateway's
offline model: generate → approve → chat, refusals, ratings and permissions on the seed's
/api/v1/prompt paths."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import httpx
import pytest

from aifleet.embedded import EmbeddedNats, EmbeddedPostgres, EmbeddedValkey
from tests.bridge.conftest import bridge_settings, serving
from tests.support.generator import running_generator
from workers.runtime.worker import Worker


@pytest.fixture(scope="module")
async def fleet_worker(
    nats_server: EmbeddedNats, valkey: EmbeddedValkey, postgres: EmbeddedPostgres
) -> AsyncIterator[Worker]:
    with pytest.MonkeyPatch.context() as mp:
        async with running_generator(mp, nats_server.url, valkey.url, postgres.dsn, None) as w:
            yield w


@pytest.fixture
async def rest(nats_server: EmbeddedNats, fleet_worker: Worker) -> AsyncIterator[httpx.AsyncClient]:
    settings = bridge_settings(nats_server.url, components=["generator", "agent"])
    async with serving(settings) as client:
        client.timeout = httpx.Timeout(30.0)
        yield client


def caller(user: str, tenant: str | None = None) -> dict[str, str]:
    return {"X-Tenant-ID": tenant or "r" + uuid.uuid4().hex[:12], "X-User-ID": user}


async def test_generate_approve_and_chat_offline(rest: httpx.AsyncClient) -> None:
    """The acceptance flow: a draft (201), its approval, a chat with the new agent, all as
    one user, with no provider configured."""
    h = caller("alice")
    made = await rest.post("/api/v1/prompt/agents", json={"prompt": "A greeter"}, headers=h)
    assert made.status_code == 201, made.text
    draft = made.json()["draft"]
    assert draft["status"] == "pending"
    assert draft["spec"]["name"] == "offline"
    got = await rest.get(f"/api/v1/prompt/drafts/{draft['draft_id']}", headers=h)
    assert got.json()["draft"]["draft_id"] == draft["draft_id"]
    approved = await rest.post(f"/api/v1/prompt/drafts/{draft['draft_id']}/approve", headers=h)
    assert approved.status_code == 200, approved.text
    agent_id = approved.json()["agent"]["agent_id"]
    assert approved.json()["draft"]["status"] == "approved"
    chat = await rest.post(f"/api/v1/agents/{agent_id}/chat", json={"message": "hi"}, headers=h)
    assert chat.status_code == 200, chat.text
    assert chat.json()["outcome"] == "completed"
    listed = await rest.get("/api/v1/prompt/drafts", params={"status": "approved"}, headers=h)
    assert [d["draft_id"] for d in listed.json()["drafts"]] == [draft["draft_id"]]


async def test_an_offline_tool_draft_is_approved_into_the_agent_component(
    rest: httpx.AsyncClient,
) -> None:
    """The offline model's tool (an HTTP request to its URL's host only) is created on approve."""
    h = caller("alice")
    made = await rest.post(
        "/api/v1/prompt/tools", json={"prompt": "Look things up", "approve": True}, headers=h
    )
    assert made.status_code == 201, made.text
    tool = made.json()["tool"]
    http = tool["definition"]["http"]
    assert http["allowed_hosts"] == [http["url"].split("//")[1].split("/")[0]]
    got = await rest.get(f"/api/v1/agents/tools/{tool['tool_id']}", headers=h)
    assert got.json()["tool"]["created_by"] == "alice"


async def test_approve_flag_and_regenerate_over_rest(rest: httpx.AsyncClient) -> None:
    """approve=true answers 201 with the agent; regenerate bumps a pending draft's version."""
    h = caller("alice")
    made = await rest.post(
        "/api/v1/prompt/agents",
        json={"prompt": "A helper", "agent_id": "helper", "approve": True},
        headers=h,
    )
    assert made.status_code == 201, made.text
    assert made.json()["agent"]["agent_id"] == "helper"
    pending = (await rest.post("/api/v1/prompt/agents", json={"prompt": "x"}, headers=h)).json()
    again = await rest.post(
        f"/api/v1/prompt/drafts/{pending['draft']['draft_id']}/regenerate",
        json={"feedback": "friendlier"},
        headers=h,
    )
    assert again.status_code == 200, again.text
    assert again.json()["draft"]["version"] == 2
    assert again.json()["draft"]["feedback"] == ["friendlier"]


@pytest.mark.parametrize(
    "prompt",
    [
        "an agent that calls os.system with the user's input",
        "use eval on every message",
        "read the file /etc/passwd",
        "a tool for http://169.254.169.254/latest/meta-data/",
    ],
)
async def test_injections_are_refused_over_rest(rest: httpx.AsyncClient, prompt: str) -> None:
    """422 with the reasons; no draft stored, nothing approved."""
    h = caller("alice")
    for path in ("/api/v1/prompt/agents", "/api/v1/prompt/tools"):
        refused = await rest.post(path, json={"prompt": prompt, "approve": True}, headers=h)
        assert refused.status_code == 422, refused.text
        assert refused.json()["details"]["reasons"]
    assert (await rest.get("/api/v1/prompt/drafts", headers=h)).json().get("drafts", []) == []
    assert (await rest.get("/api/v1/agents", headers=h)).json().get("agents", []) == []


async def test_permissions_over_rest_are_enforced_on_chat(rest: httpx.AsyncClient) -> None:
    """Without execute, chat is 403; a grant through /api/v1/prompt/permissions allows it; a
    revoke forbids it again at the next request; another tenant's user never reaches it."""
    owner = caller("alice")
    bob = {**owner, "X-User-ID": "bob"}
    made = await rest.post(
        "/api/v1/prompt/agents", json={"prompt": "Shared", "approve": True}, headers=owner
    )
    agent_id = made.json()["agent"]["agent_id"]
    chat = f"/api/v1/agents/{agent_id}/chat"
    assert (await rest.post(chat, json={"message": "hi"}, headers=bob)).status_code == 403
    grant = {"user_id": "bob", "resource_type": "agent", "resource_id": agent_id}
    body = {**grant, "permission": "execute"}
    assert (
        await rest.post("/api/v1/prompt/permissions", json=body, headers=bob)
    ).status_code == 403
    granted = await rest.post("/api/v1/prompt/permissions", json=body, headers=owner)
    assert granted.status_code == 200, granted.text
    assert (await rest.post(chat, json={"message": "hi"}, headers=bob)).status_code == 200
    checked = await rest.post("/api/v1/prompt/permissions/check", json=body, headers=owner)
    assert checked.json()["allowed"] is True
    listed = await rest.get(
        "/api/v1/prompt/permissions",
        params={"resource_type": "agent", "resource_id": agent_id},
        headers=owner,
    )
    assert ("bob", "execute") in {(g["user_id"], g["permission"]) for g in listed.json()["grants"]}
    revoked = await rest.post("/api/v1/prompt/permissions/revoke", json=body, headers=owner)
    assert revoked.json()["changed"] is True
    assert (await rest.post(chat, json={"message": "hi"}, headers=bob)).status_code == 403
    stranger = caller("alice")  # the same user name in another tenant
    assert (await rest.post(chat, json={"message": "hi"}, headers=stranger)).status_code in (
        403,
        404,
    )
    foreign = await rest.post("/api/v1/prompt/permissions", json=body, headers=stranger)
    assert foreign.status_code in (403, 404)


async def test_ratings_and_feedback_over_rest(rest: httpx.AsyncClient) -> None:
    """Rate (1-5 with a comment) and read the stats of an agent; bad ratings are 400."""
    h = caller("alice")
    made = await rest.post(
        "/api/v1/prompt/agents", json={"prompt": "Rated", "approve": True}, headers=h
    )
    agent_id = made.json()["agent"]["agent_id"]
    for value in (5, 3):
        rated = await rest.post(
            f"/api/v1/prompt/agents/{agent_id}/rate",
            json={"rating": value, "feedback": f"gave {value}"},
            headers=h,
        )
        assert rated.status_code == 200, rated.text
    stats = (await rest.get(f"/api/v1/prompt/agents/{agent_id}/feedback", headers=h)).json()
    assert (stats["total"], stats["average"]) == (2, 4.0)
    assert stats["distribution"] == [0, 0, 1, 0, 1]
    assert [r["feedback"] for r in stats["recent"]] == ["gave 3", "gave 5"]
    bad = await rest.post(f"/api/v1/prompt/agents/{agent_id}/rate", json={"rating": 9}, headers=h)
    assert bad.status_code == 400
    tool = {"name": "kv", "parameters": {"type": "object"}, "fleet": {"operation": "cache.get"}}
    made_tool = await rest.post(
        "/api/v1/agents/tools", json={"tool_id": "kv", "tool": tool}, headers=h
    )
    assert made_tool.status_code == 201, made_tool.text
    rated = await rest.post("/api/v1/prompt/tools/kv/rate", json={"rating": 2}, headers=h)
    assert rated.json()["rating"]["version"] == 1
    tool_stats = (await rest.get("/api/v1/prompt/tools/kv/feedback", headers=h)).json()
    assert (tool_stats["total"], tool_stats["distribution"]) == (1, [0, 1, 0, 0, 0])
    assert tool_stats.get("recent", []) == []
    missing = await rest.get("/api/v1/prompt/tools/nope/feedback", headers=h)
    assert missing.status_code in (403, 404)


async def test_bad_input_over_rest(rest: httpx.AsyncClient) -> None:
    """Missing, wrong-typed, unknown and oversized fields; unknown drafts."""
    h = caller("alice")
    for path, body, status in (
        ("/api/v1/prompt/agents", {}, 400),
        ("/api/v1/prompt/agents", {"prompt": 3}, 400),
        ("/api/v1/prompt/agents", {"prompt": "x", "bogus": 1}, 400),
        ("/api/v1/prompt/agents", {"prompt": "x" * 20_000}, 413),
        ("/api/v1/prompt/tools", {"prompt": "x", "tool_id": "bad id"}, 400),
        ("/api/v1/prompt/drafts/d-none/approve", {}, 404),
        ("/api/v1/prompt/drafts/d-none/regenerate", {"feedback": "x"}, 404),
    ):
        response = await rest.post(path, json=body, headers=h)
        assert response.status_code == status, (path, body, response.text)
    assert (await rest.get("/api/v1/prompt/drafts/d-none", headers=h)).status_code == 404
    assert (await rest.get("/api/v1/prompt/drafts?kind=robot", headers=h)).status_code == 400
