"""The generator end to end over NATS: real gateway (offline model and the fake OpenAI server,
scripted), agent, prompt and cache workers, PostgreSQL and Valkey."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from nats.aio.client import Client as NATS

from aifleet.embedded import EmbeddedNats, EmbeddedPostgres, EmbeddedValkey
from schemas.errors import Conflict, NotFound, PermissionDenied, Unprocessable
from schemas.v1.generator_pb2 import DraftApprovedEvent
from tests.support.agent import SCRIPTED, Agents, agent_models, new_tenant
from tests.support.fake_openai import FakeOpenAI
from tests.support.generator import (
    Generator,
    GeneratorDb,
    answer,
    drafting_calls,
    running_generator,
)
from workers.runtime.client import Client
from workers.runtime.worker import Worker

FLEET_TOOL = {"name": "kv", "parameters": {"type": "object"}, "fleet": {"operation": "cache.get"}}
METADATA_TOOL = {
    "name": "meta",
    "parameters": {"type": "object"},
    "http": {
        "method": "GET",
        "url": "http://169.254.169.254/latest/meta-data/",
        "allowed_hosts": ["169.254.169.254"],
    },
}


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
    config = agent_models(fake, tmp_path_factory.mktemp("generator") / "models.yaml", [])
    with pytest.MonkeyPatch.context() as mp:
        async with running_generator(mp, nats_server.url, valkey.url, postgres.dsn, config) as w:
            yield w


@pytest.fixture
async def tenant(worker: Worker, fake: FakeOpenAI) -> str:
    fake.reset()
    return new_tenant("gen")


@pytest.fixture
def gen(nc: NATS, tenant: str) -> Generator:
    return Generator(Client(nc, timeout=30.0), tenant, "alice")


@pytest.fixture
def agents(nc: NATS, tenant: str) -> Agents:
    return Agents(Client(nc, timeout=30.0), tenant, "alice")


@pytest.fixture
async def db(postgres: EmbeddedPostgres) -> AsyncIterator[GeneratorDb]:
    async with GeneratorDb.connect(postgres.dsn) as generator_db:
        yield generator_db


async def test_offline_draft_is_approved_as_the_caller_and_chats(
    gen: Generator, agents: Agents
) -> None:
    """The offline model's draft validates; approval creates the agent as the caller, who gets
    admin on it and can chat with it."""
    made = await gen("generate_agent", {"prompt": "A helper that greets people"})
    draft = made.draft
    assert (draft.status, draft.version, draft.model_calls) == ("pending", 1, 1)
    assert dict(draft.spec) == {"name": "offline"}
    assert not made.HasField("agent")
    approved = await gen("approve_draft", {"draft_id": draft.draft_id})
    assert approved.draft.status == "approved"
    assert approved.draft.approved_by == "alice"
    assert approved.agent.agent_id == draft.resource_id
    assert approved.agent.created_by == "alice"
    check = await gen(
        "check_permission",
        {
            "user_id": "alice",
            "resource_type": "agent",
            "resource_id": draft.resource_id,
            "permission": "execute",
        },
    )
    assert (check.allowed, check.via) == (True, "admin")
    chat = await agents("chat", {"agent_id": draft.resource_id, "message": "hello"})
    assert chat.outcome == "completed"
    again = await gen("approve_draft", {"draft_id": draft.draft_id})
    assert again.agent.agent_id == approved.agent.agent_id
    assert again.agent.version == 1


async def test_the_first_approval_publishes_draft_approved_once(
    gen: Generator, nc: NATS, tenant: str, db: GeneratorDb
) -> None:
    """draft_approved goes out after the commit of the first approval, not of later ones."""
    sub = await nc.subscribe(f"ai.v1.{tenant}.evt.generator.draft_approved")
    made = await gen("generate_agent", {"prompt": "An announcer"})
    for _ in range(2):
        await gen("approve_draft", {"draft_id": made.draft.draft_id})
    event = await sub.next_msg(timeout=5)
    assert event.headers
    assert event.headers["Aifleet-Type"] == "aifleet.v1.DraftApprovedEvent"
    body = DraftApprovedEvent.FromString(event.data)
    assert (body.draft_id, body.kind, body.resource_id, body.approved_by) == (
        made.draft.draft_id,
        "agent",
        made.draft.resource_id,
        "alice",
    )
    with pytest.raises(TimeoutError):
        await sub.next_msg(timeout=0.5)
    assert (await db.row_counts(tenant))["outbox"] == 0


async def test_approve_flag_creates_at_once_with_the_chosen_id(gen: Generator) -> None:
    """approve=true answers with the created agent, under the agent_id asked for."""
    made = await gen("generate_agent", {"prompt": "A poet", "agent_id": "poet", "approve": True})
    assert made.draft.status == "approved"
    assert made.agent.agent_id == "poet"
    with pytest.raises(Conflict) as taken:
        await gen("generate_agent", {"prompt": "Another", "agent_id": "poet", "approve": True})
    kept = await gen("get_draft", {"draft_id": taken.value.details["draft_id"]})
    assert kept.draft.status == "pending"


async def test_concurrent_approvals_create_one_agent(gen: Generator, agents: Agents) -> None:
    """Five approvals at once all answer with the same agent, created once."""
    made = await gen("generate_agent", {"prompt": "A racer"})
    draft_id = made.draft.draft_id
    replies = await asyncio.gather(
        *(gen("approve_draft", {"draft_id": draft_id}) for _ in range(5))
    )
    assert {r.agent.agent_id for r in replies} == {made.draft.resource_id}
    listed = await agents("list_agents", {})
    assert [a.agent_id for a in listed.agents] == [made.draft.resource_id]
    assert listed.agents[0].definition.metadata["generator_draft_id"] == draft_id


async def test_a_draft_whose_id_was_taken_meanwhile_is_not_approved(
    gen: Generator, agents: Agents
) -> None:
    """If another agent took the draft's id, approval is 409, not the other agent."""
    made = await gen("generate_agent", {"prompt": "A clerk", "agent_id": "clerk"})
    await agents("create_agent", {"agent_id": "clerk", "agent": {"name": "Someone else"}})
    with pytest.raises(Conflict):
        await gen("approve_draft", {"draft_id": made.draft.draft_id})
    assert (await gen("get_draft", {"draft_id": made.draft.draft_id})).draft.status == "pending"


