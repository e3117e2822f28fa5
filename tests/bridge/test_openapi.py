"""/openapi.json: generated from the protos, a valid OpenAPI 3.1 document, and true to the
running bridge (schemathesis, bounded in examples and time, against the cache operations and
the test shelves, whose routes answer 201, 202 and 204)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from openapi_spec_validator import validate
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from aifleet.embedded import EmbeddedNats, EmbeddedValkey
from bridge.routes import bindings
from bridge.upload import FORM_FIELDS
from schemas.registry import services
from tests.bridge.conftest import bridge_settings, threaded_bridge
from tests.conftest import NATS_CONFIG
from tests.support import shelf
from workers.cache import service as cache

EXAMPLES = 20  # per operation and mode: about 250 requests in all, a few seconds


@pytest.fixture(scope="module")
def live_bridge(tmp_path_factory: pytest.TempPathFactory, valkey: EmbeddedValkey) -> Iterator[str]:
    """A nats-server, cache and shelf workers and a dev-mode bridge on an event loop of their
    own (a thread), so that synchronous clients such as schemathesis can call them. Its own
    NATS: the session's has workers on the pytest loop, which does not run during a synchronous
    test."""
    nats_server = EmbeddedNats(tmp_path_factory.mktemp("nats-openapi"), config=NATS_CONFIG)
    nats_server.start()
    try:
        with threaded_bridge(
            [cache.component, shelf.component],
            nats_server.url,
            redis_url=valkey.url,
            request_timeout=5,
        ) as url:
            yield url
    finally:
        nats_server.stop()


@pytest.fixture(scope="module")
def document(live_bridge: str) -> dict[str, Any]:
    doc: dict[str, Any] = httpx.get(live_bridge + "/openapi.json").json()
    return doc


def test_the_document_is_valid_openapi(document: dict[str, Any]) -> None:
    """openapi-spec-validator accepts the generated document."""
    validate(document)
    assert document["openapi"] == "3.1.0"


def test_every_annotated_rpc_has_a_documented_route(document: dict[str, Any]) -> None:
    """Each google.api.http binding of each registered service is an operation of the document."""
    documented = {
        (method.upper(), path) for path, ops in document["paths"].items() for method in ops
    }
    expected = {(b.method, b.openapi_path) for b in bindings(services().values())}
    assert expected == documented
    cache_ops = {op["operationId"] for ops in document["paths"].values() for op in ops.values()}
    assert {
        f"CacheService_{m}" for m in ("Get", "Set", "Delete", "Invalidate", "Clear", "Stats")
    } <= (cache_ops)


def test_schemas_cover_every_message_and_the_error(document: dict[str, Any]) -> None:
    """Request, reply and Error schemas exist; proto comments become descriptions."""
    schemas = document["components"]["schemas"]
    assert {"aifleet.v1.Error", "aifleet.v1.SetRequest", "aifleet.v1.GetResponse"} <= set(schemas)
    get = document["paths"]["/api/v1/cache/keys/{key}"]["get"]
    assert get["summary"].startswith("Read one entry")
    assert get["responses"]["503"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/aifleet.v1.Error"
    }
    put_body = document["paths"]["/api/v1/cache/keys/{key}"]["put"]["requestBody"]
    assert "key" not in put_body["content"]["application/json"]["schema"]["properties"]


def test_docs_is_swagger_ui_served_by_the_bridge(live_bridge: str) -> None:
    """/docs loads Swagger UI and its script from the bridge itself, by relative URLs (nothing
    from elsewhere, and it works behind a path prefix); only the page's assets are served."""
    page = httpx.get(live_bridge + "/docs")
    assert page.status_code == 200
    linked = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert "docs/assets/swagger-ui-bundle.js" in linked
    assert all(not (u.startswith(("/", "http:", "https:")) or "//" in u) for u in linked), linked
    for url in linked:
        asset = httpx.get(f"{live_bridge}/{url}")
        assert asset.status_code == 200, url
        assert asset.content
    script = httpx.get(live_bridge + "/docs/init.js").text
    assert 'new URL("openapi.json", document.baseURI)' in script
    for bad in ("index.html", "swagger-initializer.js", "..%2F__init__.py", "nope.js"):
        assert httpx.get(f"{live_bridge}/docs/assets/{bad}").status_code == 404, bad


