"""Direct reads of the ML schema, as a test checks what a worker really wrote."""

from __future__ import annotations

from pathlib import Path

from tests.support.database import ComponentDb
from workers.ml.store import SCHEMA

MIGRATIONS = Path(__file__).resolve().parents[2] / "workers" / "ml" / "migrations"


class MlDb(ComponentDb):
    schema = SCHEMA
    migrations = MIGRATIONS
    tables = ("models", "versions", "aliases", "trainings", "prediction_jobs", "prediction_inputs")

    async def versions(self, tenant: str, name: str) -> list[int]:
        rows = await self.pool.fetch(
            "SELECT version FROM ml.versions WHERE tenant = $1 AND name = $2 ORDER BY version",
            tenant,
            name,
        )
        return [r["version"] for r in rows]

    async def versions_of_training(self, tenant: str, training_id: str) -> int:
        """How many versions a training registered (more than 1 is a duplicate)."""
        return int(
            await self.pool.fetchval(
                "SELECT count(*) FROM ml.versions WHERE tenant = $1 AND training_id = $2",
                tenant,
                training_id,
            )
        )