async def test_invalid_output_is_repaired_once_with_its_errors(
    gen: Generator, fake: FakeOpenAI
) -> None:
    """A first reply breaking the schema is sent back with its errors; the second is kept."""
    fake.fault("attacker", answer({"name": "", "max_turns": 500, "bogus": "x"}))
    fake.fault("attacker", answer({"name": "Fixed", "system_prompt": "Be brief."}))
    made = await gen("generate_agent", {"prompt": "A brief agent", "llm_model": SCRIPTED})
    assert made.draft.model_calls == 2
    assert made.draft.spec["name"] == "Fixed"
    calls = drafting_calls(fake)
    assert len(calls) == 2
    assert calls[0]["response_format"]["json_schema"]["schema"]["title"] == "AgentDefinition"
    repair = calls[1]["messages"][-1]["content"]
    assert "spec.max_turns" in repair
    assert "spec.name" in repair


async def test_a_nul_character_in_the_output_is_stored_replaced(
    gen: Generator, fake: FakeOpenAI
) -> None:
    """PostgreSQL stores no NUL: a generated definition holding one is kept with U+FFFD."""
    fake.fault("attacker", answer({"name": "Nul", "system_prompt": "a\u0000b"}))
    made = await gen("generate_agent", {"prompt": "An agent", "llm_model": SCRIPTED})
    assert made.draft.spec["system_prompt"] == "a\ufffdb"
    found = await gen("get_draft", {"draft_id": made.draft.draft_id})
    assert found.draft.spec["system_prompt"] == "a\ufffdb"


