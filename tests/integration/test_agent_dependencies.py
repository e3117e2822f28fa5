"""The agent component with the components it calls missing: 503 retryable, nothing stored,
and it serves again once they are back."""

from __future__ import annotations

import pytest
from nats.aio.client import Client as NATS

from aifleet.embedded import EmbeddedNats, EmbeddedPostgres, EmbeddedValkey
from schemas.errors import Unavailable
from tests.support.agent import AgentDb, Agents, new_tenant, running_agents
from tests.support.fleet import running_worker
from workers.agent import service as agent
from workers.runtime.client import Client


async def test_chat_without_prompt_or_gateway_is_503_and_stores_nothing(
    nats_server: EmbeddedNats, nc: NATS, postgres: EmbeddedPostgres, valkey: EmbeddedValkey
) -> None:
    """No prompt and gateway workers: chat answers 503 (retryable), no session or run is
    written; with them started, the same chat succeeds. (The budget is small enough that even
    this turn is fitted by prompt.build_context: a turn that surely fits skips that call and,
    with the gateway down, ends as a failed run like any model call that fails.)"""
    agents = Agents(Client(nc, timeout=30.0), new_tenant("dep"))
    async with running_worker([agent.component], nats_server.url, database_url=postgres.dsn):
        await agents(
            "create_agent",
            {"agent_id": "a", "agent": {"name": "A", "context_budget_tokens": 100}},
        )
        with pytest.raises(Unavailable) as caught:
            await agents("chat", {"agent_id": "a", "message": "hi"})
        assert caught.value.retryable
        async with AgentDb.connect(postgres.dsn) as db:
            counts = await db.row_counts(agents.tenant)
        assert (counts["sessions"], counts["runs"], counts["messages"]) == (0, 0, 0)
    with pytest.MonkeyPatch.context() as mp:
        async with running_agents(mp, nats_server.url, valkey.url, postgres.dsn, None):
            reply = await agents("chat", {"agent_id": "a", "message": "hi"})
    assert reply.outcome == "completed"
