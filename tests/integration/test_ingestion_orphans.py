"""Objects nobody claims (the bridge died between storing an upload and `ingestion.upload`, a
part stored but never recorded, a put cut off before its metadata) are removed once older than
the grace period; everything a file or a session holds, young objects and names the component
does not give stay. Real nats-server (Object Store) and PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.object_store import OBJ_CHUNKS_PRE_TEMPLATE, OBJ_STREAM_TEMPLATE

from aifleet.embedded import EmbeddedPostgres
from schemas.errors import NotFound
from subjects import FILES_BUCKET
from tests.support.ingestion import IngestionDb, new_file, object_exists, put_object
from workers.ingestion.orphans import OrphanSweep
from workers.ingestion.sandbox import ParseSandbox
from workers.ingestion.settings import IngestionSettings
from workers.ingestion.store import IngestionStore
from workers.ingestion.uploads import Uploads, part_name
from workers.runtime.files import FileStore

GRACE = 1.0  # seconds


@pytest.fixture(scope="module")
async def db(postgres: EmbeddedPostgres) -> AsyncIterator[IngestionDb]:
    async with IngestionDb.connect(postgres.dsn) as found:
        yield found


@pytest.fixture
async def files(nc: NATS) -> FileStore:
    return await FileStore.open(nc.jetstream())


@pytest.fixture
def sweep(db: IngestionDb, files: FileStore) -> OrphanSweep:
    return OrphanSweep(IngestionStore(db.pool), files, GRACE)


def uploads_of(db: IngestionDb, files: FileStore) -> Uploads:
    settings = IngestionSettings(orphan_grace_seconds=GRACE)
    sandbox = ParseSandbox(settings.sandbox_limits(), settings.parse_limits())
    return Uploads(IngestionStore(db.pool), files, sandbox, settings)


@pytest.fixture
def tenant() -> str:
    return "o" + uuid.uuid4().hex[:12]


async def test_an_upload_object_no_file_holds_is_removed_after_the_grace_period(
    nc: NATS, files: FileStore, db: IngestionDb, sweep: OrphanSweep, tenant: str
) -> None:
    """The bridge stored `uploads/<uuid>` and died: the object goes once older than the grace
    period; a file's object, another tenant's held object and a non-uuid name stay."""
    store = IngestionStore(db.pool)
    orphan = await put_object(nc, tenant, b"orphaned bytes")
    held = await put_object(nc, tenant, b"a file's bytes")
    await store.insert_file(tenant, new_file(b"a file's bytes", object_name=held))
    other = "p" + tenant[1:]
    other_held = await put_object(nc, other, b"other tenant")
    await store.insert_file(other, new_file(b"other tenant", object_name=other_held))
    await files.put(tenant, "uploads/churn.csv", b"a,b\n1,2\n", max_bytes=100)

    await sweep.sweep()
    assert await object_exists(nc, tenant, orphan)  # young: still on its way, maybe
    await asyncio.sleep(GRACE + 0.2)
    await sweep.sweep()

    assert not await object_exists(nc, tenant, orphan)
    assert await object_exists(nc, tenant, held)
    assert await object_exists(nc, other, other_held)
    assert await object_exists(nc, tenant, "uploads/churn.csv")


async def test_a_young_orphan_is_kept(nc: NATS, sweep: OrphanSweep, tenant: str) -> None:
    """An object written just now may still be on its way to `ingestion.upload`: kept."""
    young = await put_object(nc, tenant, b"just arrived")
    await sweep.sweep()
    assert await object_exists(nc, tenant, young)


async def test_parts_of_no_session_are_removed_and_a_session_keeps_its_parts(
    files: FileStore, db: IngestionDb, sweep: OrphanSweep, tenant: str
) -> None:
    """A part stored by a worker that died before recording it (its session gone since) is
    removed; the parts of a live session stay."""
    session = await uploads_of(db, files).start(tenant, "a.txt", "")
    kept = part_name(session.upload_id, 0)
    lost = part_name(str(uuid.uuid4()), 0)
    await files.put(tenant, kept, b"part", max_bytes=10)
    await files.put(tenant, lost, b"part", max_bytes=10)
    await asyncio.sleep(GRACE + 0.2)
    await sweep.sweep()
    assert await files.info(tenant, kept) is not None
    assert await files.info(tenant, lost) is None


async def test_chunks_of_a_put_cut_off_before_its_metadata_are_purged(
    nc: NATS, files: FileStore, sweep: OrphanSweep, tenant: str
) -> None:
    """Chunks published by a writer that died before the object's metadata: purged once older
    than the grace period; a stored object's chunks stay readable."""
    js = nc.jetstream()
    stored = "models/kept.bin"  # another component's object, as old as the cut-off chunks
    await files.put(tenant, stored, b"kept bytes", max_bytes=100)
    cut_off = OBJ_CHUNKS_PRE_TEMPLATE.format(bucket=FILES_BUCKET, obj=uuid.uuid4().hex)
    await js.publish(cut_off, b"half an upload")
    stream = OBJ_STREAM_TEMPLATE.format(bucket=FILES_BUCKET)
    assert await chunk_count(js, stream, cut_off) == 1
    await asyncio.sleep(GRACE + 0.2)
    await sweep.sweep()
    assert await chunk_count(js, stream, cut_off) == 0
    out = bytearray()
    async for piece in files.read(tenant, stored):
        out += piece
    assert bytes(out) == b"kept bytes"


async def test_an_object_too_old_to_claim_is_refused(
    nc: NATS, files: FileStore, db: IngestionDb, tenant: str
) -> None:
    """`ingestion.upload` of an object older than half the grace period is a 404 (it would be
    swept meanwhile): nothing is registered and the client stores it again."""
    uploads = uploads_of(db, files)
    name = await put_object(nc, tenant, b"late")
    assert (await uploads.claim_object(tenant, name)).name == name
    await asyncio.sleep(GRACE / 2 + 0.1)
    with pytest.raises(NotFound, match="too old"):
        await uploads.claim_object(tenant, name)


async def chunk_count(js: JetStreamContext, stream: str, subject: str) -> int:
    info = await js.stream_info(stream, subjects_filter=subject)
    return int((info.state.subjects or {}).get(subject, 0))
