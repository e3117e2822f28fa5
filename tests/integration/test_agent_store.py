"""The agent stores against a real PostgreSQL: concurrent writes of one tenant's agents, tools
and sessions end in one of their documented outcomes, never in an error of the database."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from aifleet.embedded import EmbeddedPostgres
from schemas.v1.common_pb2 import ChatMessage
from tests.support.agent import AgentDb
from workers.agent.memory_store import MemoryStore
from workers.agent.runs_store import RunsStore
from workers.agent.store import AgentStore, InUse
from workers.runtime.outbox import no_events

ROUNDS = 8
PAIRS = 8


@pytest.fixture(scope="module")
async def pool(postgres: EmbeddedPostgres) -> AsyncIterator[asyncpg.Pool]:
    async with AgentDb.connect(postgres.dsn):  # the migrations
        pass
    made: Any = await asyncpg.create_pool(postgres.dsn, min_size=2, max_size=2 * PAIRS + 2)
    try:
        yield made
    finally:
        await made.close()


@pytest.fixture
def tenant() -> str:
    return "s" + uuid.uuid4().hex[:12]


def ended_run(agent_id: str, session_id: str) -> dict[str, Any]:
    now = dt.datetime.now(dt.UTC)
    return {
        "agent_id": agent_id,
        "run_id": "r-" + uuid.uuid4().hex,
        "session_id": session_id,
        "task_id": "",
        "agent_version": 1,
        "outcome": "completed",
        "turns": 1,
        "prompt_tokens": 1,
        "completion_tokens": 1,
        "cost_usd": 0.0,
        "error": "",
        "started_at": now,
        "finished_at": now,
    }


async def turn_of(
    runs: RunsStore, tenant: str, agent_id: str, session_id: str, said: list[ChatMessage]
) -> None:
    """A chat turn of the user "u" in the session, recorded at its end."""
    await runs.record_run(
        tenant,
        ended_run(agent_id, session_id),
        user="u",
        initial=[],
        steps=[],
        session_messages=said,
        events=no_events,
    )


async def test_a_tool_deleted_while_an_agent_starts_listing_it_is_refused_or_unlisted(
    pool: asyncpg.Pool, tenant: str
) -> None:
    """A tool deleted as an agent's update lists it is reported in use or deleted, not an error."""
    store = AgentStore(pool)
    outcomes: set[tuple[str, str]] = set()
    for r in range(ROUNDS):
        ids = [f"{r}-{i}" for i in range(PAIRS)]
        for i in ids:
            await store.create_tool(tenant, f"t{i}", {"name": f"t{i}"}, "")
            await store.create_agent(tenant, f"a{i}", {"name": f"a{i}", "tools": []}, "")

        async def update(i: str) -> str:
            try:
                await store.update_agent(tenant, f"a{i}", {"tools": [f"t{i}"]}, 0)
            except asyncpg.ForeignKeyViolationError:
                return "refused"
            return "listed"

        async def delete(i: str) -> str:
            try:
                return "deleted" if await store.delete_tool(tenant, f"t{i}") else "absent"
            except InUse:
                return "in use"

        results = await asyncio.gather(
            *(update(i) for i in ids), *(delete(i) for i in ids), return_exceptions=True
        )
        errors = [e for e in results if isinstance(e, BaseException)]
        assert not errors, errors
        outcomes |= set(zip(results[:PAIRS], results[PAIRS:], strict=True))  # type: ignore[arg-type]
    assert outcomes <= {("listed", "in use"), ("refused", "deleted")}


