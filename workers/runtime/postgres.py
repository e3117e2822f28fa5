"""PostgreSQL: one asyncpg pool per process and plain-SQL migrations, one schema per component.

Migrations are `migrations/NNN_name.sql` files applied in order, each in its own transaction
with `search_path` set to the component's schema, under an advisory lock so that replicas
starting together apply each file exactly once.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import asyncpg


async def create_pool(dsn: str, *, timeout: float, max_size: int = 10) -> asyncpg.Pool:
    pool = await asyncpg.create_pool(
        dsn, min_size=1, max_size=max_size, timeout=timeout, command_timeout=60
    )
    assert pool is not None
    return pool


def _lock_key(schema: str) -> int:
    digest = hashlib.sha256(f"aifleet.migrate.{schema}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


async def migrate(pool: asyncpg.Pool, schema: str, directory: Path) -> list[str]:
    """Apply the not-yet-applied `*.sql` files of `directory` to `schema`; returns their names."""
    files = sorted(directory.glob("*.sql"))
    applied_now: list[str] = []
    async with pool.acquire() as conn:
        await conn.execute("SELECT pg_advisory_lock($1)", _lock_key(schema))
        try:
            quoted = '"' + schema.replace('"', '""') + '"'
            await conn.execute(
                f"CREATE SCHEMA IF NOT EXISTS {quoted};"
                f"CREATE TABLE IF NOT EXISTS {quoted}.schema_migrations ("
                " name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            done = {
                r["name"]
                for r in await conn.fetch(f"SELECT name FROM {quoted}.schema_migrations")  # noqa: S608 (quoted identifier from code)
            }
            for path in files:
                if path.name in done:
                    continue
                async with conn.transaction():
                    await conn.execute(f"SET LOCAL search_path TO {quoted}, public")
                    await conn.execute(path.read_text())
                    await conn.execute(
                        f"INSERT INTO {quoted}.schema_migrations (name) VALUES ($1)",  # noqa: S608
                        path.name,
                    )
                applied_now.append(path.name)
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", _lock_key(schema))
    return applied_now
