"""Agents, tools and permissions in PostgreSQL (schema `agent`); every statement names its
tenant. Sessions, runs and tasks are in `runs_store`, memory in `memory_store`.

An agent's allowlist is also kept as `agent_tools` rows, so a tool an agent lists cannot be
deleted (a foreign key, checked by the database, not by a read before the write).
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import asyncpg

SCHEMA = "agent"
PERMISSIONS = ("read", "execute", "create", "delete", "admin")
Row = Any  # asyncpg.Record


class Taken(Exception):
    """The id is already used."""


class InUse(Exception):
    """A tool that agents still list."""

    def __init__(self, agents: list[str]) -> None:
        super().__init__(", ".join(agents))
        self.agents = agents


class Stale(Exception):
    """An update expected another version."""


class PgStore:
    """A store on the process's pool (every store of the component has one)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def _fetch(self, sql: str, *args: Any) -> list[Row]:
        rows: list[Row] = await self.pool.fetch(sql, *args)
        return rows


class AgentStore(PgStore):
    # -- agents -------------------------------------------------------------------------------

    async def create_agent(
        self, tenant: str, agent_id: str, definition: dict[str, Any], user: str
    ) -> Row:
        async with self.pool.acquire() as conn, conn.transaction():
            try:
                row = await conn.fetchrow(
                    "INSERT INTO agent.agents (tenant, agent_id, definition, created_by)"
                    " VALUES ($1, $2, $3::jsonb, $4) RETURNING *",
                    tenant,
                    agent_id,
                    json.dumps(definition),
                    user,
                )
            except asyncpg.UniqueViolationError:
                raise Taken(agent_id) from None
            await self._set_tools(conn, tenant, agent_id, definition.get("tools", []))
            if user:
                await _grant(conn, tenant, "agent", agent_id, user, "admin", user)
            return row

    async def get_agent(self, tenant: str, agent_id: str) -> Row | None:
        return await self.pool.fetchrow(
            "SELECT * FROM agent.agents WHERE tenant = $1 AND agent_id = $2", tenant, agent_id
        )

    async def update_agent(
        self, tenant: str, agent_id: str, definition: dict[str, Any], expected_version: int
    ) -> Row | None:
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                "UPDATE agent.agents SET definition = $3::jsonb, version = version + 1,"
                " updated_at = now() WHERE tenant = $1 AND agent_id = $2"
                " AND ($4 = 0 OR version = $4) RETURNING *",
                tenant,
                agent_id,
                json.dumps(definition),
                expected_version,
            )
            if row is None:
                if expected_version and await self.get_agent(tenant, agent_id):
                    raise Stale(agent_id)
                return None
            await self._set_tools(conn, tenant, agent_id, definition.get("tools", []))
            return row

    async def delete_agent(self, tenant: str, agent_id: str) -> bool:
        async with self.pool.acquire() as conn, conn.transaction():
            deleted = await conn.fetchval(
                "DELETE FROM agent.agents WHERE tenant = $1 AND agent_id = $2 RETURNING true",
                tenant,
                agent_id,
            )
            await conn.execute(
                "DELETE FROM agent.grants WHERE tenant = $1 AND resource_type = 'agent'"
                " AND resource_id = $2",
                tenant,
                agent_id,
            )
            return bool(deleted)

    async def list_agents(
        self, tenant: str, user: str | None, after: tuple[Any, ...] | None, limit: int
    ) -> list[Row]:
        return await self._list("agents", "agent_id", "agent", tenant, user, after, limit)

    async def _set_tools(
        self, conn: asyncpg.Connection, tenant: str, agent_id: str, tools: list[str]
    ) -> None:
        await conn.execute(
            "DELETE FROM agent.agent_tools WHERE tenant = $1 AND agent_id = $2", tenant, agent_id
        )
        if tools:
            await conn.execute(
                "INSERT INTO agent.agent_tools (tenant, agent_id, tool_id, position)"
                " SELECT $1, $2, t, p FROM unnest($3::text[]) WITH ORDINALITY AS u(t, p)",
                tenant,
                agent_id,
                tools,
            )

    # -- tools --------------------------------------------------------------------------------

    async def create_tool(
        self, tenant: str, tool_id: str, definition: dict[str, Any], user: str
    ) -> Row:
        async with self.pool.acquire() as conn, conn.transaction():
            try:
                row = await conn.fetchrow(
                    "INSERT INTO agent.tools (tenant, tool_id, definition, created_by)"
                    " VALUES ($1, $2, $3::jsonb, $4) RETURNING *",
                    tenant,
                    tool_id,
                    json.dumps(definition),
                    user,
                )
            except asyncpg.UniqueViolationError:
                raise Taken(tool_id) from None
            if user:
                await _grant(conn, tenant, "tool", tool_id, user, "admin", user)
            return row

    async def get_tool(self, tenant: str, tool_id: str) -> Row | None:
        return await self.pool.fetchrow(
            "SELECT * FROM agent.tools WHERE tenant = $1 AND tool_id = $2", tenant, tool_id
        )

    async def get_tools(self, tenant: str, tool_ids: list[str]) -> dict[str, Row]:
        rows = await self.pool.fetch(
            "SELECT * FROM agent.tools WHERE tenant = $1 AND tool_id = ANY($2::text[])",
            tenant,
            tool_ids,
        )
        return {r["tool_id"]: r for r in rows}

    async def update_tool(
        self, tenant: str, tool_id: str, definition: dict[str, Any]
    ) -> Row | None:
        return await self.pool.fetchrow(
            "UPDATE agent.tools SET definition = $3::jsonb, version = version + 1,"
            " updated_at = now() WHERE tenant = $1 AND tool_id = $2 RETURNING *",
            tenant,
            tool_id,
            json.dumps(definition),
        )

    async def delete_tool(self, tenant: str, tool_id: str) -> bool:
        async with self.pool.acquire() as conn, conn.transaction():
            # The tool's row first: an agent's update listing it meanwhile either committed
            # before (its row is seen below) or waits and fails on the foreign key, instead of
            # this delete failing on the RESTRICT after the check found no agent.
            await conn.execute(
                "SELECT 1 FROM agent.tools WHERE tenant = $1 AND tool_id = $2 FOR UPDATE",
                tenant,
                tool_id,
            )
            users = await conn.fetch(
                "SELECT agent_id FROM agent.agent_tools WHERE tenant = $1 AND tool_id = $2"
                " ORDER BY agent_id LIMIT 10",
                tenant,
                tool_id,
            )
            if users:
                raise InUse([r["agent_id"] for r in users])
            deleted = await conn.fetchval(
                "DELETE FROM agent.tools WHERE tenant = $1 AND tool_id = $2 RETURNING true",
                tenant,
                tool_id,
            )
            await conn.execute(
                "DELETE FROM agent.grants WHERE tenant = $1 AND resource_type = 'tool'"
                " AND resource_id = $2",
                tenant,
                tool_id,
            )
            return bool(deleted)

    async def list_tools(
        self, tenant: str, user: str | None, after: tuple[Any, ...] | None, limit: int
    ) -> list[Row]:
        return await self._list("tools", "tool_id", "tool", tenant, user, after, limit)

    async def _list(
        self,
        table: str,
        key: str,
        kind: str,
        tenant: str,
        user: str | None,
        after: tuple[Any, ...] | None,
        limit: int,
    ) -> list[Row]:
        """Newest first; with a user, only what they may read (a grant in the same query)."""
        when, last = after if after else (None, None)
        return await self._fetch(
            f"SELECT * FROM agent.{table} r WHERE r.tenant = $1"  # noqa: S608 (names from code)
            f" AND ($2::text IS NULL OR EXISTS (SELECT 1 FROM agent.grants g"
            f"  WHERE g.tenant = r.tenant AND g.resource_type = '{kind}'"
            f"  AND g.resource_id IN (r.{key}, '*') AND g.user_id = $2"
            f"  AND g.permission IN ('read', 'admin')))"
            f" AND ($3::timestamptz IS NULL OR (r.created_at, r.{key}) < ($3, $4::text))"
            f" ORDER BY r.created_at DESC, r.{key} DESC LIMIT $5",
            tenant,
            user,
            when,
            last,
            limit,
        )

    # -- permissions --------------------------------------------------------------------------

    async def holds(
        self, tenant: str, user: str, kind: str, resource_id: str, permission: str
    ) -> str:
        """The permission that allows it ("admin" or `permission`), or "" when none does."""
        found = await self.pool.fetchval(
            "SELECT permission FROM agent.grants WHERE tenant = $1 AND user_id = $2"
            " AND resource_type = $3 AND resource_id IN ($4, '*')"
            " AND permission IN ($5, 'admin') ORDER BY permission = 'admin' LIMIT 1",
            tenant,
            user,
            kind,
            resource_id,
            permission,
        )
        return str(found or "")

    async def grant(
        self, tenant: str, kind: str, resource_id: str, user: str, permission: str, by: str
    ) -> tuple[Row, bool]:
        async with self.pool.acquire() as conn:
            return await _grant(conn, tenant, kind, resource_id, user, permission, by)

    async def revoke(
        self, tenant: str, kind: str, resource_id: str, user: str, permission: str
    ) -> Row | None:
        return await self.pool.fetchrow(
            "DELETE FROM agent.grants WHERE tenant = $1 AND resource_type = $2"
            " AND resource_id = $3 AND user_id = $4 AND permission = $5 RETURNING *",
            tenant,
            kind,
            resource_id,
            user,
            permission,
        )

    async def list_grants(
        self,
        tenant: str,
        kind: str,
        resource_id: str,
        user: str,
        after: tuple[Any, ...] | None,
        limit: int,
    ) -> list[Row]:
        position = list(after) if after else [None, None, None, None]
        return await self._fetch(
            "SELECT * FROM agent.grants WHERE tenant = $1"
            " AND ($2 = '' OR resource_type = $2) AND ($3 = '' OR resource_id = $3)"
            " AND ($4 = '' OR user_id = $4)"
            " AND ($5::text IS NULL OR (resource_type, resource_id, user_id, permission)"
            "  > ($5, $6::text, $7::text, $8::text))"
            " ORDER BY resource_type, resource_id, user_id, permission LIMIT $9",
            tenant,
            kind,
            resource_id,
            user,
            *position,
            limit,
        )


async def _grant(
    conn: asyncpg.Connection,
    tenant: str,
    kind: str,
    resource_id: str,
    user: str,
    permission: str,
    by: str,
) -> tuple[Row, bool]:
    row = await conn.fetchrow(
        "INSERT INTO agent.grants (tenant, resource_type, resource_id, user_id, permission,"
        " granted_by) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING RETURNING *",
        tenant,
        kind,
        resource_id,
        user,
        permission,
        by,
    )
    if row is not None:
        return row, True
    existing = await conn.fetchrow(
        "SELECT * FROM agent.grants WHERE tenant = $1 AND resource_type = $2"
        " AND resource_id = $3 AND user_id = $4 AND permission = $5",
        tenant,
        kind,
        resource_id,
        user,
        permission,
    )
    if existing is None:  # revoked after the insert met it: grant it anew
        return await _grant(conn, tenant, kind, resource_id, user, permission, by)
    return existing, False


def when(row: Row) -> dt.datetime:
    value: dt.datetime = row["created_at"]
    return value
