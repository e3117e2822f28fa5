"""`option (aifleet.v1.http_status)`: a create answers 201, an accepted request 202 and a delete
204 over REST, the OpenAPI document says so, and NATS replies stay as they were."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool
from nats.aio.client import Client as NATS

from aifleet.embedded import EmbeddedNats
from bridge.openapi import document
from bridge.routes import accepted_field, bindings, success_status
from schemas.registry import Rpc, rpcs_of, services
from schemas.v1 import options_pb2
from subjects import HEADER_ERROR_CODE, request_subject
from tests.bridge.conftest import bridge_settings, serving
from tests.support import shelf
from tests.support.fleet import running_worker

TENANT = {"X-Tenant-ID": "acme"}


@pytest.fixture
async def rest(nats_server: EmbeddedNats) -> AsyncIterator[httpx.AsyncClient]:
    """The shelf component and a dev-mode bridge in front of it."""
    async with (
        running_worker([shelf.component], nats_server.url),
        serving(bridge_settings(nats_server.url, components=["shelf"])) as client,
    ):
        yield client


async def test_create_is_201_with_the_created_resource(rest: httpx.AsyncClient) -> None:
    """The reply of a create is 201 and carries the worker's JSON; a second create is 409."""
    created = await rest.post(
        "/api/v1/shelves", json={"name": "s1", "items": ["a"]}, headers=TENANT
    )
    assert created.status_code == 201
    assert created.headers["content-type"] == "application/json"
    assert created.json() == {"name": "s1", "items": ["a"], "pending_sorts": []}
    again = await rest.post("/api/v1/shelves", json={"name": "s1"}, headers=TENANT)
    assert (again.status_code, again.json()["code"]) == (409, "CONFLICT")
    read = await rest.get("/api/v1/shelves/s1", headers=TENANT)
    assert (read.status_code, read.json()["items"]) == (200, ["a"])


async def test_accepted_work_is_202_with_its_id(rest: httpx.AsyncClient) -> None:
    """An accepted request answers 202 naming it; the shelf lists it as pending."""
    await rest.post("/api/v1/shelves", json={"name": "s2"}, headers=TENANT)
    accepted = await rest.post("/api/v1/shelves/s2:sort", headers=TENANT)
    assert accepted.status_code == 202
    sort_id = accepted.json()["sort_id"]
    read = await rest.get("/api/v1/shelves/s2", headers=TENANT)
    assert read.json()["pending_sorts"] == [sort_id]
    missing = await rest.post("/api/v1/shelves/nope:sort", headers=TENANT)
    assert missing.status_code == 404


async def test_delete_is_204_without_a_body(rest: httpx.AsyncClient) -> None:
    """A delete answers 204 with no body and no content headers; errors keep their status."""
    await rest.post("/api/v1/shelves", json={"name": "s3"}, headers=TENANT)
    deleted = await rest.delete("/api/v1/shelves/s3", headers=TENANT)
    assert deleted.status_code == 204
    assert deleted.content == b""
    assert "content-type" not in deleted.headers
    assert "content-length" not in deleted.headers
    assert deleted.headers["x-request-id"]
    gone = await rest.delete("/api/v1/shelves/s3", headers=TENANT)
    assert (gone.status_code, gone.json()["code"]) == (404, "NOT_FOUND")


async def test_a_bad_create_is_the_error_not_the_success_status(rest: httpx.AsyncClient) -> None:
    """Refused input is the documented 400, whatever status success would have."""
    for body in ({"name": ""}, {"name": 3}, {"name": "x", "bogus": 1}):
        response = await rest.post("/api/v1/shelves", json=body, headers=TENANT)
        assert (response.status_code, response.json()["code"]) == (400, "INVALID_ARGUMENT")


async def test_tenants_do_not_see_each_others_shelves(rest: httpx.AsyncClient) -> None:
    """The same shelf name under two tenants is two shelves."""
    other = {"X-Tenant-ID": "globex"}
    await rest.post("/api/v1/shelves", json={"name": "s4", "items": ["a"]}, headers=TENANT)
    assert (await rest.get("/api/v1/shelves/s4", headers=other)).status_code == 404
    assert (await rest.delete("/api/v1/shelves/s4", headers=other)).status_code == 404
    assert (await rest.get("/api/v1/shelves/s4", headers=TENANT)).status_code == 200


