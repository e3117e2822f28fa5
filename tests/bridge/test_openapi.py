"""/openapi.json: generated from the protos, a valid OpenAPI 3.1 document, and true to the
running bridge (schemathesis, bounded in examples and time, against the cache operations and
the test shelves, whose routes answer 201, 202 and 204)."""

from __future__ import annotations

import asyncio
import threading
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
from bridge.server import address, bind, serve, server
from schemas.registry import services
from tests.bridge.conftest import bridge_settings
from tests.conftest import NATS_CONFIG
from tests.support import shelf
from tests.support.fleet import running_worker
from workers.cache import service as cache

EXAMPLES = 20  # per operation and mode: about 250 requests in all, a few seconds


@pytest.fixture(scope="module")
def live_bridge(tmp_path_factory: pytest.TempPathFactory, valkey: EmbeddedValkey) -> Iterator[str]:
    """A nats-server, cache and shelf workers and a dev-mode bridge on an event loop of their own (a
    thread), so that synchronous clients such as schemathesis can call them. Its own NATS: the
    session's has workers on the pytest loop, which does not run during a synchronous test."""
    nats_server = EmbeddedNats(tmp_path_factory.mktemp("nats-openapi"), config=NATS_CONFIG)
    nats_server.start()
    ready = threading.Event()
    state: dict[str, Any] = {}

    async def main() -> None:
        stop = state["stop"] = asyncio.Event()
        state["loop"] = asyncio.get_running_loop()
        async with running_worker(
            [cache.component, shelf.component], nats_server.url, redis_url=valkey.url
        ):
            sock = bind("127.0.0.1", 0)
            settings = bridge_settings(
                nats_server.url, components=["cache", "shelf"], request_timeout=5
            )
            srv = server(settings, handle_signals=False)
            task = asyncio.create_task(serve(srv, sock))
            while not srv.started:
                await asyncio.sleep(0.005)
            state["url"] = address(sock)
            ready.set()
            await stop.wait()
            srv.should_exit = True
            await task

    thread = threading.Thread(target=lambda: asyncio.run(main()), daemon=True)
    thread.start()
    assert ready.wait(30), "bridge did not start"
    for _ in range(200):
        if httpx.get(state["url"] + "/readyz").status_code == 200:
            break
    try:
        yield str(state["url"])
    finally:
        state["loop"].call_soon_threadsafe(state["stop"].set)
        thread.join(30)
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


def test_docs_page_lists_the_operations(live_bridge: str) -> None:
    """/docs is a self-contained HTML listing of the routes (nothing loaded from elsewhere)."""
    page = httpx.get(live_bridge + "/docs")
    assert page.status_code == 200
    assert "PUT /api/v1/cache/keys/{key}" in page.text
    assert "<script" not in page.text


def test_auth_mode_documents_the_bearer_scheme() -> None:
    """With auth on, the document declares the bearer JWT scheme and requires it."""
    from bridge.openapi import document as build

    settings = bridge_settings(
        "nats://x", auth="jwt", jwt_secret="s" * 32, jwt_issuer="i", jwt_audience="a"
    )
    doc = build(bindings(services().values()), settings)
    assert doc["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    assert doc["security"] == [{"bearerAuth": []}]


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