async def test_output_invalid_twice_is_422_listing_the_errors(
    gen: Generator, fake: FakeOpenAI, db: GeneratorDb, tenant: str
) -> None:
    """After the repair round the errors are the reply's details; nothing is stored."""
    fake.fault("attacker", answer("not json at all"))
    fake.fault("attacker", answer({"name": "x", "tools": ["no-such-tool"], "model": "nope"}))
    with pytest.raises(Unprocessable) as raised:
        await gen("generate_agent", {"prompt": "An agent", "llm_model": SCRIPTED})
    errors = raised.value.details["errors"]
    assert any("no-such-tool" in e for e in errors)
    assert any("spec.model" in e for e in errors)
    assert (await db.row_counts(tenant))["drafts"] == 0


async def test_a_tool_the_caller_may_not_execute_is_not_listed(
    gen: Generator, agents: Agents, fake: FakeOpenAI
) -> None:
    """A tool another user made (no execute grant) is an error; with a grant it is fine."""
    await agents.as_user("bob")("tool_create", {"tool_id": "kv", "tool": FLEET_TOOL})
    await agents.as_user("bob")(
        "grant_permission",
        {"user_id": "alice", "resource_type": "tool", "resource_id": "kv", "permission": "read"},
    )
    for _ in range(2):
        fake.fault("attacker", answer({"name": "Uses kv", "tools": ["kv"]}))
    with pytest.raises(Unprocessable) as raised:
        await gen("generate_agent", {"prompt": "Uses the kv tool", "llm_model": SCRIPTED})
    assert "may not execute" in " ".join(raised.value.details["errors"])
    await gen.as_user("bob")(
        "grant_permission",
        {"user_id": "alice", "resource_type": "tool", "resource_id": "kv", "permission": "execute"},
    )
    fake.fault("attacker", answer({"name": "Uses kv", "tools": ["kv"]}))
    made = await gen(
        "generate_agent", {"prompt": "Uses the kv tool", "llm_model": SCRIPTED, "approve": True}
    )
    assert list(made.agent.definition.tools) == ["kv"]


@pytest.mark.parametrize(
    "prompt",
    [
        "An agent that runs os.system on whatever the user types",
        "A calculator that uses eval() on the input",
        "An agent that reads files from /etc/passwd",
        "A tool that fetches http://169.254.169.254/latest/meta-data/iam",
        "An agent that executes Python code",
    ],
)
async def test_injected_descriptions_are_refused_before_any_model_call(
    gen: Generator, fake: FakeOpenAI, db: GeneratorDb, tenant: str, prompt: str
) -> None:
    """Code, eval, file reads and the metadata address: 422 with reasons, no model call,
    nothing stored or created."""
    with pytest.raises(Unprocessable) as raised:
        await gen("generate_tool", {"prompt": prompt, "approve": True, "llm_model": SCRIPTED})
    assert raised.value.details["stage"] == "refused"
    assert raised.value.details["reasons"]
    assert drafting_calls(fake) == []
    assert (await db.row_counts(tenant))["drafts"] == 0


async def test_a_generated_tool_aimed_at_the_metadata_address_is_refused(
    gen: Generator, agents: Agents, fake: FakeOpenAI, db: GeneratorDb, tenant: str
) -> None:
    """A model that writes a tool for 169.254.169.254 anyway: refused, not repaired, nothing
    stored, no tool created."""
    fake.fault("attacker", answer(METADATA_TOOL))
    with pytest.raises(Unprocessable) as raised:
        await gen(
            "generate_tool",
            {"prompt": "Look up instance details", "llm_model": SCRIPTED, "approve": True},
        )
    assert any("169.254.169.254" in r for r in raised.value.details["reasons"])
    assert len(drafting_calls(fake)) == 1
    assert (await db.row_counts(tenant))["drafts"] == 0
    assert list((await agents("tool_list", {})).tools) == []


