"""The ingestion store on a real PostgreSQL: dedupe, runs, paging, uploads, tenant isolation."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from aifleet.embedded import EmbeddedPostgres
from tests.support.ingestion import IngestionDb, new_file
from workers.ingestion.store import IngestionStore, Outcome, PartOutOfOrder, TooLarge


@pytest.fixture(scope="module")
async def db(postgres: EmbeddedPostgres) -> AsyncIterator[IngestionDb]:
    async with IngestionDb.connect(postgres.dsn) as found:
        yield found


@pytest.fixture
def store(db: IngestionDb) -> IngestionStore:
    return IngestionStore(db.pool)


@pytest.fixture
def tenants() -> tuple[str, str]:
    suffix = uuid.uuid4().hex[:10]
    return f"a{suffix}", f"b{suffix}"


async def test_the_same_bytes_are_one_file_per_tenant(
    store: IngestionStore, tenants: tuple[str, str]
) -> None:
    """A second upload of the same bytes returns the first file; another tenant gets its own."""
    a, b = tenants
    first, created = await store.insert_file(a, new_file())
    again, created_again = await store.insert_file(a, new_file())
    other, created_other = await store.insert_file(b, new_file())
    assert (created, created_again, created_other) == (True, False, True)
    assert again.file_id == first.file_id
    assert again.object_name == first.object_name
    assert other.file_id != first.file_id
    assert first.status == "uploaded"
    assert first.metadata == {"k": "v"}


async def test_files_are_invisible_to_other_tenants(
    store: IngestionStore, tenants: tuple[str, str]
) -> None:
    """get, list, delete and runs of tenant b never touch tenant a's file."""
    a, b = tenants
    record, _ = await store.insert_file(a, new_file())
    assert await store.get(b, record.file_id) is None
    assert await store.list_files(b, status="", after=None, limit=10) == []
    assert await store.delete(b, record.file_id) is None
    assert await store.start_run(b, record.file_id, "r1") is None
    assert not await store.object_in_use(b, record.object_name)
    assert await store.object_in_use(a, record.object_name)
    assert (await store.get(a, record.file_id)) == record


async def test_list_pages_newest_first_and_filters_by_status(
    store: IngestionStore, tenants: tuple[str, str]
) -> None:
    """Keyset pages of (created_at, file_id) descending; a status filter applies in SQL."""
    a, _ = tenants
    ids = [(await store.insert_file(a, new_file(bytes([i]))))[0].file_id for i in range(5)]
    await store.start_run(a, ids[1], "r")
    first = await store.list_files(a, status="", after=None, limit=3)
    rest = await store.list_files(
        a, status="", after=(first[-1].created_at, first[-1].file_id), limit=3
    )
    assert [f.file_id for f in first + rest] == ids[::-1]
    assert [
        f.file_id for f in await store.list_files(a, status="processing", after=None, limit=9)
    ] == [ids[1]]


async def test_a_run_finishes_once_and_a_superseded_run_changes_nothing(
    store: IngestionStore, db: IngestionDb, tenants: tuple[str, str]
) -> None:
    """Progress and outcome of run r1 stop counting once r2 started; r2 finishes exactly once."""
    a, _ = tenants
    record, _ = await store.insert_file(a, new_file())
    await store.start_run(a, record.file_id, "r1", auto_ingest=False, options={"max_pages": 2})
    assert await store.report_progress(a, record.file_id, "r1", done=1, total=4, progress=0.25)
    restarted = await store.start_run(a, record.file_id, "r2")
    assert restarted is not None
    assert (restarted.progress, restarted.auto_ingest, restarted.options) == (
        0,
        False,
        {"max_pages": 2},
    )
    assert not await store.report_progress(a, record.file_id, "r1", done=4, total=4, progress=1)
    outcome = Outcome(pages_done=4, pages_total=4, characters=120, sections=2, document_id="d1")
    assert await store.finish_run(db.pool, a, record.file_id, "r1", outcome) is None
    done = await store.finish_run(db.pool, a, record.file_id, "r2", outcome)
    assert done is not None
    assert (done.status, done.document_id, done.characters, done.progress) == (
        "ingested",
        "d1",
        120,
        1,
    )
    assert done.processed_at is not None
    assert await store.finish_run(db.pool, a, record.file_id, "r2", outcome) is None
    assert await store.fail_run(db.pool, a, record.file_id, "r2", {"code": "X"}) is None


