"""Uploaded files under the tenant permissions of nats-server.conf: no tenant credential can read
or overwrite another tenant's objects, and a tenant still uploads through its own subjects.

The Object Store's subjects cannot be split by tenant (metadata subjects carry the base64 of the
object name, chunks a random id, reads go through the JetStream API), so tenant users get none
of them: they upload with `ingestion.start_upload` / `upload_part` / `upload` under
`ai.v1.<tenant>.req.>`, and the worker, connected as `fleet`, writes into that tenant's part of
the bucket only. This runs the example block of nats-server.conf exactly as shipped.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import AsyncIterator

import nats
import pytest
from nats.errors import TimeoutError as NatsTimeoutError

from aifleet.embedded import EmbeddedNats, EmbeddedPostgres
from subjects import FILES_BUCKET
from tests.security import test_nats_permissions as permissions
from tests.security.test_nats_permissions import DENIED, PASSWORDS, WAIT, Connect, settle
from tests.support import fake_rag
from tests.support.fleet import running_worker
from workers.ingestion import service as ingestion
from workers.runtime.files import FileStore
from workers.runtime.worker import Worker

SECRET = b"tenant b's confidential report"
# The secured server and its connections, as the permission tests define them.
secured_nats = permissions.secured_nats
connect = permissions.connect


@pytest.fixture(scope="module")
async def worker(secured_nats: EmbeddedNats, postgres: EmbeddedPostgres) -> AsyncIterator[Worker]:
    """The ingestion worker connected as the `fleet` user of the example."""
    url = secured_nats.url.replace("nats://", f"nats://fleet:{PASSWORDS['fleet']}@")
    async with running_worker(
        [ingestion.component, fake_rag.component], url, database_url=postgres.dsn
    ) as w:
        yield w


@pytest.fixture
async def b_object(worker: Worker, connect: Connect) -> tuple[FileStore, str]:
    """An object of tenant b, stored with fleet credentials (as the bridge does)."""
    fleet = await connect("fleet")
    store = await FileStore.open(fleet.nc.jetstream())
    name = f"uploads/{uuid.uuid4()}"
    await store.put("b", name, SECRET, max_bytes=1024)
    return store, name


def meta_subject(tenant: str, name: str) -> str:
    key = base64.urlsafe_b64encode(f"{tenant}/{name}".encode()).decode()
    return f"$O.{FILES_BUCKET}.M.{key}"


async def test_a_tenant_cannot_read_the_bucket(
    connect: Connect, b_object: tuple[FileStore, str]
) -> None:
    """Subscribing to the bucket's subjects, or asking the JetStream API for its messages,
    gets tenant a nothing but permission violations."""
    store, name = b_object
    tenant = await connect("tenant-a")
    chunks = await tenant.nc.subscribe(f"$O.{FILES_BUCKET}.>")
    await settle(tenant.nc)
    stream = f"OBJ_{FILES_BUCKET}"
    requests = [
        (f"$JS.API.STREAM.INFO.{stream}", b""),
        (
            f"$JS.API.STREAM.MSG.GET.{stream}",
            json.dumps({"last_by_subj": meta_subject("b", name)}).encode(),
        ),
        (f"$JS.API.DIRECT.GET.{stream}", json.dumps({"seq": 1}).encode()),
        (f"$JS.API.CONSUMER.CREATE.{stream}", json.dumps({"stream_name": stream}).encode()),
    ]
    for subject, body in requests:
        with pytest.raises(NatsTimeoutError):
            await tenant.nc.request(subject, body, timeout=DENIED)
    with pytest.raises(nats.errors.Error):  # a timeout: the API request is never delivered
        await tenant.nc.jetstream(timeout=DENIED).object_store(FILES_BUCKET)
    # The object is read again by the fleet while a's subscription is open: a gets no chunk.
    assert [chunk async for chunk in store.read("b", name)] == [SECRET]
    await settle(tenant.nc)
    assert chunks.pending_msgs == 0
    assert len(tenant.violations()) >= 1 + len(requests)


async def test_a_tenant_cannot_overwrite_or_delete_an_object(
    connect: Connect, b_object: tuple[FileStore, str]
) -> None:
    """Publishing metadata or chunks into the bucket, or purging it, is refused; b's object is
    unchanged."""
    store, name = b_object
    before = await store.info("b", name)
    tenant = await connect("tenant-a")
    forged = json.dumps({"name": f"b/{name}", "bucket": FILES_BUCKET, "deleted": True}).encode()
    await tenant.nc.publish(meta_subject("b", name), forged)
    await tenant.nc.publish(f"$O.{FILES_BUCKET}.C.forged", b"overwritten")
    with pytest.raises(NatsTimeoutError):
        await tenant.nc.request(
            f"$JS.API.STREAM.PURGE.OBJ_{FILES_BUCKET}",
            json.dumps({"filter": f"$O.{FILES_BUCKET}.>"}).encode(),
            timeout=DENIED,
        )
    await settle(tenant.nc)
    assert len(tenant.violations()) == 3
    assert await store.info("b", name) == before
    assert [chunk async for chunk in store.read("b", name)] == [SECRET]


async def test_a_tenant_uploads_through_its_own_requests_into_its_own_part(
    connect: Connect, b_object: tuple[FileStore, str]
) -> None:
    """The chunked upload works with tenant a's credentials and lands under a/; naming b's
    object from a's subjects finds nothing, since the worker scopes every name to a."""
    store, b_name = b_object
    tenant = await connect("tenant-a")

    async def call(op: str, body: dict[str, object]) -> dict[str, object]:
        reply = await tenant.nc.request(
            f"ai.v1.a.req.ingestion.{op}", json.dumps(body).encode(), timeout=WAIT * 5
        )
        answer: dict[str, object] = json.loads(reply.data)
        return answer

    session = await call("start_upload", {"file_name": "mine.txt"})
    data = base64.b64encode(b"Tenant a's own note about pears.\n").decode()
    await call("upload_part", {"upload_id": session["upload_id"], "index": 0, "data": data})
    uploaded = await call("upload", {"upload_id": session["upload_id"], "auto_ingest": False})
    assert uploaded["detected_type"] == "text"
    assert uploaded["status"] == "uploaded"
    stolen = await call("upload", {"object_name": b_name, "file_name": "x.txt"})
    assert stolen["code"] == "NOT_FOUND"
    assert await store.info("b", b_name) is not None
    assert [f.name async for f in store.list("a")]
    assert tenant.violations() == []
