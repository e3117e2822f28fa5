"""The semantic response cache in PostgreSQL + pgvector.

The tenant and scope are conditions of the nearest-neighbour query itself; with the HNSW index
the scan is iterative (`hnsw.iterative_scan`), so a selective tenant filter still finds its
nearest row instead of an empty top-k of other tenants' rows.
"""

from __future__ import annotations

from pathlib import Path

import asyncpg
import numpy as np

SCHEMA = "gateway"
MIGRATIONS = Path(__file__).with_name("migrations")

_LOOKUP = """
SELECT response, 1 - (embedding <=> $3::float4[]::public.vector) AS similarity
FROM gateway.semantic_cache
WHERE tenant = $1 AND scope = $2 AND expires_at > now()
ORDER BY embedding <=> $3::float4[]::public.vector
LIMIT 1
"""


class SemanticCache:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def lookup(
        self, tenant: str, scope: str, vector: np.ndarray, threshold: float
    ) -> tuple[bytes, float] | None:
        """The stored reply nearest to `vector` in the tenant's scope, if similar enough."""
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("SET LOCAL hnsw.iterative_scan = relaxed_order")
            row = await conn.fetchrow(_LOOKUP, tenant, scope, vector.tolist())
        if row is None or row["similarity"] < threshold:
            return None
        return bytes(row["response"]), float(row["similarity"])

    async def store(
        self, tenant: str, scope: str, vector: np.ndarray, response: bytes, ttl_seconds: int
    ) -> None:
        await self._pool.execute(
            "INSERT INTO gateway.semantic_cache (tenant, scope, embedding, response, expires_at)"
            " VALUES ($1, $2, $3::float4[]::public.vector, $4,"
            " now() + make_interval(secs => $5))",
            tenant,
            scope,
            vector.tolist(),
            response,
            float(ttl_seconds),
        )

    async def purge_expired(self, limit: int = 10_000) -> int:
        """Delete up to `limit` expired rows; returns how many."""
        status = await self._pool.execute(
            "DELETE FROM gateway.semantic_cache WHERE id IN (SELECT id FROM"
            " gateway.semantic_cache WHERE expires_at <= now() LIMIT $1)",
            limit,
        )
        return int(status.split()[-1])
