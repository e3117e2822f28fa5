"""The prompt component end to end: real worker(s), real NATS + JetStream, real PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import msgpack
import pytest
from google.protobuf import struct_pb2
from nats.aio.client import Client as NATS

from aifleet.embedded import EmbeddedNats, EmbeddedPostgres
from schemas.codec import JSON_CODEC, MSGPACK_CODEC, PROTOBUF_CODEC, Codec
from schemas.errors import BadRequest, Conflict, NotFound, Unprocessable
from schemas.v1.common_pb2 import ChatMessage, PageRequest
from schemas.v1.prompt_pb2 import (
    BuildContextRequest,
    BuildContextResponse,
    ContextDocument,
    CreateTemplateRequest,
    CreateTemplateResponse,
    DeleteTemplateRequest,
    DeleteTemplateResponse,
    GetTemplateRequest,
    GetTemplateResponse,
    ListTemplatesRequest,
    ListTemplatesResponse,
    PromptLabelMovedEvent,
    PromptTemplateCreatedEvent,
    PromptTemplateDeletedEvent,
    RenderRequest,
    RenderResponse,
    SetLabelRequest,
    SetLabelResponse,
    Template,
)
from subjects import HEADER_CONTENT_TYPE, HEADER_MESSAGE_TYPE, HEADER_USER_ID, request_subject
from tests.support.fleet import running_worker
from tests.support.polling import eventually
from tests.support.prompt import PromptDb, read_events
from workers.prompt import service as prompt
from workers.prompt.store import PromptStore
from workers.runtime.client import Client
from workers.runtime.events import EventPublisher
from workers.runtime.outbox import Outbox
from workers.runtime.worker import Worker


@pytest.fixture(scope="module")
async def worker(nats_server: EmbeddedNats, postgres: EmbeddedPostgres) -> AsyncIterator[Worker]:
    """One prompt worker for the module; its outbox flusher runs every 0.2 s."""
    async with running_worker(
        [prompt.component],
        nats_server.url,
        database_url=postgres.dsn,
        outbox_interval=0.2,
        outbox_grace=0.5,
    ) as w:
        yield w


@pytest.fixture(scope="module")
async def db(postgres: EmbeddedPostgres) -> AsyncIterator[PromptDb]:
    async with PromptDb.connect(postgres.dsn) as found:
        yield found


@pytest.fixture
def tenant() -> str:
    return "p" + uuid.uuid4().hex[:16]


@pytest.fixture
def client(nc: NATS, worker: Worker) -> Client:
    return Client(nc, timeout=10.0)


def struct(data: dict[str, Any]) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    out.update(data)
    return out


async def create(client: Client, tenant: str, **fields: Any) -> Template:
    reply = await client.call(
        tenant, "prompt", "create_template", CreateTemplateRequest(**fields), CreateTemplateResponse
    )
    return reply.template


async def get(client: Client, tenant: str, name: str, **ref: Any) -> Template:
    reply = await client.call(
        tenant, "prompt", "get_template", GetTemplateRequest(name=name, **ref), GetTemplateResponse
    )
    return reply.template


async def render(client: Client, tenant: str, name: str, **fields: Any) -> RenderResponse:
    return await client.call(
        tenant, "prompt", "render", RenderRequest(name=name, **fields), RenderResponse
    )


async def set_label(client: Client, tenant: str, name: str, label: str, version: int) -> Any:
    return await client.call(
        tenant,
        "prompt",
        "set_label",
        SetLabelRequest(name=name, label=label, version=version),
        SetLabelResponse,
    )


async def delete(client: Client, tenant: str, name: str, **fields: Any) -> DeleteTemplateResponse:
    return await client.call(
        tenant,
        "prompt",
        "delete_template",
        DeleteTemplateRequest(name=name, **fields),
        DeleteTemplateResponse,
    )


async def list_all(client: Client, tenant: str, **fields: Any) -> ListTemplatesResponse:
    return await client.call(
        tenant, "prompt", "list_templates", ListTemplatesRequest(**fields), ListTemplatesResponse
    )


# -- create and get -------------------------------------------------------------------------


async def test_create_text_template_returns_version_one_with_its_variables(
    client: Client, tenant: str
) -> None:
    """The first version of a name is 1, labelled latest, with its placeholders in order."""
    created = await create(
        client, tenant, name="greet", text="Hi {{ name }}, {{greeting}} {{name}}"
    )
    assert (created.name, created.version, created.kind) == ("greet", 1, "text")
    assert list(created.variables) == ["name", "greeting"]
    assert list(created.labels) == ["latest"]
    assert created.created_at.seconds > 0
    got = await get(client, tenant, "greet", version=1)
    assert got == created


async def test_chat_template_with_config_and_metadata_round_trips(
    client: Client, tenant: str
) -> None:
    """Messages, config and metadata come back exactly as stored."""
    config = struct({"model": "gpt-4o", "temperature": 0.2, "max_tokens": 256, "stop": ["\n"]})
    metadata = struct({"ticket": "PROMPT-7", "reviewed": True, "nested": {"a": None}})
    created = await create(
        client,
        tenant,
        name="support.triage",
        messages=[
            ChatMessage(role="system", content="You are {{ persona }}."),
            ChatMessage(role="user", content="{{question}}", name="customer_1"),
        ],
        config=config,
        metadata=metadata,
    )
    got = await get(client, tenant, "support.triage")
    assert got.kind == "chat"
    assert [(m.role, m.content, m.name) for m in got.messages] == [
        ("system", "You are {{ persona }}.", ""),
        ("user", "{{question}}", "customer_1"),
    ]
    assert got.config == config
    assert got.metadata == metadata
    assert list(got.variables) == ["persona", "question"]
    assert got == created


async def test_created_by_is_the_callers_user_id(nc: NATS, worker: Worker, tenant: str) -> None:
    """X-User-ID (set by the bridge from the verified token) is recorded with the version."""
    client = Client(nc, timeout=10.0)
    reply = await client.call(
        tenant,
        "prompt",
        "create_template",
        CreateTemplateRequest(name="owned", text="x"),
        CreateTemplateResponse,
        headers={HEADER_USER_ID: "user-42"},
    )
    assert reply.template.created_by == "user-42"


async def test_versions_are_immutable(client: Client, tenant: str, db: PromptDb) -> None:
    """A new create never changes an existing version, the same content makes a new version,
    and the database refuses any UPDATE of a version."""
    v1 = await create(client, tenant, name="t", text="one {{x}}", config=struct({"m": "a"}))
    v2 = await create(client, tenant, name="t", text="two {{y}}", config=struct({"m": "b"}))
    v3 = await create(client, tenant, name="t", text="one {{x}}", config=struct({"m": "a"}))
    assert (v1.version, v2.version, v3.version) == (1, 2, 3)
    again = await get(client, tenant, "t", version=1)
    assert (again.text, again.config, list(again.variables)) == ("one {{x}}", v1.config, ["x"])
    assert again.created_at == v1.created_at
    with pytest.raises(Exception, match="immutable"):
        await db.pool.execute(
            "UPDATE prompt.versions SET body = '\"changed\"' WHERE tenant = $1 AND name = 't'",
            tenant,
        )
    assert (await get(client, tenant, "t", version=1)).text == "one {{x}}"


async def test_concurrent_creates_get_distinct_consecutive_versions(
    client: Client, tenant: str, db: PromptDb
) -> None:
    """20 creates of one name at once: versions 1..20, each exactly once, each stored with the
    content its caller sent."""
    texts = [f"variant {i} {{{{x}}}}" for i in range(20)]
    replies = await asyncio.gather(*(create(client, tenant, name="race", text=t) for t in texts))
    assert sorted(r.version for r in replies) == list(range(1, 21))
    assert await db.versions(tenant, "race") == list(range(1, 21))
    for reply in replies:
        assert (await get(client, tenant, "race", version=reply.version)).text == reply.text
    assert (await get(client, tenant, "race")).version == 20


async def test_latest_follows_the_newest_existing_version(client: Client, tenant: str) -> None:
    """latest is the newest version; deleting the newest moves latest back."""
    await create(client, tenant, name="n", text="a")
    await create(client, tenant, name="n", text="b")
    latest = await get(client, tenant, "n")
    assert (latest.version, list(latest.labels)) == (2, ["latest"])
    assert (await get(client, tenant, "n", label="latest")).version == 2
    await delete(client, tenant, "n", version=2)
    assert (await get(client, tenant, "n")).version == 1
    assert list((await get(client, tenant, "n", version=1)).labels) == ["latest"]


async def test_version_numbers_are_never_reused(client: Client, tenant: str) -> None:
    """After the whole name is deleted, creating it again continues the numbering."""
    for _ in range(3):
        await create(client, tenant, name="again", text="x")
    deleted = await delete(client, tenant, "again", all_versions=True)
    assert list(deleted.deleted_versions) == [1, 2, 3]
    with pytest.raises(NotFound):
        await get(client, tenant, "again")
    recreated = await create(client, tenant, name="again", text="y")
    assert recreated.version == 4
    with pytest.raises(NotFound):
        await get(client, tenant, "again", version=1)


async def test_get_of_missing_name_version_or_label_is_404(client: Client, tenant: str) -> None:
    """Unknown name, version or label: 404 NOT_FOUND naming what is missing."""
    await create(client, tenant, name="exists", text="x")
    with pytest.raises(NotFound, match="no template named nope"):
        await get(client, tenant, "nope")
    with pytest.raises(NotFound, match="no version 9"):
        await get(client, tenant, "exists", version=9)
    with pytest.raises(NotFound, match="no label production"):
        await get(client, tenant, "exists", label="production")


async def test_create_with_labels_points_them_at_the_new_version(
    client: Client, tenant: str, db: PromptDb
) -> None:
    """Labels given to create point at the new version in the same transaction."""
    await create(client, tenant, name="l", text="a", labels=["staging"])
    v2 = await create(client, tenant, name="l", text="b", labels=["staging", "canary"])
    assert list(v2.labels) == ["canary", "latest", "staging"]
    assert await db.labels(tenant, "l") == {"staging": 2, "canary": 2}


# -- labels and render ----------------------------------------------------------------------


async def test_moving_production_changes_what_render_returns(client: Client, tenant: str) -> None:
    """render by label follows the label, back and forth; render by version does not move."""
    await create(client, tenant, name="p", text="first {{x}}")
    await create(client, tenant, name="p", text="second {{x}}")
    moved = await set_label(client, tenant, "p", "production", 1)
    assert (moved.version, moved.previous_version) == (1, 0)
    assert (await render(client, tenant, "p", label="production", variables={"x": "!"})).text == (
        "first !"
    )
    moved = await set_label(client, tenant, "p", "production", 2)
    assert moved.previous_version == 1
    rendered = await render(client, tenant, "p", label="production", variables={"x": "!"})
    assert (rendered.text, rendered.version) == ("second !", 2)
    await set_label(client, tenant, "p", "production", 1)
    assert (await render(client, tenant, "p", label="production", variables={"x": "?"})).text == (
        "first ?"
    )
    assert (await render(client, tenant, "p", version=2, variables={"x": "v"})).text == "second v"
    assert (await render(client, tenant, "p", variables={"x": "l"})).text == "second l"


async def test_label_moves_reach_every_replica_at_once(
    nats_server: EmbeddedNats, postgres: EmbeddedPostgres, client: Client, tenant: str
) -> None:
    """With two replicas sharing requests (both have the template compiled and cached), every
    render after a label move returns the new version: labels are resolved in SQL per render."""
    async with running_worker([prompt.component], nats_server.url, database_url=postgres.dsn):
        await create(client, tenant, name="r", text="old")
        await create(client, tenant, name="r", text="new")
        await set_label(client, tenant, "r", "production", 1)
        before = [(await render(client, tenant, "r", label="production")).text for _ in range(30)]
        await set_label(client, tenant, "r", "production", 2)
        after = [(await render(client, tenant, "r", label="production")).text for _ in range(30)]
        await delete(client, tenant, "r", version=1)
        with pytest.raises(NotFound):
            await render(client, tenant, "r", version=1)
    assert set(before) == {"old"}
    assert set(after) == {"new"}


async def test_set_label_checks_name_and_version(client: Client, tenant: str, db: PromptDb) -> None:
    """A label can only point at an existing version; latest cannot be set by hand."""
    await create(client, tenant, name="s", text="a")
    with pytest.raises(NotFound):
        await set_label(client, tenant, "s", "production", 2)
    with pytest.raises(NotFound):
        await set_label(client, tenant, "absent", "production", 1)
    with pytest.raises(BadRequest, match="latest is managed"):
        await set_label(client, tenant, "s", "latest", 1)
    assert await db.labels(tenant, "s") == {}
    same = await set_label(client, tenant, "s", "production", 1)
    again = await set_label(client, tenant, "s", "production", 1)
    assert (same.previous_version, again.previous_version) == (0, 1)


async def test_render_text_fills_placeholders_and_reports_unused(
    client: Client, tenant: str
) -> None:
    """Every placeholder is filled; extra variables are reported, sorted; config comes along."""
    await create(
        client,
        tenant,
        name="q",
        text="Answer {{question}} as {{ persona }}.",
        config=struct({"model": "gpt-4o-mini", "temperature": 0}),
    )
    rendered = await render(
        client,
        tenant,
        "q",
        variables={"question": "why", "persona": "a pirate", "zzz": "1", "extra": "2"},
    )
    assert rendered.text == "Answer why as a pirate."
    assert list(rendered.unused_variables) == ["extra", "zzz"]
    assert (rendered.kind, rendered.version) == ("text", 1)
    assert rendered.config == struct({"model": "gpt-4o-mini", "temperature": 0})


async def test_render_chat_returns_messages(client: Client, tenant: str) -> None:
    """A chat template renders into messages with roles and names kept."""
    await create(
        client,
        tenant,
        name="chat",
        messages=[
            ChatMessage(role="system", content="Be {{tone}}."),
            ChatMessage(role="user", content="{{ q }}", name="ada"),
        ],
    )
    rendered = await render(client, tenant, "chat", variables={"tone": "brief", "q": "Hi?"})
    assert rendered.kind == "chat"
    assert rendered.text == ""
    assert [(m.role, m.content, m.name) for m in rendered.messages] == [
        ("system", "Be brief.", ""),
        ("user", "Hi?", "ada"),
    ]


async def test_missing_variables_are_422_naming_them(client: Client, tenant: str) -> None:
    """A render without a value for a placeholder: 422 UNPROCESSABLE naming each missing one."""
    await create(client, tenant, name="m", text="{{a}} {{ b }} {{c}}")
    with pytest.raises(Unprocessable) as raised:
        await render(client, tenant, "m", variables={"b": "x"})
    assert raised.value.status == 422
    assert raised.value.details["missing"] == ["a", "c"]
    assert "a, c" in raised.value.message


@pytest.mark.parametrize(
    "value",
    [
        "{{ secret }}",
        "{{ __class__.__mro__[1].__subclasses__() }}",
        "{% for x in range(9) %}{{x}}{% endfor %}",
        "${HOME} $(id) `id`",
        "\\{{ a }}",
        "{{{{ nested }}}}",
    ],
)
async def test_injection_in_a_variable_renders_as_plain_text(
    client: Client, tenant: str, value: str
) -> None:
    """A value full of template syntax is inserted verbatim and never evaluated or rescanned."""
    await create(client, tenant, name="inj", text="[{{ v }}] {{secret}}")
    rendered = await render(client, tenant, "inj", variables={"v": value, "secret": "S"})
    assert rendered.text == f"[{value}] S"


@pytest.mark.parametrize(
    "text",
    ["{{ __class__ }}", "{{ a.b }}", "{{ x|attr('y') }}", "{{ cycler.__init__ }}", "{{ 7*7 }}"],
)
async def test_injection_in_a_template_is_refused_and_nothing_is_stored(
    client: Client, tenant: str, db: PromptDb, text: str
) -> None:
    """Expressions inside `{{ }}` are invalid placeholder syntax: 400 at create, nothing
    written, so no such template can ever be rendered."""
    with pytest.raises(BadRequest, match="invalid placeholder") as raised:
        await create(client, tenant, name="bad", text=f"ok {text}")
    assert raised.value.details["column"] == 4
    assert await db.row_counts(tenant) == {"names": 0, "versions": 0, "labels": 0, "outbox": 0}


async def test_other_template_syntaxes_are_plain_text(client: Client, tenant: str) -> None:
    """`{% for %}`, `${x}`, `<%= %>` and escaped `\\{{` are stored and rendered as text."""
    text = "{% for x in y %}${x}<%= x %>{x}}} \\{{ literal }} {{ real }}"
    created = await create(client, tenant, name="plain", text=text)
    assert list(created.variables) == ["real"]
    rendered = await render(client, tenant, "plain", variables={"real": "R"})
    assert rendered.text == "{% for x in y %}${x}<%= x %>{x}}} {{ literal }} R"


async def test_render_of_a_missing_version_or_label_is_404(client: Client, tenant: str) -> None:
    """Render resolves like get: unknown name, version or label is 404."""
    await create(client, tenant, name="x", text="x")
    for ref in ({"version": 5}, {"label": "production"}):
        with pytest.raises(NotFound):
            await render(client, tenant, "x", **ref)
    with pytest.raises(NotFound):
        await render(client, tenant, "y")


@pytest.mark.parametrize("codec", [PROTOBUF_CODEC, MSGPACK_CODEC, JSON_CODEC], ids=repr)
async def test_render_works_in_every_encoding(
    nc: NATS, worker: Worker, tenant: str, codec: Codec
) -> None:
    """The typed client renders in protobuf, msgpack and JSON alike."""
    client = Client(nc, codec=codec, timeout=10.0)
    await create(client, tenant, name="enc", text="{{a}}+{{b}}", config=struct({"t": 1.5}))
    rendered = await render(client, tenant, "enc", variables={"a": "1", "b": "é"})
    assert (rendered.text, rendered.config) == ("1+é", struct({"t": 1.5}))


async def test_plain_nats_client_speaks_json(nc: NATS, worker: Worker, tenant: str) -> None:
    """Any language: JSON in, JSON out, field names as in the .proto."""
    body: dict[str, Any] = {"name": "j", "text": "Hello {{who}}", "labels": ["production"]}
    reply = await nc.request(
        request_subject(tenant, "prompt", "create_template"), json.dumps(body).encode(), 10
    )
    created = json.loads(reply.data)["template"]
    assert (created["version"], created["labels"]) == (1, ["latest", "production"])
    body = {"name": "j", "label": "production", "variables": {"who": "NATS"}}
    reply = await nc.request(
        request_subject(tenant, "prompt", "render"),
        msgpack.packb(body),
        10,
        headers={HEADER_CONTENT_TYPE: "application/msgpack"},
    )
    assert msgpack.unpackb(reply.data)["text"] == "Hello NATS"


# -- delete -----------------------------------------------------------------------------------


async def test_deleting_a_labelled_version_is_409_unless_forced(
    client: Client, tenant: str, db: PromptDb
) -> None:
    """production on a version protects it; force removes the version and the label."""
    await create(client, tenant, name="d", text="a", labels=["production", "staging"])
    await create(client, tenant, name="d", text="b")
    with pytest.raises(Conflict) as raised:
        await delete(client, tenant, "d", version=1)
    assert raised.value.details["labels"] == ["production", "staging"]
    assert await db.versions(tenant, "d") == [1, 2]
    deleted = await delete(client, tenant, "d", version=1, force=True)
    assert (list(deleted.deleted_versions), list(deleted.removed_labels)) == (
        [1],
        ["production", "staging"],
    )
    assert await db.versions(tenant, "d") == [2]
    assert await db.labels(tenant, "d") == {}
    with pytest.raises(NotFound):
        await render(client, tenant, "d", label="production")


async def test_deleting_the_newest_version_is_not_protected_by_latest(
    client: Client, tenant: str
) -> None:
    """latest is not a lock: the newest version can be deleted and latest follows."""
    await create(client, tenant, name="nl", text="a")
    await create(client, tenant, name="nl", text="b")
    deleted = await delete(client, tenant, "nl", version=2)
    assert list(deleted.removed_labels) == []
    assert (await get(client, tenant, "nl")).text == "a"


async def test_delete_of_missing_things_is_404_and_needs_a_target(
    client: Client, tenant: str
) -> None:
    """Unknown name or version: 404; neither version nor all_versions: 400."""
    await create(client, tenant, name="e", text="a")
    with pytest.raises(NotFound):
        await delete(client, tenant, "e", version=7)
    with pytest.raises(NotFound):
        await delete(client, tenant, "f", all_versions=True)
    with pytest.raises(BadRequest):
        await delete(client, tenant, "e")
    with pytest.raises(BadRequest):
        await delete(client, tenant, "e", version=1, all_versions=True)
    assert (await get(client, tenant, "e")).version == 1


# -- list -------------------------------------------------------------------------------------


async def test_list_pages_by_name_with_labels(client: Client, tenant: str) -> None:
    """Paging by name visits every name once, in order, each with all its labels."""
    names = [f"n{i:02d}" for i in range(7)]
    for name in reversed(names):
        await create(client, tenant, name=name, text="v1")
    await create(client, tenant, name="n03", text="v2")
    await set_label(client, tenant, "n03", "production", 1)
    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        page = await list_all(
            client,
            tenant,
            order=ListTemplatesRequest.ORDER_NAME,
            page=PageRequest(page_size=3, page_token=token),
        )
        pages += 1
        seen += [t.name for t in page.templates]
        for t in page.templates:
            if t.name == "n03":
                assert (t.latest_version, t.version_count) == (2, 2)
                assert dict(t.labels) == {"latest": 2, "production": 1}
            else:
                assert dict(t.labels) == {"latest": 1}
        token = page.page.next_page_token
        if not token:
            break
    assert (seen, pages) == (names, 3)


async def test_list_newest_first_follows_changes(client: Client, tenant: str) -> None:
    """Newest first: the most recently changed name leads; deleted names are not listed."""
    for name in ("a", "b", "c", "gone"):
        await create(client, tenant, name=name, text="x")
    await delete(client, tenant, "gone", all_versions=True)
    await create(client, tenant, name="a", text="y")
    first = await list_all(client, tenant, page=PageRequest(page_size=2))
    assert [t.name for t in first.templates] == ["a", "c"]
    rest = await list_all(
        client, tenant, page=PageRequest(page_size=2, page_token=first.page.next_page_token)
    )
    assert [t.name for t in rest.templates] == ["b"]
    assert rest.page.next_page_token == ""
    assert first.templates[0].updated_at.ToDatetime() >= first.templates[1].updated_at.ToDatetime()


async def test_list_filters_by_name_prefix(client: Client, tenant: str) -> None:
    """name_prefix keeps only names starting with it (no LIKE wildcards: `_` is literal)."""
    for name in ("rag.answer", "rag.rewrite", "ragx", "r_g", "rxg"):
        await create(client, tenant, name=name, text="x")
    found = await list_all(
        client, tenant, name_prefix="rag.", order=ListTemplatesRequest.ORDER_NAME
    )
    assert [t.name for t in found.templates] == ["rag.answer", "rag.rewrite"]
    found = await list_all(client, tenant, name_prefix="r_", order=ListTemplatesRequest.ORDER_NAME)
    assert [t.name for t in found.templates] == ["r_g"]


async def test_a_page_token_only_continues_its_own_listing(client: Client, tenant: str) -> None:
    """A token from a by-name listing is refused for a newest-first one (400)."""
    for name in ("a", "b"):
        await create(client, tenant, name=name, text="x")
    page = await list_all(
        client, tenant, order=ListTemplatesRequest.ORDER_NAME, page=PageRequest(page_size=1)
    )
    with pytest.raises(BadRequest):
        await list_all(client, tenant, page=PageRequest(page_token=page.page.next_page_token))


# -- build_context ----------------------------------------------------------------------------


async def test_build_context_keeps_what_fits_and_reports_what_was_dropped(
    client: Client, tenant: str
) -> None:
    """Over NATS: system prompt and newest turn kept, oldest turns dropped, counts reported."""
    messages = []
    for i in range(10):
        messages.append(ChatMessage(role="user", content=f"question {i} " + "word " * 30))
        messages.append(ChatMessage(role="assistant", content=f"answer {i} " + "word " * 30))
    req = BuildContextRequest(
        model="gpt-4o",
        budget_tokens=300,
        system_prompt="You are terse.",
        messages=messages,
    )
    reply = await client.call(tenant, "prompt", "build_context", req, BuildContextResponse)
    assert reply.total_tokens <= 300
    assert (reply.tokenizer, reply.exact) == ("o200k_base", True)
    assert reply.messages[0].content == "You are terse."
    assert list(reply.messages[-2:]) == messages[-2:]
    dropped = list(reply.dropped_message_indexes)
    assert dropped == list(range(len(dropped)))
    assert len(reply.messages) - 1 + len(dropped) == len(messages)
    assert reply.total_tokens == 3 + sum(reply.message_tokens)


async def test_build_context_includes_documents_and_drops_the_least_relevant(
    client: Client, tenant: str
) -> None:
    """Documents go in one system message after the system prompt; the last ones are dropped
    first, after all older turns."""
    docs = [ContextDocument(id=f"d{i}", content="fact " * 40) for i in range(5)]
    req = BuildContextRequest(
        model="claude-3-5-sonnet",
        budget_tokens=250,
        system_prompt="Answer from the documents.",
        messages=[
            ChatMessage(role="user", content="old question " + "word " * 60),
            ChatMessage(role="assistant", content="old answer " + "word " * 60),
            ChatMessage(role="user", content="new question"),
        ],
        documents=docs,
    )
    reply = await client.call(tenant, "prompt", "build_context", req, BuildContextResponse)
    assert reply.exact is False
    assert reply.tokenizer == "approximate:o200k_base*1.3"
    assert list(reply.dropped_message_indexes) == [0, 1]
    dropped = list(reply.dropped_document_indexes)
    assert 0 < len(dropped) < 5
    assert dropped == list(range(5 - len(dropped), 5))
    assert reply.messages[1].role == "system"
    assert reply.messages[1].content.startswith("Documents:\n\n[d0]\n")
    assert reply.messages[-1].content == "new question"
    assert reply.total_tokens <= 250


async def test_build_context_over_budget_for_the_essentials_is_422(
    client: Client, tenant: str
) -> None:
    """System prompt plus newest turn over the budget: 422 with the tokens they need."""
    req = BuildContextRequest(
        model="gpt-4",
        budget_tokens=20,
        system_prompt="A system prompt that is long enough " * 3,
        messages=[ChatMessage(role="user", content="hi")],
    )
    with pytest.raises(Unprocessable) as raised:
        await client.call(tenant, "prompt", "build_context", req, BuildContextResponse)
    assert raised.value.details["budget_tokens"] == 20
    assert raised.value.details["required_tokens"] > 20


# -- events -----------------------------------------------------------------------------------


async def test_changes_publish_events_and_leave_no_outbox_rows(
    nc: NATS, client: Client, tenant: str, db: PromptDb
) -> None:
    """Create, set_label and delete publish typed events under the tenant's subjects."""
    await create(client, tenant, name="ev", text="{{a}}", labels=["staging"])
    await set_label(client, tenant, "ev", "production", 1)
    await create(client, tenant, name="ev", text="b")
    await delete(client, tenant, "ev", version=1, force=True)

    created = await read_events(nc, tenant, "template_created")
    assert [m.headers[HEADER_MESSAGE_TYPE] for m in created if m.headers] == [
        "aifleet.v1.PromptTemplateCreatedEvent"
    ] * 2
    bodies = [PromptTemplateCreatedEvent.FromString(m.data) for m in created]
    assert [(e.name, e.version, e.kind, list(e.variables)) for e in bodies] == [
        ("ev", 1, "text", ["a"]),
        ("ev", 2, "text", []),
    ]
    moved = [
        PromptLabelMovedEvent.FromString(m.data)
        for m in await read_events(nc, tenant, "label_moved")
    ]
    assert [(e.label, e.version, e.previous_version) for e in moved] == [
        ("staging", 1, 0),
        ("production", 1, 0),
        ("production", 0, 1),
        ("staging", 0, 1),
    ]
    deleted = [
        PromptTemplateDeletedEvent.FromString(m.data)
        for m in await read_events(nc, tenant, "template_deleted")
    ]
    assert [(list(e.versions), e.all_versions) for e in deleted] == [([1], False)]
    assert (await db.row_counts(tenant))["outbox"] == 0