def test_the_upload_is_documented_as_a_multipart_form(document: dict[str, Any]) -> None:
    """POST /api/v1/ingestion/upload shows multipart/form-data first: `file` (binary, required),
    `title`, `metadata` (JSON), `auto_ingest` (boolean), exactly the parts the bridge reads;
    the JSON UploadRequest stays as the second way in."""
    body = document["paths"]["/api/v1/ingestion/upload"]["post"]["requestBody"]
    assert list(body["content"]) == ["multipart/form-data", "application/json"]
    form = body["content"]["multipart/form-data"]
    schema = form["schema"]
    assert schema["required"] == ["file"]
    fields = schema["properties"]
    assert fields["file"]["type"] == "string"
    assert fields["file"]["format"] == "binary"
    assert fields["title"]["type"] == "string"
    assert fields["metadata"]["type"] == "object"
    assert fields["auto_ingest"] == {**fields["auto_ingest"], "type": "boolean", "default": True}
    assert set(fields) == {"file", *FORM_FIELDS}
    assert form["encoding"]["metadata"] == {"contentType": "application/json"}
    assert body["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/aifleet.v1.UploadRequest"
    }
    other = document["paths"]["/api/v1/ingestion/files/{file_id}/process"]["post"]
    assert list(other["requestBody"]["content"]) == ["application/json"]


def test_rpc_comments_are_summaries_and_descriptions(document: dict[str, Any]) -> None:
    """An rpc's first sentence is its summary and the whole comment its description; each
    component is a tag described by its service's (else its file's) comment."""
    get = document["paths"]["/api/v1/cache/keys/{key}"]["get"]
    assert get["summary"] == "Read one entry."
    assert get["description"] == "Read one entry. A miss is not an error: `found` is false."
    delete = document["paths"]["/api/v1/cache/keys/{key}"]["delete"]
    assert (delete["summary"], "description" in delete) == ("Remove one entry.", False)
    tags = {t["name"]: t.get("description", "") for t in document["tags"]}
    assert tags["cache"].startswith("The cache: tenant-scoped key/value entries")
    assert tags["shelf"].startswith("Named shelves of the calling tenant")


def test_dev_mode_takes_the_tenant_as_a_security_scheme(document: dict[str, Any]) -> None:
    """In dev mode X-Tenant-ID is an apiKey scheme (Authorize sets it once), optional, and no
    longer a parameter of every operation."""
    scheme = document["components"]["securitySchemes"]["tenantHeader"]
    assert (scheme["type"], scheme["in"], scheme["name"]) == ("apiKey", "header", "X-Tenant-ID")
    assert document["security"] == [{"tenantHeader": []}, {}]
    names = {p["name"] for path in document["paths"].values() for op in path.values()
             for p in op["parameters"]}  # fmt: skip
    assert "X-Tenant-ID" not in names
    assert "Authorize" in document["info"]["description"]


def test_auth_mode_documents_the_bearer_scheme() -> None:
    """With auth on, the document declares the bearer JWT scheme and requires it."""
    from bridge.openapi import document as build

    settings = bridge_settings(
        "nats://x", auth="jwt", jwt_secret="s" * 32, jwt_issuer="i", jwt_audience="a"
    )
    doc = build(bindings(services().values()), settings)
    assert set(doc["components"]["securitySchemes"]) == {"bearerAuth"}
    assert doc["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    assert doc["security"] == [{"bearerAuth": []}]
    get = doc["paths"]["/api/v1/cache/keys/{key}"]["get"]
    assert "X-Tenant-ID" in {p["name"] for p in get["parameters"]}


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
@pytest.mark.parametrize(("tag", "count"), [("cache", 6), ("shelf", 4)])
def test_the_api_conforms_to_its_document(
    live_bridge: str, mode: GenerationMode, tag: str, count: int
) -> None:
    """Generated requests (valid, then invalid) never get a 5xx; every response matches the
    document: status documented, content type and body schema as declared."""
    api = schemathesis.openapi.from_url(live_bridge + "/openapi.json").include(tag=tag)
    results = list(api.get_all_operations())
    operations = [r.ok() for r in results if isinstance(r, Ok)]
    assert len(operations) == count
    checks = [
        not_a_server_error,
        response_schema_conformance,
        content_type_conformance,
        status_code_conformance,
    ]
    for operation in operations:

        @given(case=operation.as_strategy(mode))
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def conforms(case: Any) -> None:
            # A client-chosen deadline of a few ms makes 504 the right answer (tested elsewhere).
            if case.headers:
                case.headers.pop("Aifleet-Timeout-Ms", None)
            case.call_and_validate(checks=checks, timeout=10)

        conforms()
