"""Tenant isolation in the prompt component, for every operation: what tenant a stores, tenant
b can neither see, render, label, delete nor list — even using the very same names.

b's token is a prefix of a's, the closest a mix-up in SQL or subjects could get.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from nats.aio.client import Client as NATS

from aifleet.embedded import EmbeddedNats, EmbeddedPostgres
from schemas.errors import NotFound
from schemas.v1.common_pb2 import ChatMessage
from schemas.v1.prompt_pb2 import (
    BuildContextRequest,
    BuildContextResponse,
    CreateTemplateRequest,
    CreateTemplateResponse,
    DeleteTemplateRequest,
    DeleteTemplateResponse,
    GetTemplateRequest,
    GetTemplateResponse,
    ListTemplatesRequest,
    ListTemplatesResponse,
    RenderRequest,
    RenderResponse,
    SetLabelRequest,
    SetLabelResponse,
)
from tests.support.fleet import running_worker
from tests.support.prompt import PromptDb, event_count, read_events
from workers.prompt import service as prompt
from workers.runtime.client import Client
from workers.runtime.worker import Worker

NAMES = ("greet", "rag.answer")


@pytest.fixture(scope="module")
async def worker(nats_server: EmbeddedNats, postgres: EmbeddedPostgres) -> AsyncIterator[Worker]:
    async with running_worker([prompt.component], nats_server.url, database_url=postgres.dsn) as w:
        yield w


@pytest.fixture(scope="module")
async def db(postgres: EmbeddedPostgres) -> AsyncIterator[PromptDb]:
    async with PromptDb.connect(postgres.dsn) as found:
        yield found


@pytest.fixture
def tenants() -> tuple[str, str]:
    b = "i" + uuid.uuid4().hex[:12]
    return b + "a", b


@pytest.fixture
async def client(nc: NATS, worker: Worker, tenants: tuple[str, str]) -> Client:
    """A client, with tenant a's templates stored: two versions each, production on 1."""
    c = Client(nc, timeout=10.0)
    a, _ = tenants
    for name in NAMES:
        for text in ("a's {{x}} v1", "a's {{x}} v2"):
            await c.call(
                a,
                "prompt",
                "create_template",
                CreateTemplateRequest(name=name, text=text),
                CreateTemplateResponse,
            )
        await c.call(
            a,
            "prompt",
            "set_label",
            SetLabelRequest(name=name, label="production", version=1),
            SetLabelResponse,
        )
    return c


async def assert_a_untouched(client: Client, db: PromptDb, a: str) -> None:
    assert await db.row_counts(a) == {"names": 2, "versions": 4, "labels": 2, "outbox": 0}
    for name in NAMES:
        assert await db.versions(a, name) == [1, 2]
        assert await db.labels(a, name) == {"production": 1}
        got = await client.call(
            a,
            "prompt",
            "render",
            RenderRequest(name=name, label="production", variables={"x": "!"}),
            RenderResponse,
        )
        assert got.text == "a's ! v1"


async def test_other_tenant_cannot_get(
    client: Client, db: PromptDb, tenants: tuple[str, str]
) -> None:
    """b's get of a's names, by version, label or latest, is 404."""
    a, b = tenants
    for name in NAMES:
        for ref in ({}, {"version": 1}, {"label": "production"}, {"label": "latest"}):
            with pytest.raises(NotFound):
                await client.call(
                    b,
                    "prompt",
                    "get_template",
                    GetTemplateRequest(name=name, **ref),
                    GetTemplateResponse,
                )
    await assert_a_untouched(client, db, a)


async def test_other_tenant_cannot_render(
    client: Client, db: PromptDb, tenants: tuple[str, str]
) -> None:
    """b's render of a's names is 404, even right after a rendered them (a warm cache)."""
    a, b = tenants
    await assert_a_untouched(client, db, a)
    for name in NAMES:
        for ref in ({}, {"version": 2}, {"label": "production"}):
            with pytest.raises(NotFound):
                await client.call(
                    b,
                    "prompt",
                    "render",
                    RenderRequest(name=name, variables={"x": "1"}, **ref),
                    RenderResponse,
                )