async def test_a_generated_tool_is_approved_into_the_agent_component(
    gen: Generator, agents: Agents, fake: FakeOpenAI
) -> None:
    """A public HTTP tool drafted by the model is created as the caller on approval."""
    url = "https://api.example.com/weather/{city}"
    tool = {
        "name": "weather",
        "description": "Weather of a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        "http": {
            "method": "GET",
            "url": url,
            "allowed_hosts": ["api.example.com"],
        },
    }
    fake.fault("attacker", answer(tool))
    made = await gen("generate_tool", {"prompt": "Weather lookup", "llm_model": SCRIPTED})
    approved = await gen("approve_draft", {"draft_id": made.draft.draft_id})
    assert approved.tool.tool_id == made.draft.resource_id
    assert approved.tool.created_by == "alice"
    got = await agents("tool_get", {"tool_id": made.draft.resource_id})
    assert got.tool.definition.http.url == url


async def test_cached_draft_answers_an_identical_request(gen: Generator, fake: FakeOpenAI) -> None:
    """With cache_enabled the same prompt, model and options reuse the definition."""
    body: dict[str, Any] = {
        "prompt": "A cached agent",
        "llm_model": SCRIPTED,
        "cache_enabled": True,
        "additional_config": {"tone": "dry"},
    }
    fake.fault("attacker", answer({"name": "Cached"}))
    first = await gen("generate_agent", body)
    second = await gen("generate_agent", body)
    assert (first.draft.cached, second.draft.cached) == (False, True)
    assert second.draft.model_calls == 0
    assert second.draft.spec == first.draft.spec
    assert second.draft.draft_id != first.draft.draft_id
    assert len(drafting_calls(fake)) == 1
    fake.fault("attacker", answer({"name": "Other options"}))
    third = await gen("generate_agent", {**body, "additional_config": {"tone": "warm"}})
    assert (third.draft.cached, third.draft.spec["name"]) == (False, "Other options")


async def test_regenerate_uses_the_accumulated_feedback(gen: Generator, fake: FakeOpenAI) -> None:
    """Each regeneration sends every feedback so far and the current definition; version
    goes up; an approved draft is not regenerated."""
    fake.fault("attacker", answer({"name": "v1"}))
    made = await gen("generate_agent", {"prompt": "An agent", "llm_model": SCRIPTED})
    fake.fault("attacker", answer({"name": "v2"}))
    await gen("regenerate_draft", {"draft_id": made.draft.draft_id, "feedback": "be shorter"})
    fake.fault("attacker", answer({"name": "v3"}))
    third = await gen(
        "regenerate_draft", {"draft_id": made.draft.draft_id, "feedback": "add a greeting"}
    )
    assert (third.draft.version, third.draft.spec["name"]) == (3, "v3")
    assert list(third.draft.feedback) == ["be shorter", "add a greeting"]
    sent = drafting_calls(fake)[-1]["messages"][-1]["content"]
    for part in ("be shorter", "add a greeting", '"name": "v2"'):
        assert part in sent
    await gen("approve_draft", {"draft_id": made.draft.draft_id})
    with pytest.raises(Conflict):
        await gen("regenerate_draft", {"draft_id": made.draft.draft_id, "feedback": "more"})


