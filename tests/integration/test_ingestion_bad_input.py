"""Bad input to every ingestion operation, and two tenants with the same ids: the documented
error, nothing written (no row of the tenant, no event, no object left), still serving."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from aifleet.embedded import EmbeddedNats, EmbeddedPostgres
from schemas.errors import NotFound
from schemas.v1.ingestion_pb2 import GetFileRequest, UploadRequest
from schemas.v1.ingestion_rpc import IngestionService as Ingestion
from subjects import STREAM_EVENTS, event_subject
from tests.support import documents, fake_rag, wire
from tests.support.fleet import running_worker
from tests.support.ingestion import IngestionDb, object_exists, put_object, wait_for_status
from tests.support.wire import assert_error
from workers.ingestion import service as ingestion
from workers.runtime.client import Client
from workers.runtime.worker import Worker

OPS = [
    "upload",
    "get_file",
    "list_files",
    "delete_file",
    "process_file",
    "start_upload",
    "upload_part",
]
FILE_ID = str(uuid.uuid4())
UPLOAD_ID = str(uuid.uuid4())
VALID: dict[str, dict[str, Any]] = {
    "upload": {"object_name": "uploads/x", "file_name": "a.txt"},
    "get_file": {"file_id": FILE_ID},
    "list_files": {"status": "ingested"},
    "delete_file": {"file_id": FILE_ID},
    "process_file": {"file_id": FILE_ID},
    "start_upload": {"file_name": "a.txt"},
    "upload_part": {"upload_id": UPLOAD_ID, "index": 0, "data": "aGk="},
}
WRONG_TYPE: dict[str, Any] = {
    "upload": {"object_name": 5},
    "get_file": {"file_id": ["x"]},
    "list_files": {"page": {"page_size": "many"}},
    "delete_file": {"file_id": FILE_ID, "delete_document": "yes"},
    "process_file": {"file_id": FILE_ID, "options": {"max_pages": "all"}},
    "start_upload": {"file_name": "a", "size_bytes": "big"},
    "upload_part": {"upload_id": UPLOAD_ID, "index": -1},
}
# A field missing, or present but invalid: 400 naming it.
INVALID: dict[str, tuple[dict[str, Any], str]] = {
    "upload": ({"file_name": "a.txt"}, "object_name"),
    "get_file": ({}, "file_id"),
    "list_files": ({"status": "parsed"}, "status"),
    "delete_file": ({"file_id": "not-a-uuid"}, "file_id"),
    "process_file": ({"file_id": FILE_ID, "options": {"chunk_size": 10}}, "options.chunk_size"),
    "start_upload": ({"file_name": "../"}, "file_name"),
    "upload_part": ({"upload_id": "nope", "index": 0}, "upload_id"),
}
MAX_FILE = 64 * 1024
MALFORMED = {"json": b'{"file_id": ', "msgpack": b"\xc1", "protobuf": b"\xff\xff\xff"}


@pytest.fixture(scope="module")
async def worker(nats_server: EmbeddedNats, postgres: EmbeddedPostgres) -> AsyncIterator[Worker]:
    """Small limits, so that "too large" is cheap to send: files 64 KiB, parts 4 KiB."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("AIFLEET_INGESTION_MAX_FILE_BYTES", str(MAX_FILE))
        env.setenv("AIFLEET_INGESTION_PART_BYTES", "4096")
        async with running_worker(
            [ingestion.component, fake_rag.component], nats_server.url, database_url=postgres.dsn
        ) as w:
            yield w


@pytest.fixture(scope="module")
async def db(postgres: EmbeddedPostgres) -> AsyncIterator[IngestionDb]:
    async with IngestionDb.connect(postgres.dsn) as found:
        yield found


@pytest.fixture
def tenant() -> str:
    return "x" + uuid.uuid4().hex[:16]


async def send(nc: NATS, tenant: str, op: str, fmt: str, data: bytes) -> Msg:
    return await wire.send(nc, tenant, "ingestion", op, fmt, data)


async def assert_nothing_written(db: IngestionDb, nc: NATS, tenant: str) -> None:
    assert await db.row_counts(tenant) == {"files": 0, "uploads": 0, "upload_parts": 0}
    js = nc.jetstream()
    subject = event_subject(tenant, "ingestion", "*")
    info = await js.stream_info(STREAM_EVENTS, subjects_filter=subject)
    assert sum((info.state.subjects or {}).values()) == 0


async def assert_still_serving(nc: NATS, tenant: str) -> None:
    reply = await send(
        nc, tenant, "start_upload", "json", json.dumps({"file_name": "ok.txt"}).encode()
    )
    assert json.loads(reply.data)["upload_id"], reply.data


@pytest.mark.parametrize("fmt", ["json", "msgpack", "protobuf"])
@pytest.mark.parametrize("op", OPS)
async def test_malformed_body_is_400(
    worker: Worker, nc: NATS, db: IngestionDb, tenant: str, op: str, fmt: str
) -> None:
    """Bytes that are not a body of the declared encoding: 400."""
    assert_error(await send(nc, tenant, op, fmt, MALFORMED[fmt]), fmt, 400, "INVALID_ARGUMENT")
    await assert_nothing_written(db, nc, tenant)
    await assert_still_serving(nc, "ok" + tenant)