async def test_other_tenant_lists_none_of_a(
    client: Client, db: PromptDb, tenants: tuple[str, str]
) -> None:
    """b's listing, in either order and with a's prefixes, is empty; a's holds a's names."""
    a, b = tenants
    for order in (ListTemplatesRequest.ORDER_NEWEST, ListTemplatesRequest.ORDER_NAME):
        for prefix in ("", "g", "rag."):
            got = await client.call(
                b,
                "prompt",
                "list_templates",
                ListTemplatesRequest(order=order, name_prefix=prefix),
                ListTemplatesResponse,
            )
            assert list(got.templates) == []
    got = await client.call(
        a,
        "prompt",
        "list_templates",
        ListTemplatesRequest(order=ListTemplatesRequest.ORDER_NAME),
        ListTemplatesResponse,
    )
    assert [t.name for t in got.templates] == sorted(NAMES)


async def test_other_tenant_cannot_move_a_label(
    client: Client, db: PromptDb, tenants: tuple[str, str]
) -> None:
    """b's set_label on a's names is 404; a's production stays on version 1."""
    a, b = tenants
    for name in NAMES:
        with pytest.raises(NotFound):
            await client.call(
                b,
                "prompt",
                "set_label",
                SetLabelRequest(name=name, label="production", version=2),
                SetLabelResponse,
            )
    await assert_a_untouched(client, db, a)


async def test_other_tenant_cannot_delete(
    client: Client, db: PromptDb, tenants: tuple[str, str]
) -> None:
    """b's deletes of a's versions or whole names, forced or not, are 404 and remove nothing."""
    a, b = tenants
    for name in NAMES:
        for fields in ({"version": 2}, {"version": 1, "force": True}, {"all_versions": True}):
            with pytest.raises(NotFound):
                await client.call(
                    b,
                    "prompt",
                    "delete_template",
                    DeleteTemplateRequest(name=name, **fields),
                    DeleteTemplateResponse,
                )
    await assert_a_untouched(client, db, a)


async def test_same_names_in_another_tenant_are_separate(
    client: Client, db: PromptDb, tenants: tuple[str, str]
) -> None:
    """b creating a's names starts at version 1 with b's own content and labels; each tenant
    renders its own."""
    a, b = tenants
    for name in NAMES:
        created = await client.call(
            b,
            "prompt",
            "create_template",
            CreateTemplateRequest(name=name, text="b's {{x}}", labels=["production"]),
            CreateTemplateResponse,
        )
        assert created.template.version == 1
        got = await client.call(
            b,
            "prompt",
            "render",
            RenderRequest(name=name, label="production", variables={"x": "?"}),
            RenderResponse,
        )
        assert got.text == "b's ?"
    await assert_a_untouched(client, db, a)


async def test_build_context_stores_nothing_for_any_tenant(
    client: Client, db: PromptDb, tenants: tuple[str, str]
) -> None:
    """build_context is stateless: it writes no row and publishes no event for the caller, and
    answers b from b's request alone."""
    a, b = tenants
    req = BuildContextRequest(
        model="gpt-4o", budget_tokens=200, messages=[ChatMessage(role="user", content="b only")]
    )
    got = await client.call(b, "prompt", "build_context", req, BuildContextResponse)
    assert [m.content for m in got.messages] == ["b only"]
    assert await db.row_counts(b) == {"names": 0, "versions": 0, "labels": 0, "outbox": 0}
    assert await event_count(client.nc, b) == 0
    await assert_a_untouched(client, db, a)


async def test_events_go_to_the_acting_tenant_only(
    client: Client, nc: NATS, tenants: tuple[str, str]
) -> None:
    """a's changes publish under a's subjects; nothing appears under b's."""
    a, b = tenants
    assert len(await read_events(nc, a, "template_created")) == 4
    assert len(await read_events(nc, a, "label_moved")) == 2
    assert await event_count(nc, b) == 0