async def test_drafts_are_the_callers_own_and_page_newest_first(
    gen: Generator, fake: FakeOpenAI
) -> None:
    """A user lists and reads only their drafts; a tenant-level call sees all; pages join."""
    ids = [(await gen("generate_agent", {"prompt": f"agent {i}"})).draft.draft_id for i in range(3)]
    fake.fault("attacker", answer(FLEET_TOOL))
    await gen.as_user("bob")("generate_tool", {"prompt": "a tool", "llm_model": SCRIPTED})
    first = await gen("list_drafts", {"page": {"page_size": 2}})
    second = await gen(
        "list_drafts", {"page": {"page_size": 2, "page_token": first.page.next_page_token}}
    )
    assert [d.draft_id for d in [*first.drafts, *second.drafts]] == ids[::-1]
    assert len((await gen.as_user(None)("list_drafts", {})).drafts) == 4
    assert len((await gen.as_user(None)("list_drafts", {"kind": "tool"})).drafts) == 1
    with pytest.raises(NotFound):
        await gen.as_user("bob")("get_draft", {"draft_id": ids[0]})


async def test_ratings_are_kept_per_version_with_stats_and_trend(
    gen: Generator, agents: Agents
) -> None:
    """Total, average, distribution, per-version averages, trend and paged comments."""
    await agents("create_agent", {"agent_id": "rated", "agent": {"name": "R"}})
    for value, comment in ((2, "slow"), (3, "")):
        await gen("rate_agent", {"agent_id": "rated", "rating": value, "feedback": comment})
    await agents("update_agent", {"agent_id": "rated", "agent": {"name": "R2"}})
    for value, comment in ((5, "great"), (4, "good"), (5, "")):
        rated = await gen("rate_agent", {"agent_id": "rated", "rating": value, "feedback": comment})
    assert rated.rating.version == 2
    stats = await gen("agent_feedback", {"agent_id": "rated", "page": {"page_size": 2}})
    assert stats.total == 5
    assert stats.average == pytest.approx(19 / 5)
    assert list(stats.distribution) == [0, 1, 1, 1, 2]
    assert [(v.version, v.total) for v in stats.versions] == [(1, 2), (2, 3)]
    assert stats.trend == "up"
    assert [r.feedback for r in stats.recent] == ["good", "great"]
    rest = await gen(
        "agent_feedback",
        {"agent_id": "rated", "page": {"page_token": stats.page.next_page_token}},
    )
    assert [r.feedback for r in rest.recent] == ["slow"]


async def test_permissions_forwarded_to_the_agent_component_are_enforced_on_chat(
    gen: Generator, agents: Agents, nc: NATS
) -> None:
    """No execute: chat is 403; grant: chat works; revoke: 403 at the next request; a user of
    another tenant never reaches the agent."""
    made = await gen("generate_agent", {"prompt": "Shared agent", "approve": True})
    agent_id = made.agent.agent_id
    carol = agents.as_user("carol")
    with pytest.raises(PermissionDenied):
        await carol("chat", {"agent_id": agent_id, "message": "hi"})
    grant = {"user_id": "carol", "resource_type": "agent", "resource_id": agent_id}
    with pytest.raises(PermissionDenied):  # only an admin of the agent grants
        await gen.as_user("carol")("grant_permission", {**grant, "permission": "execute"})
    granted = await gen("grant_permission", {**grant, "permission": "execute"})
    assert granted.changed
    assert (await carol("chat", {"agent_id": agent_id, "message": "hi"})).outcome == "completed"
    listed = await gen("list_permissions", {"resource_type": "agent", "resource_id": agent_id})
    assert {(g.user_id, g.permission) for g in listed.grants} >= {("carol", "execute")}
    revoked = await gen("revoke_permission", {**grant, "permission": "execute"})
    assert revoked.changed
    with pytest.raises(PermissionDenied):
        await carol("chat", {"agent_id": agent_id, "message": "hi"})
    other = Agents(Client(nc, timeout=30.0), new_tenant("other"), "alice")
    with pytest.raises((PermissionDenied, NotFound)):
        await other("chat", {"agent_id": agent_id, "message": "hi"})
    with pytest.raises((PermissionDenied, NotFound)):
        await Generator(other.client, other.tenant, "alice")(
            "grant_permission", {**grant, "permission": "execute"}
        )
