"""Direct reads of a component's schema, as a test checks what a worker really wrote."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, ClassVar, Self

import asyncpg

from workers.runtime.postgres import migrate


class ComponentDb:
    """A small pool on one component's schema; its migrations are applied first, so a test may
    read before any worker has started."""

    schema: ClassVar[str]
    migrations: ClassVar[Path]
    tables: ClassVar[tuple[str, ...]] = ()

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    @classmethod
    @asynccontextmanager
    async def connect(cls, dsn: str) -> AsyncIterator[Self]:
        pool: Any = await asyncpg.create_pool(dsn, min_size=1, max_size=4)
        try:
            await migrate(pool, cls.schema, cls.migrations)
            yield cls(pool)
        finally:
            await pool.close()

    async def row_counts(self, tenant: str) -> dict[str, int]:
        """Rows of each of `tables` that belong to `tenant`."""
        counts = {}
        for table in self.tables:
            counts[table] = await self.pool.fetchval(
                f"SELECT count(*) FROM {self.schema}.{table} WHERE tenant = $1",  # noqa: S608
                tenant,
            )
        return counts