async def test_an_event_left_in_the_outbox_is_published_by_the_flusher(
    nc: NATS, worker: Worker, tenant: str, db: PromptDb
) -> None:
    """A committed event whose publish never happened (the worker died, NATS was down) is
    published by the periodic flusher and its row removed."""
    event = PromptTemplateCreatedEvent(name="late", version=1, kind="text")
    await db.pool.execute(
        "INSERT INTO aifleet.outbox (msg_id, tenant, component, event, type, payload)"
        " VALUES ($1, $2, 'prompt', 'template_created', $3, $4)",
        "prompt-" + uuid.uuid4().hex,
        tenant,
        event.DESCRIPTOR.full_name,
        event.SerializeToString(),
    )

    async def published() -> bool:
        return len(await read_events(nc, tenant, "template_created")) == 1

    await eventually(published, timeout=15, what="the outbox row is published")
    msg = (await read_events(nc, tenant, "template_created"))[0]
    assert PromptTemplateCreatedEvent.FromString(msg.data) == event

    async def cleaned() -> bool:
        return (await db.row_counts(tenant))["outbox"] == 0

    await eventually(cleaned, timeout=15, what="the outbox row is deleted")


async def test_store_reads_are_scoped_by_tenant_in_sql(nc: NATS, tenant: str, db: PromptDb) -> None:
    """The store finds nothing of a tenant when asked as another (direct, without NATS)."""
    store = PromptStore(db.pool, Outbox(db.pool, EventPublisher(nc.jetstream())))
    row, _ = await store.create_version(
        tenant,
        "scoped",
        kind="text",
        body="x",
        variables=[],
        config={},
        metadata={},
        created_by="",
        labels=["production"],
        headers={},
    )
    other = tenant + "x"
    assert await store.resolve(other, "scoped", version=None, label=None) is None
    assert await store.resolve(other, "scoped", version=None, label="production") is None
    assert await store.body(other, "scoped", row.version) is None
    assert await store.get_version(other, "scoped", version=1, label=None) is None
    listed = await store.list_names(other, by_name=True, prefix="", after=None, limit=10)
    assert listed == []
    assert await store.resolve(tenant, "scoped", version=None, label="production") == 1
    await db.pool.execute("DELETE FROM aifleet.outbox WHERE tenant = $1", tenant)
