"""The agent stores against a real PostgreSQL: concurrent writes of one tenant's agents and
tools end in one of their documented outcomes, never in an error of the database."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from aifleet.embedded import EmbeddedPostgres
from tests.support.agent import AgentDb
from workers.agent.store import AgentStore, InUse

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
