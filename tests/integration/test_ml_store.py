"""The ML registry's SQL against a real PostgreSQL: versions, aliases, trainings, isolation."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace

import asyncpg
import pytest

from aifleet.embedded import EmbeddedPostgres
from tests.support.ml_db import MlDb
from workers.ml.reference import ModelRef
from workers.ml.runs import RunStore
from workers.ml.store import AliasedVersion, MlStore, NewVersion, NotFoundError

NEW = NewVersion(
    model_type="classification",
    params={"n_estimators": 10},
    metrics={"accuracy": 0.9},
    signature={"features": [], "task": "classification", "target": "y", "classes": []},
    profile={},
    data_sha256="d" * 64,
    data_object="",
    training_rows=10,
    artifact_object="ml/models/m/t.skops",
    artifact_sha256="a" * 64,
    artifact_bytes=100,
    training_id="t",
    trained_by="u1",
)


@pytest.fixture
async def db(postgres: EmbeddedPostgres) -> AsyncIterator[MlDb]:
    async with MlDb.connect(postgres.dsn) as database:
        yield database


def tenant() -> str:
    return f"t{uuid.uuid4().hex[:12]}"


async def register(store: MlStore, tenant: str, name: str, training_id: str) -> tuple[int, bool]:
    async with store.pool.acquire() as conn, conn.transaction():
        return await store.register(
            conn, tenant, name, replace(NEW, training_id=training_id, artifact_object=training_id)
        )


async def set_alias(
    store: MlStore, tenant: str, name: str, alias: str, version: int | None
) -> tuple[int, int]:
    async with store.pool.acquire() as conn, conn.transaction():
        return await store.set_alias(conn, tenant, name, alias, version)


async def test_versions_are_numbered_and_a_training_registers_once(db: MlDb) -> None:
    """1, 2, ...; registering the same training again returns its version, adds nothing."""
    store, t = MlStore(db.pool), tenant()
    assert await register(store, t, "m", "a") == (1, True)
    assert await register(store, t, "m", "b") == (2, True)
    assert await register(store, t, "m", "a") == (1, False)
    assert await db.versions(t, "m") == [1, 2]


async def test_concurrent_registrations_get_consecutive_versions(db: MlDb) -> None:
    """Ten trainings registering at once get 1..10, none twice."""
    store, t = MlStore(db.pool), tenant()
    found = await asyncio.gather(*(register(store, t, "m", f"t{i}") for i in range(10)))
    assert sorted(v for v, _ in found) == list(range(1, 11))


async def test_versions_are_immutable(db: MlDb) -> None:
    """No statement may change a registered version."""
    store, t = MlStore(db.pool), tenant()
    await register(store, t, "m", "a")
    with pytest.raises(asyncpg.RaiseError):
        await db.pool.execute("UPDATE ml.versions SET metrics = '{}' WHERE tenant = $1", t)


async def test_an_alias_moves_and_resolves_on_every_read(db: MlDb) -> None:
    """serving(m@production) follows the alias as it moves; unknown aliases resolve to None."""
    store, t = MlStore(db.pool), tenant()
    await register(store, t, "m", "a")
    await register(store, t, "m", "b")
    assert await set_alias(store, t, "m", "production", 1) == (1, 0)
    ref = ModelRef("m", alias="production")
    assert (await store.serving(t, ref)).version == 1  # type: ignore[union-attr]
    assert await set_alias(store, t, "m", "production", None) == (2, 1)
    assert (await store.serving(t, ref)).version == 2  # type: ignore[union-attr]
    assert await store.serving(t, ModelRef("m", alias="staging")) is None
    with pytest.raises(NotFoundError):
        await set_alias(store, t, "m", "staging", 9)


async def test_a_version_an_alias_points_at_is_deleted_only_with_force(db: MlDb) -> None:
    """Deleting a deployed version is refused, then allowed with force, taking the alias."""
    store, t = MlStore(db.pool), tenant()
    await register(store, t, "m", "a")
    await set_alias(store, t, "m", "production", 1)
    async with db.pool.acquire() as conn, conn.transaction():
        with pytest.raises(AliasedVersion):
            await store.delete(conn, t, "m", 1, force=False)
    async with db.pool.acquire() as conn, conn.transaction():
        versions, aliases, objects = await store.delete(conn, t, "m", 1, force=True)
    assert (versions, aliases, objects) == ([1], [("production", 1)], ["a"])
    assert await store.aliases(t, "m") == {}


async def test_version_numbers_are_never_reused_after_deleting_everything(db: MlDb) -> None:
    """Delete the whole model, train again: the next version is 3, not 1."""
    store, t = MlStore(db.pool), tenant()
    await register(store, t, "m", "a")
    await register(store, t, "m", "b")
    async with db.pool.acquire() as conn, conn.transaction():
        await store.delete(conn, t, "m", None, force=False)
    assert await register(store, t, "m", "c") == (3, True)


async def test_two_tenants_with_the_same_names_never_see_each_other(db: MlDb) -> None:
    """Same model name and training id in two tenants: separate versions, aliases, listings."""
    store, a, b = MlStore(db.pool), tenant(), tenant()
    await register(store, a, "m", "same")
    await register(store, a, "m", "other")
    assert await register(store, b, "m", "same") == (1, True)
    await set_alias(store, a, "m", "production", 2)
    assert await store.serving(b, ModelRef("m", alias="production")) is None
    assert [r.name for r in await store.list_models(b, prefix="", after=None, limit=10)] == ["m"]
    assert len(await store.versions(b, ModelRef("m"))) == 1
    async with db.pool.acquire() as conn, conn.transaction():
        await store.delete(conn, b, "m", None, force=True)
    assert await db.versions(a, "m") == [1, 2]


async def test_models_list_by_name_after_a_position(db: MlDb) -> None:
    """Keyset order by name, with a prefix filter and aliases per model."""
    store, t = MlStore(db.pool), tenant()
    for name in ("b", "a", "c", "ab"):
        await register(store, t, name, f"tr-{name}")
    await set_alias(store, t, "a", "production", 1)
    first = await store.list_models(t, prefix="", after=None, limit=2)
    assert [r.name for r in first] == ["a", "ab"]
    assert first[0].aliases == {"production": 1}
    rest = await store.list_models(t, prefix="", after="ab", limit=10)
    assert [r.name for r in rest] == ["b", "c"]
    assert [r.name for r in await store.list_models(t, prefix="a", after=None, limit=10)] == [
        "a",
        "ab",
    ]


async def test_a_training_counts_its_attempts_and_stays_finished(db: MlDb) -> None:
    """queued → running (attempt 1, 2 after a redelivery) → completed; later deliveries find it
    completed and change nothing."""
    runs, t = RunStore(db.pool), tenant()
    row, created = await runs.queue_training(t, "tr", "m", "classification", "u1")
    assert (row.status, created) == ("queued", True)
    assert (await runs.queue_training(t, "tr", "m", "classification", "u1"))[1] is False
    assert (await runs.begin_training(t, "tr", "m", "classification", "")).attempts == 1
    assert (await runs.begin_training(t, "tr", "m", "classification", "")).attempts == 2
    await runs.finish_training(db.pool, t, "tr", status="completed", metrics={"f1": 1.0}, version=4)
    again = await runs.begin_training(t, "tr", "m", "classification", "")
    assert (again.status, again.version, again.attempts) == ("completed", 4, 2)
    assert (await runs.training(t, "tr")).trained_by == "u1"  # type: ignore[union-attr]


async def test_only_the_newest_prediction_inputs_are_kept(db: MlDb) -> None:
    """The drift window keeps the newest rows of a version."""
    runs, t = RunStore(db.pool), tenant()
    await runs.record_inputs(t, "m", 1, [{"x": i} for i in range(5)], keep=3)
    await runs.record_inputs(t, "m", 1, [{"x": i} for i in range(5, 7)], keep=3)
    assert await runs.recent_inputs(t, "m", 1, 10) == [{"x": 6}, {"x": 5}, {"x": 4}]
    assert await runs.recent_inputs(tenant(), "m", 1, 10) == []


async def test_a_training_registered_by_one_delivery_stays_completed_when_another_fails(
    db: MlDb,
) -> None:
    """A training whose version is registered ends completed, whenever a failed delivery ends."""
    store, runs, t = MlStore(db.pool), RunStore(db.pool), tenant()

    async def complete(training_id: str) -> None:
        async with db.pool.acquire() as conn, conn.transaction():
            new = replace(NEW, training_id=training_id, artifact_object=training_id)
            version, _ = await store.register(conn, t, "m", new)
            await runs.finish_training(
                conn, t, training_id, status="completed", metrics={}, version=version
            )

    async def fail(training_id: str) -> None:
        async with db.pool.acquire() as conn, conn.transaction():
            await runs.finish_training(conn, t, training_id, status="failed", error="timeout")

    for r in range(10):
        ids = [f"tr{r}-{i}" for i in range(4)]
        for training_id in ids:
            await runs.begin_training(t, training_id, "m", "classification", "")
        await asyncio.gather(*(complete(i) for i in ids), *(fail(i) for i in ids))
        for training_id in ids:
            row = await runs.training(t, training_id)
            assert row is not None
            assert (row.status, row.version > 0) == ("completed", True), training_id


async def test_a_completed_batch_job_stays_completed_when_another_delivery_reports_progress(
    db: MlDb,
) -> None:
    """A batch job's completion stands against a concurrent delivery's progress of it."""
    runs, t = RunStore(db.pool), tenant()
    for r in range(10):
        ids = [f"job{r}-{i}" for i in range(4)]
        for job_id in ids:
            await runs.queue_job(t, job_id, "m", 1, "in.csv", "out.jsonl")
            await runs.update_job(t, job_id, status="running", progress=0.5)
        await asyncio.gather(
            *(runs.update_job(t, i, status="completed", progress=1.0, rows=7) for i in ids),
            *(runs.update_job(t, i, status="running", progress=0.5) for i in ids),
        )
        for job_id in ids:
            row = await runs.job(t, job_id)
            assert row is not None
            assert (row.status, row.rows) == ("completed", 7), job_id