@pytest.mark.parametrize("op", OPS)
async def test_unknown_field_and_wrong_type_are_400(
    worker: Worker, nc: NATS, db: IngestionDb, tenant: str, op: str
) -> None:
    """A field the contract lacks, or one of the wrong type, is refused, not dropped."""
    for body in ({**VALID[op], "colour": "red"}, WRONG_TYPE[op]):
        reply = await send(nc, tenant, op, "msgpack", wire.encode("msgpack", "ingestion", op, body))
        assert_error(reply, "msgpack", 400, "INVALID_ARGUMENT")
    await assert_nothing_written(db, nc, tenant)


@pytest.mark.parametrize("op", OPS)
async def test_missing_or_invalid_fields_are_400_naming_the_field(
    worker: Worker, nc: NATS, db: IngestionDb, tenant: str, op: str
) -> None:
    """A required field missing or a value outside its rules: 400 with details.field."""
    body, field = INVALID[op]
    reply = await send(nc, tenant, op, "json", json.dumps(body).encode())
    assert_error(reply, "json", 400, "INVALID_ARGUMENT")
    assert json.loads(reply.data)["details"]["field"] == field
    await assert_nothing_written(db, nc, tenant)


@pytest.mark.parametrize(
    ("op", "body"),
    [
        ("upload", {"object_name": "uploads/x", "metadata": {"k": "v" * 9000}}),
        ("start_upload", {"file_name": "big.pdf", "size_bytes": MAX_FILE + 1}),
        ("upload_part", {"upload_id": UPLOAD_ID, "index": 0, "data": "A" * 8192}),
    ],
)
async def test_too_large_values_are_413(
    worker: Worker, nc: NATS, db: IngestionDb, tenant: str, op: str, body: dict[str, Any]
) -> None:
    """Metadata over 8 KiB, a declared size over the file limit, a part over part_bytes: 413."""
    reply = await send(nc, tenant, op, "json", json.dumps(body).encode())
    assert_error(reply, "json", 413, "PAYLOAD_TOO_LARGE")
    await assert_nothing_written(db, nc, tenant)


async def test_a_file_over_the_limit_is_413_and_its_object_is_removed(
    worker: Worker, nc: NATS, db: IngestionDb, tenant: str
) -> None:
    """An object larger than max_file_bytes is refused at upload and deleted."""
    name = await put_object(nc, tenant, b"x" * (MAX_FILE + 1))
    reply = await send(
        nc, tenant, "upload", "json", json.dumps({"object_name": name, "file_name": "a"}).encode()
    )
    assert_error(reply, "json", 413, "PAYLOAD_TOO_LARGE")
    assert not await object_exists(nc, tenant, name)
    await assert_nothing_written(db, nc, tenant)


async def test_other_tenants_ids_are_not_found_and_change_nothing(
    worker: Worker, nc: NATS, db: IngestionDb
) -> None:
    """Tenant b naming tenant a's file, object or upload session gets 404; a's data stays."""
    a, b = "a" + uuid.uuid4().hex[:12], "b" + uuid.uuid4().hex[:12]
    client = Client(nc, timeout=20)
    object_name = await put_object(nc, a, documents.CSV)
    mine = await client.call_rpc(
        a, Ingestion.Upload, UploadRequest(object_name=object_name, file_name="a.csv")
    )
    await wait_for_status(client, a, mine.file_id)
    session = json.loads(
        (await send(nc, a, "start_upload", "json", b'{"file_name": "p.txt"}')).data
    )["upload_id"]
    foreign = await put_object(nc, a, b"tenant a's own bytes")
    attempts = {
        "get_file": {"file_id": mine.file_id},
        "delete_file": {"file_id": mine.file_id, "delete_document": True},
        "process_file": {"file_id": mine.file_id},
        "upload_part": {"upload_id": session, "index": 0, "data": "aGk="},
        "upload": {"upload_id": session},
    }
    for op, body in attempts.items():
        assert_error(
            await send(nc, b, op, "json", json.dumps(body).encode()), "json", 404, "NOT_FOUND"
        )
    reply = await send(
        nc, b, "upload", "json", json.dumps({"object_name": foreign, "file_name": "x"}).encode()
    )
    assert_error(reply, "json", 404, "NOT_FOUND")
    listed = json.loads((await send(nc, b, "list_files", "json", b"{}")).data)
    assert listed["files"] == []
    assert await db.row_counts(b) == {"files": 0, "uploads": 0, "upload_parts": 0}
    still = await client.call_rpc(a, Ingestion.GetFile, GetFileRequest(file_id=mine.file_id))
    assert still.file.status == "ingested"
    assert (a, still.file.document_id) in fake_rag.STATE.documents
    assert await object_exists(nc, a, foreign)


async def test_two_tenants_with_the_same_bytes_have_separate_files(
    worker: Worker, nc: NATS
) -> None:
    """Dedupe is per tenant: the same bytes give each tenant its own file and document."""
    a, b = "a" + uuid.uuid4().hex[:12], "b" + uuid.uuid4().hex[:12]
    client = Client(nc, timeout=20)
    replies = []
    for tenant in (a, b):
        name = await put_object(nc, tenant, documents.MARKDOWN)
        replies.append(
            await client.call_rpc(
                tenant, Ingestion.Upload, UploadRequest(object_name=name, file_name="d.md")
            )
        )
    assert [r.deduplicated for r in replies] == [False, False]
    assert replies[0].file_id != replies[1].file_id
    for tenant, reply in zip((a, b), replies, strict=True):
        done = await wait_for_status(client, tenant, reply.file_id)
        assert (tenant, done.document_id) in fake_rag.STATE.documents
        other = b if tenant == a else a
        with pytest.raises(NotFound):
            await client.call_rpc(other, Ingestion.GetFile, GetFileRequest(file_id=reply.file_id))
