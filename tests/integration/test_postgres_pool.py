"""The fleet's asyncpg pool against real PostgreSQL: going back to the pool costs no round
trip, and yet no transaction, setting or advisory lock outlives the checkout that made it."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from aifleet.embedded import EmbeddedPostgres
from workers.runtime.postgres import create_pool, lock_key, session_lock


@pytest.fixture
async def pool(postgres: EmbeddedPostgres) -> AsyncIterator[asyncpg.Pool]:
    """One connection, so every checkout gets the connection the previous one released."""
    created = await create_pool(postgres.dsn, timeout=10, max_size=1)
    try:
        yield created
    finally:
        await created.close()


async def statements_on_release(pool: asyncpg.Pool, work: str) -> list[str]:
    """What the connection runs from `work` until its next checkout begins."""
    seen: list[str] = []

    def log(query: asyncpg.connection.LoggedQuery) -> None:
        seen.append(query.query)

    async with pool.acquire() as conn:
        conn.add_query_logger(log)
        await conn.execute(work)
    async with pool.acquire() as conn:
        conn.remove_query_logger(log)
    return seen


async def setting(pool: asyncpg.Pool, name: str) -> str:
    value: str = await pool.fetchval("SELECT current_setting($1)", name)
    return value


async def test_a_checkout_goes_back_without_a_reset_query(pool: asyncpg.Pool) -> None:
    """Releasing a connection runs nothing on the server (asyncpg's default reset would)."""
    assert await statements_on_release(pool, "SELECT 1") == ["SELECT 1"]


async def test_set_local_ends_with_its_transaction(pool: asyncpg.Pool) -> None:
    """A SET LOCAL is gone for the next checkout of the same connection."""
    default = await setting(pool, "statement_timeout")
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SET LOCAL statement_timeout = '4321ms'")
        assert await conn.fetchval("SHOW statement_timeout") == "4321ms"
    assert await setting(pool, "statement_timeout") == default


async def test_an_unfinished_transaction_is_rolled_back_on_release(pool: asyncpg.Pool) -> None:
    """A transaction left open is rolled back: its write is gone and the next checkout is
    outside any transaction."""
    table = "pool_" + uuid.uuid4().hex[:8]
    await pool.execute(f"CREATE TABLE {table} (v int)")
    async with pool.acquire() as conn:
        await conn.execute("BEGIN")
        await conn.execute(f"INSERT INTO {table} VALUES (1)")  # noqa: S608 (a test table)
    async with pool.acquire() as conn:
        assert not conn.is_in_transaction()
        assert await conn.fetchval(f"SELECT count(*) FROM {table}") == 0  # noqa: S608
    await pool.execute(f"DROP TABLE {table}")


async def test_session_lock_is_held_for_its_block_only(
    pool: asyncpg.Pool, postgres: EmbeddedPostgres
) -> None:
    """Another session cannot take the lock during the block and can right after it."""
    key = lock_key("test." + uuid.uuid4().hex)
    other = await asyncpg.connect(postgres.dsn)
    try:
        async with pool.acquire() as conn, session_lock(conn, key):
            assert not await other.fetchval("SELECT pg_try_advisory_lock($1)", key)
        assert await other.fetchval("SELECT pg_try_advisory_lock($1)", key)
    finally:
        await other.close()


async def test_session_lock_is_released_when_its_block_fails(
    pool: asyncpg.Pool, postgres: EmbeddedPostgres
) -> None:
    """An error inside the block still releases the lock."""
    key = lock_key("test." + uuid.uuid4().hex)
    with pytest.raises(RuntimeError):
        async with pool.acquire() as conn, session_lock(conn, key):
            raise RuntimeError("the block failed")
    other = await asyncpg.connect(postgres.dsn)
    try:
        assert await other.fetchval("SELECT pg_try_advisory_lock($1)", key)
    finally:
        await other.close()


async def test_a_session_lock_connection_is_fully_reset_on_release(pool: asyncpg.Pool) -> None:
    """The connection that held a session lock gets asyncpg's full reset: session settings
    made meanwhile and any lock still held are cleared before anyone else gets it."""
    default = await setting(pool, "statement_timeout")
    key, kept = lock_key("test." + uuid.uuid4().hex), lock_key("test." + uuid.uuid4().hex)
    async with pool.acquire() as conn, session_lock(conn, key):
        await conn.execute("SET statement_timeout = '4321ms'")
        await conn.execute("SELECT pg_advisory_lock($1)", kept)
    assert await setting(pool, "statement_timeout") == default
    held = await pool.fetchval(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()"
    )
    assert held == 0
    # ... and only that once: the next plain checkout goes back without a reset again.
    assert await statements_on_release(pool, "SELECT 2") == ["SELECT 2"]
