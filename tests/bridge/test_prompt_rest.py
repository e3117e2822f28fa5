"""The prompt component over REST, through the real bridge, NATS, prompt worker and PostgreSQL,
on the seed-style paths /api/v1/prompts/templates, /render and /context."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import httpx
import pytest

from aifleet.embedded import EmbeddedNats, EmbeddedPostgres
from tests.bridge.conftest import bridge_settings, serving
from tests.support.fleet import running_worker
from workers.prompt import service as prompt
from workers.runtime.worker import Worker


@pytest.fixture(scope="module")
async def prompt_worker(
    nats_server: EmbeddedNats, postgres: EmbeddedPostgres
) -> AsyncIterator[Worker]:
    async with running_worker([prompt.component], nats_server.url, database_url=postgres.dsn) as w:
        yield w


@pytest.fixture
async def rest(
    nats_server: EmbeddedNats, prompt_worker: Worker
) -> AsyncIterator[httpx.AsyncClient]:
    """A dev-mode bridge (auth off, loopback) in front of the prompt worker."""
    async with serving(bridge_settings(nats_server.url, components=["prompt"])) as client:
        yield client


def tenant() -> dict[str, str]:
    return {"X-Tenant-ID": "r" + uuid.uuid4().hex[:12]}


async def test_templates_lifecycle_over_rest(rest: httpx.AsyncClient) -> None:
    """POST creates versions, PUT moves a label, GET reads by label, version path or latest,
    GET lists with labels, DELETE removes a version and then the whole name."""
    h = tenant()
    base = "/api/v1/prompts/templates"
    first = await rest.post(base, json={"name": "greet", "text": "Hi {{who}}"}, headers=h)
    assert first.status_code == 200, first.text
    assert first.json()["template"]["version"] == 1
    second = await rest.post(
        base,
        json={"name": "greet", "text": "Hello {{who}}", "config": {"model": "gpt-4o"}},
        headers=h,
    )
    assert second.json()["template"]["version"] == 2

    moved = await rest.put(f"{base}/greet/labels/production", json={"version": 1}, headers=h)
    assert moved.status_code == 200, moved.text
    assert moved.json()["version"] == 1

    by_label = await rest.get(f"{base}/greet", params={"label": "production"}, headers=h)
    assert by_label.json()["template"]["text"] == "Hi {{who}}"
    by_path = await rest.get(f"{base}/greet/versions/2", headers=h)
    assert by_path.json()["template"]["config"] == {"model": "gpt-4o"}
    latest = await rest.get(f"{base}/greet", headers=h)
    assert latest.json()["template"]["labels"] == ["latest"]

    listed = await rest.get(base, params={"order": "ORDER_NAME", "page.page_size": 10}, headers=h)
    assert listed.status_code == 200, listed.text
    (summary,) = listed.json()["templates"]
    assert summary["labels"] == {"latest": 2, "production": 1}

    refused = await rest.delete(f"{base}/greet/versions/1", headers=h)
    assert refused.status_code == 409
    assert refused.json()["code"] == "CONFLICT"
    deleted = await rest.delete(f"{base}/greet/versions/2", headers=h)
    assert deleted.json()["deleted_versions"] == [2]
    gone = await rest.delete(f"{base}/greet", params={"all_versions": "true"}, headers=h)
    assert gone.json()["deleted_versions"] == [1]
    assert (await rest.get(f"{base}/greet", headers=h)).status_code == 404


async def test_render_over_rest(rest: httpx.AsyncClient) -> None:
    """POST /render fills placeholders; a missing variable is a 422 naming it."""
    h = tenant()
    await rest.post(
        "/api/v1/prompts/templates",
        json={"name": "ask", "messages": [{"role": "user", "content": "{{ q }}"}]},
        headers=h,
    )
    ok = await rest.post(
        "/api/v1/prompts/render", json={"name": "ask", "variables": {"q": "{{x}}?"}}, headers=h
    )
    assert ok.status_code == 200, ok.text
    assert ok.json()["messages"] == [
        {"role": "user", "content": "{{x}}?", "name": "", "tool_calls": [], "tool_call_id": ""}
    ]
    missing = await rest.post("/api/v1/prompts/render", json={"name": "ask"}, headers=h)
    assert missing.status_code == 422
    assert missing.json()["details"]["missing"] == ["q"]


async def test_build_context_over_rest(rest: httpx.AsyncClient) -> None:
    """POST /context answers the messages that fit and their counts."""
    body = {
        "model": "gpt-4o-mini",
        "budget_tokens": 50,
        "system_prompt": "Be brief.",
        "messages": [
            {"role": "user", "content": "word " * 100},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": "and now?"},
        ],
    }
    got = await rest.post("/api/v1/prompts/context", json=body, headers=tenant())
    assert got.status_code == 200, got.text
    data = got.json()
    assert data["dropped_message_indexes"] == [0, 1]
    assert [m["content"] for m in data["messages"]] == ["Be brief.", "and now?"]
    assert data["total_tokens"] <= 50


async def test_bad_input_over_rest_is_400(rest: httpx.AsyncClient) -> None:
    """An unknown field or an invalid placeholder is a 400 with the fleet's error body."""
    h = tenant()
    unknown = await rest.post(
        "/api/v1/prompts/templates", json={"name": "x", "text": "y", "colour": 1}, headers=h
    )
    assert unknown.status_code == 400
    injected = await rest.post(
        "/api/v1/prompts/templates", json={"name": "x", "text": "{{ a.__class__ }}"}, headers=h
    )
    assert injected.status_code == 400
    assert injected.json()["code"] == "INVALID_ARGUMENT"
    assert (await rest.get("/api/v1/prompts/templates/x", headers=h)).status_code == 404
