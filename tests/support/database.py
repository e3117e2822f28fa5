"""Direct reads of a component's schema, as a test checks what a worker really wrote."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, ClassVar, Self

import asyncpg

from workers.runtime import outbox
from workers.runtime.postgres import migrate


class ComponentDb:
    """A small pool on one component's schema; its migrations (and the fleet outbox's, which
    they may rely on) are applied first, so a test may read before any worker has started."""

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
            await migrate(pool, outbox.SCHEMA, outbox.MIGRATIONS)
            await migrate(pool, cls.schema, cls.migrations)
            yield cls(pool)
        finally:
            await pool.close()

    async def row_counts(self, tenant: str) -> dict[str, int]:
        """Rows of each of `tables` that belong to `tenant`; `outbox` counts the component's
        events waiting in the fleet's outbox."""
        counts = {}
        for table in self.tables:
            if table == "outbox":
                counts[table] = await self.outbox_rows(tenant)
                continue
            counts[table] = await self.pool.fetchval(
                f"SELECT count(*) FROM {self.schema}.{table} WHERE tenant = $1",  # noqa: S608
                tenant,
            )
        return counts

    async def outbox_rows(self, tenant: str) -> int:
        """The component's events of `tenant` still waiting in the fleet's outbox."""
        count: int = await self.pool.fetchval(
            "SELECT count(*) FROM aifleet.outbox WHERE tenant = $1 AND component = $2",
            tenant,
            self.schema,
        )
        return count
