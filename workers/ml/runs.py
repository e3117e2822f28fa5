"""Trainings, batch prediction jobs and recorded prediction inputs (schema `ml`): the state of
long work and what drift compares. Every statement names its tenant.

A training row is created `queued` by the request, turned `running` by each job delivery
(`attempts` counts them) and finished once, `completed` with its version or `failed` with the
reason; a delivery that finds it finished does nothing (the job is idempotent by its id).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg


@dataclass(frozen=True)
class TrainingRow:
    training_id: str
    name: str
    model_type: str
    status: str
    stage: str
    progress: float
    metrics: dict[str, float]
    error: str
    version: int
    attempts: int
    trained_by: str
    created_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None


@dataclass(frozen=True)
class JobRow:
    job_id: str
    name: str
    version: int
    status: str
    progress: float
    input: str
    output: str
    rows: int
    error: str
    created_at: dt.datetime
    finished_at: dt.datetime | None


_TRAINING_COLUMNS = """training_id, name, model_type, status, stage, progress, metrics, error,
    version, attempts, trained_by, created_at, started_at, finished_at"""


def _training(r: asyncpg.Record) -> TrainingRow:
    values = dict(r)
    values["metrics"] = json.loads(values["metrics"])
    return TrainingRow(**values)


class RunStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    # -- trainings --------------------------------------------------------------------------

    async def queue_training(
        self, tenant: str, training_id: str, name: str, model_type: str, trained_by: str
    ) -> tuple[TrainingRow, bool]:
        """Record a queued training; (row, created). An existing id returns its row."""
        row = await self.pool.fetchrow(
            "INSERT INTO ml.trainings (tenant, training_id, name, model_type, status, trained_by)"  # noqa: S608 (constant clauses)
            " VALUES ($1, $2, $3, $4, 'queued', $5) ON CONFLICT (tenant, training_id) DO NOTHING"
            f" RETURNING {_TRAINING_COLUMNS}",
            tenant,
            training_id,
            name,
            model_type,
            trained_by,
        )
        if row is not None:
            return _training(row), True
        found = await self.training(tenant, training_id)
        assert found is not None
        return found, False

    async def begin_training(
        self, tenant: str, training_id: str, name: str, model_type: str, trained_by: str
    ) -> TrainingRow:
        """A job delivery starts (or restarts) a training; a finished one is returned as is."""
        row = await self.pool.fetchrow(
            "INSERT INTO ml.trainings (tenant, training_id, name, model_type, status, stage,"  # noqa: S608 (constant clauses)
            " attempts, trained_by, started_at) VALUES ($1, $2, $3, $4, 'running', 'loading', 1,"
            " $5, clock_timestamp()) ON CONFLICT (tenant, training_id) DO UPDATE SET"
            " attempts = trainings.attempts + 1, status = 'running', stage = 'loading',"
            " progress = 0, started_at = coalesce(trainings.started_at, clock_timestamp())"
            " WHERE trainings.status IN ('queued', 'running')"
            f" RETURNING {_TRAINING_COLUMNS}",
            tenant,
            training_id,
            name,
            model_type,
            trained_by,
        )
        if row is not None:
            return _training(row)
        found = await self.training(tenant, training_id)
        assert found is not None
        return found

    async def training_progress(
        self, tenant: str, training_id: str, stage: str, progress: float
    ) -> None:
        await self.pool.execute(
            "UPDATE ml.trainings SET stage = $3, progress = $4"
            " WHERE tenant = $1 AND training_id = $2 AND status = 'running'",
            tenant,
            training_id,
            stage,
            progress,
        )

    @staticmethod
    async def finish_training(
        conn: asyncpg.Connection | asyncpg.Pool,
        tenant: str,
        training_id: str,
        *,
        status: str,
        metrics: dict[str, float] | None = None,
        version: int = 0,
        error: str = "",
    ) -> bool:
        """Whether it finished the training: a failure never replaces a completion (another
        delivery registered its version), a completion replaces a failure."""
        status_line: str = await conn.execute(
            "UPDATE ml.trainings SET status = $3, stage = $4, progress = $5, metrics = $6::jsonb,"
            " version = $7, error = $8, finished_at = clock_timestamp()"
            " WHERE tenant = $1 AND training_id = $2"
            " AND ($3 = 'completed' OR status <> 'completed')",
            tenant,
            training_id,
            status,
            "done" if status == "completed" else "failed",
            1.0 if status == "completed" else 0.0,
            json.dumps(metrics or {}),
            version,
            error[:1000],
        )
        return status_line.endswith(" 1")

    async def training(self, tenant: str, training_id: str) -> TrainingRow | None:
        row = await self.pool.fetchrow(
            f"SELECT {_TRAINING_COLUMNS} FROM ml.trainings"  # noqa: S608 (constant)
            " WHERE tenant = $1 AND training_id = $2",
            tenant,
            training_id,
        )
        return _training(row) if row is not None else None

    async def list_trainings(
        self,
        tenant: str,
        *,
        name: str,
        after: tuple[dt.datetime, str] | None,
        limit: int,
    ) -> list[TrainingRow]:
        """Newest first, after the keyset position (created_at, training_id)."""
        rows = await self.pool.fetch(
            f"SELECT {_TRAINING_COLUMNS} FROM ml.trainings"  # noqa: S608 (constant)
            " WHERE tenant = $1 AND ($2 = '' OR name = $2)"
            " AND ($3::timestamptz IS NULL OR (created_at, training_id) < ($3, $4))"
            " ORDER BY created_at DESC, training_id DESC LIMIT $5",
            tenant,
            name,
            after[0] if after else None,
            after[1] if after else "",
            limit,
        )
        return [_training(r) for r in rows]

    # -- batch prediction jobs --------------------------------------------------------------

    async def queue_job(
        self, tenant: str, job_id: str, name: str, version: int, input_name: str, output: str
    ) -> tuple[JobRow, bool]:
        row = await self.pool.fetchrow(
            "INSERT INTO ml.prediction_jobs (tenant, job_id, name, version, status, input, output)"
            " VALUES ($1, $2, $3, $4, 'queued', $5, $6) ON CONFLICT (tenant, job_id) DO NOTHING"
            " RETURNING job_id, name, version, status, progress, input, output, rows, error,"
            " created_at, finished_at",
            tenant,
            job_id,
            name,
            version,
            input_name,
            output,
        )
        if row is not None:
            return JobRow(**dict(row)), True
        found = await self.job(tenant, job_id)
        assert found is not None
        return found, False

    async def job(self, tenant: str, job_id: str) -> JobRow | None:
        row = await self.pool.fetchrow(
            "SELECT job_id, name, version, status, progress, input, output, rows, error,"
            " created_at, finished_at FROM ml.prediction_jobs WHERE tenant = $1 AND job_id = $2",
            tenant,
            job_id,
        )
        return JobRow(**dict(row)) if row is not None else None

    async def update_job(
        self,
        tenant: str,
        job_id: str,
        *,
        status: str,
        progress: float,
        rows: int = 0,
        error: str = "",
    ) -> None:
        done = status in ("completed", "failed")
        # A finished job stays finished: another delivery's progress (or failure) arriving
        # after a completion would overwrite it; a completion still replaces a failure.
        await self.pool.execute(
            "UPDATE ml.prediction_jobs SET status = $3, progress = $4, rows = $5, error = $6,"
            " finished_at = CASE WHEN $7 THEN clock_timestamp() END"
            " WHERE tenant = $1 AND job_id = $2 AND (status NOT IN ('completed', 'failed')"
            " OR ($3 = 'completed' AND status = 'failed'))",
            tenant,
            job_id,
            status,
            progress,
            rows,
            error[:1000],
            done,
        )

    # -- prediction inputs, for drift -------------------------------------------------------

    async def record_inputs(
        self,
        tenant: str,
        name: str,
        version: int,
        rows: Sequence[dict[str, Any]],
        *,
        keep: int,
    ) -> None:
        """Append prediction inputs and keep only the newest `keep` of the version."""
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO ml.prediction_inputs (tenant, name, version, features)"
                " SELECT $1, $2, $3, f FROM unnest($4::jsonb[]) AS f",
                tenant,
                name,
                version,
                [json.dumps(r) for r in rows],
            )
            await conn.execute(
                "DELETE FROM ml.prediction_inputs WHERE tenant = $1 AND name = $2"
                " AND version = $3 AND id <= (SELECT id FROM ml.prediction_inputs"
                "   WHERE tenant = $1 AND name = $2 AND version = $3"
                "   ORDER BY id DESC OFFSET $4 LIMIT 1)",
                tenant,
                name,
                version,
                keep,
            )

    async def recent_inputs(
        self, tenant: str, name: str, version: int, limit: int
    ) -> list[dict[str, Any]]:
        rows = await self.pool.fetch(
            "SELECT features FROM ml.prediction_inputs"
            " WHERE tenant = $1 AND name = $2 AND version = $3 ORDER BY id DESC LIMIT $4",
            tenant,
            name,
            version,
            limit,
        )
        return [json.loads(r["features"]) for r in rows]