async def test_a_failed_run_keeps_its_reason_until_the_next_run(
    store: IngestionStore, db: IngestionDb, tenants: tuple[str, str]
) -> None:
    """fail_run stores the failure; a new run clears it."""
    a, _ = tenants
    record, _ = await store.insert_file(a, new_file())
    await store.start_run(a, record.file_id, "r1")
    failure = {"code": "UNPROCESSABLE", "message": "encrypted", "details": {"reason": "encrypted"}}
    failed = await store.fail_run(db.pool, a, record.file_id, "r1", failure)
    assert failed is not None
    assert (failed.status, failed.failure) == ("failed", failure)
    again = await store.start_run(a, record.file_id, "r2")
    assert again is not None
    assert (again.status, again.failure) == ("processing", None)


async def test_upload_parts_arrive_in_order_and_resends_replace(
    store: IngestionStore, tenants: tuple[str, str]
) -> None:
    """Part n+1 before n is refused; resending a part replaces its size; the total is capped."""
    a, b = tenants
    later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    upload = await store.start_upload(a, "big.pdf", "application/pdf", later)
    assert await store.record_part(a, upload.upload_id, 0, 100, max_bytes=250) == (1, 100)
    with pytest.raises(PartOutOfOrder):
        await store.record_part(a, upload.upload_id, 2, 100, max_bytes=250)
    assert await store.record_part(a, upload.upload_id, 1, 100, max_bytes=250) == (2, 200)
    assert await store.record_part(a, upload.upload_id, 1, 50, max_bytes=250) == (2, 150)
    with pytest.raises(TooLarge):
        await store.record_part(a, upload.upload_id, 2, 101, max_bytes=250)
    found = await store.get_upload(a, upload.upload_id)
    assert found is not None
    assert (found.parts, found.size_bytes, found.file_name) == ([100, 50], 150, "big.pdf")
    assert await store.get_upload(b, upload.upload_id) is None
    assert not await store.delete_upload(b, upload.upload_id)
    assert await store.delete_upload(a, upload.upload_id)
    assert await db_count(store, a) == 0


async def test_expired_upload_sessions_are_listed_for_the_sweeper(
    store: IngestionStore, tenants: tuple[str, str]
) -> None:
    """A session past its expiry is no longer usable and is listed, with its part count."""
    a, _ = tenants
    past = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    upload = await store.start_upload(a, "x.txt", "", past)
    assert await store.get_upload(a, upload.upload_id) is None
    assert (a, upload.upload_id, 0) in await store.expired_uploads(limit=1000)


async def db_count(store: IngestionStore, tenant: str) -> int:
    return int(
        await store.pool.fetchval(
            "SELECT count(*) FROM ingestion.upload_parts WHERE tenant = $1", tenant
        )
    )


@pytest.fixture
async def wide(postgres: EmbeddedPostgres, db: IngestionDb) -> AsyncIterator[IngestionStore]:
    """A store on a pool with a connection for each of 16 concurrent calls."""
    pool: Any = await asyncpg.create_pool(postgres.dsn, min_size=16, max_size=16)
    try:
        yield IngestionStore(pool)
    finally:
        await pool.close()


async def test_an_upload_of_a_file_being_deleted_returns_a_file(
    wide: IngestionStore, tenants: tuple[str, str]
) -> None:
    """Bytes uploaded again while their file is deleted give the old file or a new one."""
    a, _ = tenants
    for r in range(40):
        contents = [f"{r}-{i}".encode() for i in range(8)]
        records = [(await wide.insert_file(a, new_file(c)))[0] for c in contents]
        results = await asyncio.gather(
            *(wide.delete(a, record.file_id) for record in records),
            *(wide.insert_file(a, new_file(c)) for c in contents),
            return_exceptions=True,
        )
        errors = [e for e in results if isinstance(e, BaseException)]
        assert not errors, errors