async def test_an_agent_deleted_while_its_session_takes_a_turn_is_deleted(
    pool: asyncpg.Pool, tenant: str
) -> None:
    """An agent deleted as a turn of its session is recorded is deleted, never deadlocked."""
    store, runs = AgentStore(pool), RunsStore(pool)
    said = [ChatMessage(role="user", content=f"message {n}") for n in range(200)]
    for r in range(ROUNDS):
        ids = [f"{r}-{i}" for i in range(PAIRS)]
        for i in ids:
            await store.create_agent(tenant, f"a{i}", {"name": f"a{i}", "tools": []}, "")
            await turn_of(runs, tenant, f"a{i}", "s", said[:1])

        async def turn(i: str) -> None:
            # refused on the foreign key when the agent was deleted first
            with contextlib.suppress(asyncpg.ForeignKeyViolationError):
                await turn_of(runs, tenant, f"a{i}", "s", said)

        results = await asyncio.gather(
            *(turn(i) for i in ids),
            *(store.delete_agent(tenant, f"a{i}") for i in ids),
            return_exceptions=True,
        )
        errors = [e for e in results if isinstance(e, BaseException)]
        assert not errors, errors
        assert results[PAIRS:] == [True] * PAIRS


async def test_a_grant_given_again_while_it_is_revoked_returns_the_grant(
    pool: asyncpg.Pool, tenant: str
) -> None:
    """A permission granted again as it is revoked returns the grant it found or made."""
    store = AgentStore(pool)
    for r in range(ROUNDS * 5):
        ids = [f"{r}-{i}" for i in range(PAIRS)]
        for i in ids:
            await store.grant(tenant, "agent", f"a{i}", "u", "read", "")
        _, again = await asyncio.gather(
            asyncio.gather(*(store.revoke(tenant, "agent", f"a{i}", "u", "read") for i in ids)),
            asyncio.gather(*(store.grant(tenant, "agent", f"a{i}", "u", "read", "") for i in ids)),
        )
        assert [row is not None for row, _ in again] == [True] * PAIRS


async def test_a_memory_stored_again_while_it_is_deleted_returns_a_memory(
    pool: asyncpg.Pool, tenant: str
) -> None:
    """A memory stored again as it is deleted returns the memory it found or made."""
    store, memory = AgentStore(pool), MemoryStore(pool)
    await store.create_agent(tenant, "a", {"name": "a", "tools": []}, "")
    for r in range(ROUNDS * 5):
        texts = [f"remember {r}-{i}" for i in range(PAIRS)]
        stored = [(await memory.insert(tenant, "a", "u", t, {}, [1.0, 0.0]))[0] for t in texts]
        _, again = await asyncio.gather(
            asyncio.gather(*(memory.delete(tenant, "a", "u", m["memory_id"]) for m in stored)),
            asyncio.gather(*(memory.insert(tenant, "a", "u", t, {}, [1.0, 0.0]) for t in texts)),
        )
        assert [row is not None for row, _ in again] == [True] * PAIRS


async def test_a_user_forgotten_while_the_agent_is_deleted_is_forgotten_and_deleted(
    pool: asyncpg.Pool, tenant: str
) -> None:
    """Forgetting a user of an agent as the agent is deleted does both, never deadlocked."""
    store, runs, memory = AgentStore(pool), RunsStore(pool), MemoryStore(pool)
    said = [ChatMessage(role="user", content="hello")] * 20
    for r in range(ROUNDS):
        ids = [f"{r}-{i}" for i in range(PAIRS)]
        for i in ids:
            await store.create_agent(tenant, f"a{i}", {"name": f"a{i}", "tools": []}, "")
            for s in range(3):
                await turn_of(runs, tenant, f"a{i}", f"s{s}", said)
            for k in range(20):
                await memory.insert(tenant, f"a{i}", "u", f"fact {k}", {}, [1.0, float(k)])
            for k in range(3):
                await memory.set_block(tenant, f"a{i}", "u", f"label{k}", "value")
        results = await asyncio.gather(
            *(memory.forget_user(tenant, f"a{i}", "u") for i in ids),
            *(store.delete_agent(tenant, f"a{i}") for i in ids),
            return_exceptions=True,
        )
        errors = [e for e in results if isinstance(e, BaseException)]
        assert not errors, errors
        assert results[PAIRS:] == [True] * PAIRS