async def test_nats_replies_do_not_change(nats_server: EmbeddedNats, nc: NATS) -> None:
    """Over NATS the create replies with the shelf and the delete with `{}`: no status of its
    own, no error header."""
    async with running_worker([shelf.component], nats_server.url):
        created = await nc.request(
            request_subject("acme", "shelf", "create_shelf"), b'{"name":"n1"}', timeout=5
        )
        assert json.loads(created.data)["name"] == "n1"
        assert HEADER_ERROR_CODE not in (created.headers or {})
        deleted = await nc.request(
            request_subject("acme", "shelf", "delete_shelf"), b'{"name":"n1"}', timeout=5
        )
        assert json.loads(deleted.data) == {}
        assert HEADER_ERROR_CODE not in (deleted.headers or {})


def test_the_document_lists_the_declared_success_status() -> None:
    """201 and 202 replace 200 with the reply's schema; 204 has no content."""
    doc = document(bindings(services().values()), bridge_settings("nats://x"))
    create = doc["paths"]["/api/v1/shelves"]["post"]["responses"]
    assert "200" not in create
    assert create["201"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/aifleet.testkit.Shelf"
    }
    assert "202" in doc["paths"]["/api/v1/shelves/{name}:sort"]["post"]["responses"]
    delete = doc["paths"]["/api/v1/shelves/{name}"]["delete"]["responses"]
    assert "content" not in delete["204"]
    assert "200" in doc["paths"]["/api/v1/shelves/{name}"]["get"]["responses"]


def _probe_rpc(
    name: str, status: int, *, streaming: bool = False, accepted: str = "", types: str = ""
) -> Rpc:
    """The rpc of a contract made for the test, declaring `status` (and `accepted`); its
    messages are Empty, or the testkit's ShelfRef -> Shelf with `types="shelf"`."""
    shelf = types == "shelf"
    file = descriptor_pb2.FileDescriptorProto(
        name=f"tests/status_{name}.proto",
        package=f"aifleet.status_{name}",
        syntax="proto3",
        dependency=[
            "schemas/v1/options.proto",
            "tests/support/testkit.proto" if shelf else "google/protobuf/empty.proto",
        ],
    )
    service = file.service.add(name="ProbeService")
    method = service.method.add(
        name="Probe",
        input_type=".aifleet.testkit.ShelfRef" if shelf else ".google.protobuf.Empty",
        output_type=".aifleet.testkit.Shelf" if shelf else ".google.protobuf.Empty",
        server_streaming=streaming,
    )
    method.options.Extensions[options_pb2.http_status] = status
    if accepted:
        method.options.Extensions[options_pb2.accepted_when_set] = accepted
    pool = descriptor_pool.Default()
    pool.Add(file)
    found = pool.FindFileByName(file.name).services_by_name["ProbeService"]
    return rpcs_of(found)["probe"]


@pytest.mark.parametrize(
    ("status", "streaming", "name"),
    [(302, False, "redirect"), (299, False, "odd"), (201, True, "stream")],
)
def test_a_status_the_bridge_cannot_answer_fails_at_start(
    status: int, streaming: bool, name: str
) -> None:
    """A non-success status, or anything but 200 on a streaming rpc, is refused."""
    rpc = _probe_rpc(name, status, streaming=streaming)
    with pytest.raises(ValueError, match=r"http_status|streaming"):
        success_status(rpc)


def test_the_document_lists_202_beside_the_status_of_a_possibly_queued_create() -> None:
    """An rpc with `accepted_when_set` documents both its own status and 202."""
    doc = document(bindings(services().values()), bridge_settings("nats://x"))
    create = doc["paths"]["/api/v1/rag/documents"]["post"]["responses"]
    assert {"201", "202"} <= set(create)
    assert "job_id" in create["202"]["description"]


@pytest.mark.parametrize(
    ("field", "status", "name"),
    [("nope", 201, "missing"), ("items", 201, "repeated"), ("name", 204, "nobody")],
)
def test_an_accepted_field_the_bridge_cannot_read_fails_at_start(
    field: str, status: int, name: str
) -> None:
    """`accepted_when_set` must name a scalar reply field of an rpc whose reply has a body."""
    rpc = _probe_rpc(f"accepted_{name}", status, accepted=field, types="shelf")
    with pytest.raises(ValueError, match="accepted_when_set"):
        accepted_field(rpc)
