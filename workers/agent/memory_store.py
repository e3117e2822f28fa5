"""Memory in PostgreSQL: core blocks (text per tenant, agent, user and label) and archival
memory (pgvector, per tenant, agent and user).

Archival writes are deduplicated by a hash of the text within one user's memories (a unique
key, so concurrent inserts of the same text store one row). Searches are exact cosine
distance over that user's rows of the query's dimension: one user's memories are few, an exact
scan needs no index tuning and cannot miss a row the way a filtered HNSW scan can.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Sequence
from typing import Any

from workers.agent.store import PgStore

Row = Any


def text_hash(text: str) -> bytes:
    return hashlib.sha256(" ".join(text.split()).casefold().encode()).digest()


class MemoryStore(PgStore):
    # -- core blocks --------------------------------------------------------------------------

    async def blocks(self, tenant: str, agent_id: str, user: str) -> dict[str, str]:
        rows = await self.pool.fetch(
            "SELECT label, value FROM agent.core_blocks WHERE tenant = $1 AND agent_id = $2"
            " AND user_id = $3",
            tenant,
            agent_id,
            user,
        )
        return {r["label"]: r["value"] for r in rows}

    async def set_block(
        self, tenant: str, agent_id: str, user: str, label: str, value: str
    ) -> None:
        await self.pool.execute(
            "INSERT INTO agent.core_blocks (tenant, agent_id, user_id, label, value)"
            " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (tenant, agent_id, user_id, label)"
            " DO UPDATE SET value = EXCLUDED.value, updated_at = now()",
            tenant,
            agent_id,
            user,
            label,
            value,
        )

    async def edit_block(
        self,
        tenant: str,
        agent_id: str,
        user: str,
        label: str,
        initial: str,
        limit: int,
        *,
        append: str = "",
        old: str = "",
        new: str = "",
    ) -> str | None:
        """Append to, or replace text in, one block atomically (the row is locked); returns
        the new value, or None when it would exceed `limit` characters or `old` is absent."""
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO agent.core_blocks (tenant, agent_id, user_id, label, value)"
                " VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
                tenant,
                agent_id,
                user,
                label,
                initial,
            )
            current: str = await conn.fetchval(
                "SELECT value FROM agent.core_blocks WHERE tenant = $1 AND agent_id = $2"
                " AND user_id = $3 AND label = $4 FOR UPDATE",
                tenant,
                agent_id,
                user,
                label,
            )
            if append:
                value = f"{current}\n{append}" if current else append
            elif old and old in current:
                value = current.replace(old, new, 1)
            else:
                return None
            if len(value) > limit:
                return None
            await conn.execute(
                "UPDATE agent.core_blocks SET value = $5, updated_at = now() WHERE tenant = $1"
                " AND agent_id = $2 AND user_id = $3 AND label = $4",
                tenant,
                agent_id,
                user,
                label,
                value,
            )
            return value

    # -- archival -----------------------------------------------------------------------------

    async def insert(
        self,
        tenant: str,
        agent_id: str,
        user: str,
        text: str,
        metadata: dict[str, Any],
        embedding: Sequence[float],
    ) -> tuple[Row, bool]:
        row = await self.pool.fetchrow(
            "INSERT INTO agent.memories (tenant, agent_id, user_id, memory_id, text,"
            " content_hash, metadata, embedding)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8::float4[]::public.vector)"
            " ON CONFLICT (tenant, agent_id, user_id, content_hash) DO NOTHING"
            " RETURNING memory_id, user_id, text, metadata, created_at",
            tenant,
            agent_id,
            user,
            "m-" + uuid.uuid4().hex,
            text,
            text_hash(text),
            json.dumps(metadata),
            list(embedding),
        )
        if row is not None:
            return row, True
        existing = await self.pool.fetchrow(
            "SELECT memory_id, user_id, text, metadata, created_at FROM agent.memories"
            " WHERE tenant = $1 AND agent_id = $2 AND user_id = $3 AND content_hash = $4",
            tenant,
            agent_id,
            user,
            text_hash(text),
        )
        if existing is None:  # deleted after the insert met it: store it anew
            return await self.insert(tenant, agent_id, user, text, metadata, embedding)
        return existing, False

    async def search(
        self, tenant: str, agent_id: str, user: str, embedding: Sequence[float], limit: int
    ) -> list[Row]:
        return await self._fetch(
            "SELECT memory_id, user_id, text, metadata, created_at,"
            " 1 - (embedding <=> $4::float4[]::public.vector) AS score"
            " FROM agent.memories WHERE tenant = $1 AND agent_id = $2 AND user_id = $3"
            " AND public.vector_dims(embedding) = $5"
            " ORDER BY embedding <=> $4::float4[]::public.vector LIMIT $6",
            tenant,
            agent_id,
            user,
            list(embedding),
            len(embedding),
            limit,
        )

    async def list(
        self, tenant: str, agent_id: str, user: str, after: tuple[Any, ...] | None, limit: int
    ) -> list[Row]:
        when, last = after if after else (None, None)
        return await self._fetch(
            "SELECT memory_id, user_id, text, metadata, created_at FROM agent.memories"
            " WHERE tenant = $1 AND agent_id = $2 AND user_id = $3"
            " AND ($4::timestamptz IS NULL OR (created_at, memory_id) < ($4, $5::text))"
            " ORDER BY created_at DESC, memory_id DESC LIMIT $6",
            tenant,
            agent_id,
            user,
            when,
            last,
            limit,
        )

    async def delete(self, tenant: str, agent_id: str, user: str, memory_id: str) -> bool:
        return bool(
            await self.pool.fetchval(
                "DELETE FROM agent.memories WHERE tenant = $1 AND agent_id = $2"
                " AND memory_id = $3 AND ($4 = '' OR user_id = $4) RETURNING true",
                tenant,
                agent_id,
                memory_id,
                user,
            )
        )

    async def forget_user(self, tenant: str, agent_id: str, user: str) -> tuple[int, int, int]:
        """Delete every memory, core block and session of one user of the agent, at once."""
        async with self.pool.acquire() as conn, conn.transaction():
            # The agent's row first, as its delete takes it before cascading to these rows.
            await conn.execute(
                "SELECT 1 FROM agent.agents WHERE tenant = $1 AND agent_id = $2 FOR KEY SHARE",
                tenant,
                agent_id,
            )
            counts = []
            for table in ("memories", "core_blocks", "sessions"):
                deleted = await conn.fetch(
                    f"DELETE FROM agent.{table} WHERE tenant = $1 AND agent_id = $2"  # noqa: S608
                    " AND user_id = $3 RETURNING 1",
                    tenant,
                    agent_id,
                    user,
                )
                counts.append(len(deleted))
            return counts[0], counts[1], counts[2]
