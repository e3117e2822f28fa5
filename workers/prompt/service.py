"""Prompt handlers: versioned templates with labels, strict rendering, token-budgeted context.

Validation happens before anything is written: a request that fails it changes nothing. Writes
commit their events to the outbox in the same transaction (see store.Outbox).

Render caches compiled templates by (tenant, name, version) only. That key always means the
same content (versions are immutable and their numbers never reused), so a cached entry can
never be stale; labels and `latest` are resolved in SQL on every render, together with the
version's existence, so a moved label or a deleted version takes effect on every replica at
once, with no invalidation messages.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import datetime as dt
import json
import math
import re
from collections import OrderedDict
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from google.protobuf import struct_pb2
from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from schemas.errors import BadRequest, Conflict, NotFound, PayloadTooLarge, Unprocessable
from schemas.v1 import prompt_pb2
from schemas.v1.common_pb2 import ChatMessage, PageResponse
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
    Template,
)
from workers.prompt import tokens
from workers.prompt.render import CompiledTemplate, compile_template
from workers.prompt.store import (
    SCHEMA,
    LabelledVersion,
    NameNotFound,
    Outbox,
    PendingEvent,
    PromptStore,
    VersionNotFound,
    VersionRow,
)
from workers.runtime.component import Component
from workers.runtime.config import load_settings
from workers.runtime.context import Context
from workers.runtime.events import EventPublisher
from workers.runtime.logs import get_logger
from workers.runtime.postgres import migrate
from workers.runtime.resources import Resources

MIGRATIONS = Path(__file__).resolve().with_name("migrations")
COMPONENT = "prompt"

NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}"
LABEL_PATTERN = r"[a-z0-9][a-z0-9_.-]{0,62}"
_NAME = re.compile(NAME_PATTERN + r"\Z")
_LABEL = re.compile(LABEL_PATTERN + r"\Z")
# OpenAI's rule for a chat participant name.
_PARTICIPANT = re.compile(r"[A-Za-z0-9_-]{1,64}\Z")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
ROLES = frozenset({"system", "developer", "user", "assistant", "tool"})
LATEST = "latest"
MAX_VERSION = 2**31 - 1  # the column is a PostgreSQL integer
DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE = 50, 200
DOCUMENTS_HEADER = "Documents:"
_YIELD_EVERY_CHARS = 256 * 1024

log = get_logger(component=COMPONENT)


class PromptSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="AIFLEET_PROMPT_", extra="ignore", frozen=True)

    max_template_bytes: int = Field(256 * 1024, ge=1, description="template text, all messages")
    max_template_messages: int = Field(256, ge=1)
    max_config_bytes: int = Field(64 * 1024, ge=2, description="config and metadata, as JSON")
    max_labels: int = Field(32, ge=1, description="labels one create may set")
    max_rendered_bytes: int = Field(1024 * 1024, ge=1)
    max_context_messages: int = Field(10_000, ge=1)
    max_context_documents: int = Field(1_000, ge=0)
    max_budget_tokens: int = Field(10_000_000, ge=1)
    approx_factor: float = Field(1.3, ge=1.0, le=10.0, description="non-OpenAI token estimate")
    preload_encodings: list[str] = Field(default_factory=lambda: list(tokens.ENCODINGS))
    cache_entries: int = Field(1024, ge=0, description="compiled templates kept; 0: no cache")
    cache_bytes: int = Field(64 * 1024 * 1024, ge=0)
    outbox_interval_seconds: float = Field(5.0, gt=0)
    outbox_grace_seconds: float = Field(2.0, ge=0)

    @field_validator("preload_encodings")
    @classmethod
    def _known_encodings(cls, value: list[str]) -> list[str]:
        unknown = set(value) - set(tokens.ENCODINGS)
        if unknown:
            raise ValueError(f"unknown encodings {sorted(unknown)}; known: {tokens.ENCODINGS}")
        return value


# -- validation ------------------------------------------------------------------------------


def _check_name(name: str, field: str = "name") -> str:
    if not name:
        raise BadRequest(f"{field} is required", details={"field": field})
    if not _NAME.match(name):
        raise BadRequest(
            f"{field} must match {NAME_PATTERN}", details={"field": field, "pattern": NAME_PATTERN}
        )
    return name


def _check_label(label: str, field: str = "label") -> str:
    if not _LABEL.match(label):
        raise BadRequest(
            f"{field} must match {LABEL_PATTERN}",
            details={"field": field, "pattern": LABEL_PATTERN},
        )
    return label


def _check_version(version: int, field: str = "version") -> int:
    if version > MAX_VERSION:
        raise BadRequest(f"{field} is out of range", details={"field": field})
    return version


def _reference(version: int, label: str) -> tuple[int | None, str | None]:
    """(version, label) of a get or render; neither means `latest`."""
    if version and label:
        raise BadRequest("give a version or a label, not both", details={"field": "label"})
    if version:
        return _check_version(version), None
    if label:
        return None, _check_label(label)
    return None, LATEST


def _check_text(value: str, field: str) -> None:
    if "\x00" in value:
        raise BadRequest(f"{field} contains a NUL character", details={"field": field})


def _check_role(role: str, field: str) -> None:
    if role not in ROLES:
        raise BadRequest(
            f"{field} must be one of {', '.join(sorted(ROLES))}",
            details={"field": field, "allowed": sorted(ROLES)},
        )


def _check_participant(name: str, field: str) -> None:
    if name and not _PARTICIPANT.match(name):
        raise BadRequest(f"{field} must match [A-Za-z0-9_-]{{1,64}}", details={"field": field})


def _check_value(value: struct_pb2.Value, field: str) -> None:
    kind = value.WhichOneof("kind")
    if kind == "number_value" and not math.isfinite(value.number_value):
        raise BadRequest(f"{field} holds a number that is not finite", details={"field": field})
    if kind == "string_value":
        _check_text(value.string_value, field)
    elif kind == "struct_value":
        _check_struct(value.struct_value, field)
    elif kind == "list_value":
        for item in value.list_value.values:
            _check_value(item, field)


def _check_struct(struct: struct_pb2.Struct, field: str) -> None:
    for key, value in struct.fields.items():
        _check_text(key, field)
        _check_value(value, field)


def _struct_dict(struct: struct_pb2.Struct, field: str, limit: int) -> dict[str, Any]:
    """A Struct as a JSON object, refused when it holds what PostgreSQL's jsonb cannot (NUL,
    non-finite numbers) or is over the size limit."""
    _check_struct(struct, field)
    value: dict[str, Any] = {k: _plain(v) for k, v in struct.fields.items()}
    size = len(json.dumps(value, separators=(",", ":")).encode())
    if size > limit:
        raise PayloadTooLarge(
            f"{field} is larger than the component accepts",
            details={"field": field, "limit_bytes": limit},
        )
    return value


def _plain(value: struct_pb2.Value) -> Any:
    kind = value.WhichOneof("kind")
    if kind == "struct_value":
        return {k: _plain(v) for k, v in value.struct_value.fields.items()}
    if kind == "list_value":
        return [_plain(v) for v in value.list_value.values]
    if kind == "number_value":
        number = value.number_value
        return int(number) if number.is_integer() and abs(number) < 2**53 else number
    if kind == "string_value":
        return value.string_value
    if kind == "bool_value":
        return value.bool_value
    return None


def _to_struct(value: dict[str, Any]) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    out.update(value)
    return out


def _user(ctx: Context) -> str:
    """X-User-ID as recorded with a version: control characters dropped, 256 characters."""
    return _CONTROL.sub("", ctx.user_id or "")[:256]


# -- paging ----------------------------------------------------------------------------------


def _encode_page_token(order: str, prefix: str, name: str, moment: dt.datetime) -> str:
    position: dict[str, Any] = {"o": order, "p": prefix, "n": name}
    if order == "newest":
        position["t"] = _micros(moment)
    raw = json.dumps(position, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_page_token(token: str, order: str, prefix: str) -> tuple[dt.datetime, str] | str:
    bad = BadRequest("page_token is invalid", details={"field": "page.page_token"})
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        position = json.loads(raw)
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise bad from None
    if not isinstance(position, dict) or not isinstance(position.get("n"), str):
        raise bad
    if position.get("o") != order or position.get("p") != prefix:
        raise BadRequest(
            "page_token belongs to a listing with another order or name_prefix",
            details={"field": "page.page_token"},
        )
    if order == "name":
        return str(position["n"])
    micros = position.get("t")
    if not isinstance(micros, int) or isinstance(micros, bool):
        raise bad
    try:
        moment = dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(microseconds=micros)
    except OverflowError:
        raise bad from None
    return moment, str(position["n"])


def _micros(moment: dt.datetime) -> int:
    delta = moment - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


# -- the compiled-template cache -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CachedTemplate:
    template: CompiledTemplate
    config: struct_pb2.Struct
    size: int


class TemplateCache:
    """LRU of compiled templates keyed by (tenant, name, version), bounded in entries and in
    template bytes. Entries never go stale (see the module docstring); one event loop uses it,
    so it needs no lock."""

    def __init__(self, max_entries: int, max_bytes: int) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._entries: OrderedDict[tuple[str, str, int], CachedTemplate] = OrderedDict()
        self._bytes = 0
        self.hits = 0
        self.misses = 0

    def get(self, key: tuple[str, str, int]) -> CachedTemplate | None:
        entry = self._entries.get(key)
        if entry is None:
            self.misses += 1
            return None
        self.hits += 1
        self._entries.move_to_end(key)
        return entry

    def put(self, key: tuple[str, str, int], entry: CachedTemplate) -> None:
        if self.max_entries == 0 or entry.size > self.max_bytes:
            return
        old = self._entries.pop(key, None)
        if old is not None:
            self._bytes -= old.size
        self._entries[key] = entry
        self._bytes += entry.size
        while len(self._entries) > self.max_entries or self._bytes > self.max_bytes:
            _, evicted = self._entries.popitem(last=False)
            self._bytes -= evicted.size

    def __len__(self) -> int:
        return len(self._entries)


# -- handlers --------------------------------------------------------------------------------


class PromptService:
    def __init__(
        self,
        store: PromptStore,
        outbox: Outbox,
        events: EventPublisher,
        settings: PromptSettings,
    ) -> None:
        self.store = store
        self.outbox = outbox
        self.events = events
        self.settings = settings
        self.cache = TemplateCache(settings.cache_entries, settings.cache_bytes)

    async def create_template(
        self, ctx: Context, req: CreateTemplateRequest
    ) -> CreateTemplateResponse:
        name = _check_name(req.name)
        labels = self._create_labels(req.labels)
        kind, body, compiled = self._template_body(req)
        config = _struct_dict(req.config, "config", self.settings.max_config_bytes)
        metadata = _struct_dict(req.metadata, "metadata", self.settings.max_config_bytes)
        row, pending = await self.store.create_version(
            ctx.tenant,
            name,
            kind=kind,
            body=body,
            variables=compiled.variables,
            config=config,
            metadata=metadata,
            created_by=_user(ctx),
            labels=labels,
        )
        self.cache.put(
            (ctx.tenant, name, row.version),
            CachedTemplate(compiled, _to_struct(config), compiled.source_bytes),
        )
        await self._publish(ctx, pending)
        return CreateTemplateResponse(template=_template(row))

    async def get_template(self, ctx: Context, req: GetTemplateRequest) -> GetTemplateResponse:
        name = _check_name(req.name)
        version, label = _reference(req.version, req.label)
        row = await self.store.get_version(ctx.tenant, name, version=version, label=label)
        if row is None:
            raise _not_found(name, version, label)
        return GetTemplateResponse(template=_template(row))

    async def list_templates(
        self, ctx: Context, req: ListTemplatesRequest
    ) -> ListTemplatesResponse:
        by_name = req.order == ListTemplatesRequest.ORDER_NAME
        if req.order not in (
            ListTemplatesRequest.ORDER_UNSPECIFIED,
            ListTemplatesRequest.ORDER_NEWEST,
            ListTemplatesRequest.ORDER_NAME,
        ):
            raise BadRequest("order is not a known value", details={"field": "order"})
        order = "name" if by_name else "newest"
        prefix = req.name_prefix
        if len(prefix) > 128 or _CONTROL.search(prefix):
            raise BadRequest(
                "name_prefix is not a possible name prefix", details={"field": "name_prefix"}
            )
        size = min(req.page.page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        after = (
            _decode_page_token(req.page.page_token, order, prefix) if req.page.page_token else None
        )
        rows = await self.store.list_names(
            ctx.tenant, by_name=by_name, prefix=prefix, after=after, limit=size + 1
        )
        reply = ListTemplatesResponse()
        for row in rows[:size]:
            summary = reply.templates.add(
                name=row.name,
                latest_version=row.latest_version,
                kind=row.kind,
                version_count=row.version_count,
            )
            summary.labels.update(row.labels)
            summary.updated_at.FromDatetime(row.updated_at)
        if len(rows) > size:
            last = rows[size - 1]
            reply.page.CopyFrom(
                PageResponse(
                    next_page_token=_encode_page_token(order, prefix, last.name, last.updated_at)
                )
            )
        return reply

    async def set_label(self, ctx: Context, req: SetLabelRequest) -> SetLabelResponse:
        name = _check_name(req.name)
        if not req.label:
            raise BadRequest("label is required", details={"field": "label"})
        label = _check_label(req.label)
        if label == LATEST:
            raise BadRequest(
                "latest is managed: it always points at the newest version",
                details={"field": "label"},
            )
        if not req.version:
            raise BadRequest("version is required", details={"field": "version"})
        version = _check_version(req.version)
        try:
            previous, pending = await self.store.set_label(ctx.tenant, name, label, version)
        except NameNotFound:
            raise _not_found(name, None, None) from None
        except VersionNotFound:
            raise _not_found(name, version, None) from None
        await self._publish(ctx, pending)
        return SetLabelResponse(name=name, label=label, version=version, previous_version=previous)

    async def delete_template(
        self, ctx: Context, req: DeleteTemplateRequest
    ) -> DeleteTemplateResponse:
        name = _check_name(req.name)
        if req.version and req.all_versions:
            raise BadRequest(
                "give a version or all_versions, not both", details={"field": "all_versions"}
            )
        if not req.version and not req.all_versions:
            raise BadRequest(
                "give the version to delete, or all_versions=true for the whole name",
                details={"field": "version"},
            )
        version = _check_version(req.version) if req.version else None
        try:
            deleted, removed, pending = await self.store.delete(
                ctx.tenant, name, version, force=req.force
            )
        except NameNotFound:
            raise _not_found(name, None, None) from None
        except VersionNotFound:
            raise _not_found(name, version, None) from None
        except LabelledVersion as exc:
            raise Conflict(
                f"labels point at version {version}: {', '.join(exc.labels)}; move them first"
                " or delete with force=true",
                details={"labels": exc.labels},
            ) from None
        await self._publish(ctx, pending)
        return DeleteTemplateResponse(deleted_versions=deleted, removed_labels=removed)

    async def render(self, ctx: Context, req: RenderRequest) -> RenderResponse:
        name = _check_name(req.name)
        version, label = _reference(req.version, req.label)
        values = dict(req.variables)
        found = await self.store.resolve(ctx.tenant, name, version=version, label=label)
        if found is None:
            raise _not_found(name, version, label)
        key = (ctx.tenant, name, found)
        entry = self.cache.get(key)
        if entry is None:
            body = await self.store.body(ctx.tenant, name, found)
            if body is None:  # deleted between the two queries
                raise _not_found(name, found, None)
            compiled = _compile_stored(body.kind, body.body)
            entry = CachedTemplate(compiled, _to_struct(body.config), compiled.source_bytes)
            self.cache.put(key, entry)
        rendered = entry.template.render(values, max_bytes=self.settings.max_rendered_bytes)
        reply = RenderResponse(
            name=name,
            version=found,
            kind=entry.template.kind,
            text=rendered.text,
            unused_variables=rendered.unused,
        )
        for role, participant, content in rendered.messages:
            reply.messages.add(role=role, content=content, name=participant)
        reply.config.CopyFrom(entry.config)
        return reply

    async def build_context(self, ctx: Context, req: BuildContextRequest) -> BuildContextResponse:
        self._check_context_request(req)
        counter = tokens.counter_for(req.model, approx_factor=self.settings.approx_factor)
        return await build_context(req, counter)

    # -- helpers ------------------------------------------------------------------------------

    def _create_labels(self, labels: Sequence[str]) -> list[str]:
        if len(labels) > self.settings.max_labels:
            raise BadRequest(
                f"at most {self.settings.max_labels} labels", details={"field": "labels"}
            )
        out: list[str] = []
        for i, label in enumerate(labels):
            _check_label(label, f"labels[{i}]")
            if label == LATEST:
                raise BadRequest(
                    "latest is managed: it always points at the newest version",
                    details={"field": f"labels[{i}]"},
                )
            if label in out:
                raise BadRequest(f"label {label} is given twice", details={"field": f"labels[{i}]"})
            out.append(label)
        return out

    def _template_body(self, req: CreateTemplateRequest) -> tuple[str, Any, CompiledTemplate]:
        if req.text and req.messages:
            raise BadRequest("give text or messages, not both", details={"field": "messages"})
        if not req.text and not req.messages:
            raise BadRequest(
                "a template needs text (a text template) or messages (a chat template)",
                details={"field": "text"},
            )
        limit = self.settings.max_template_bytes
        if req.text:
            _check_text(req.text, "text")
            if len(req.text.encode()) > limit:
                raise PayloadTooLarge(
                    "text is larger than the component accepts",
                    details={"field": "text", "limit_bytes": limit},
                )
            return "text", req.text, compile_template(req.text)
        if len(req.messages) > self.settings.max_template_messages:
            raise PayloadTooLarge(
                "the template has more messages than the component accepts",
                details={"field": "messages", "limit": self.settings.max_template_messages},
            )
        total = 0
        for i, m in enumerate(req.messages):
            _check_role(m.role, f"messages[{i}].role")
            _check_participant(m.name, f"messages[{i}].name")
            _check_text(m.content, f"messages[{i}].content")
            total += len(m.content.encode())
        if total > limit:
            raise PayloadTooLarge(
                "the messages are larger than the component accepts",
                details={"field": "messages", "limit_bytes": limit},
            )
        triples = [(m.role, m.name, m.content) for m in req.messages]
        body = [{"role": r, "content": c, "name": n} for r, n, c in triples]
        return "chat", body, compile_template(None, triples)

    def _check_context_request(self, req: BuildContextRequest) -> None:
        s = self.settings
        if not req.model:
            raise BadRequest("model is required", details={"field": "model"})
        if len(req.model) > 256 or _CONTROL.search(req.model):
            raise BadRequest("model is not a model name", details={"field": "model"})
        if not req.budget_tokens:
            raise BadRequest("budget_tokens is required", details={"field": "budget_tokens"})
        if req.budget_tokens > s.max_budget_tokens:
            raise BadRequest(
                f"budget_tokens is over {s.max_budget_tokens}", details={"field": "budget_tokens"}
            )
        if not req.messages:
            raise BadRequest(
                "messages needs at least one message (the newest turn)",
                details={"field": "messages"},
            )
        if len(req.messages) > s.max_context_messages:
            raise PayloadTooLarge(
                "more messages than the component accepts",
                details={"field": "messages", "limit": s.max_context_messages},
            )
        if len(req.documents) > s.max_context_documents:
            raise PayloadTooLarge(
                "more documents than the component accepts",
                details={"field": "documents", "limit": s.max_context_documents},
            )
        for i, m in enumerate(req.messages):
            _check_role(m.role, f"messages[{i}].role")
            _check_participant(m.name, f"messages[{i}].name")
        for i, d in enumerate(req.documents):
            if len(d.id) > 256 or _CONTROL.search(d.id):
                raise BadRequest(
                    f"documents[{i}].id must be at most 256 characters without control characters",
                    details={"field": f"documents[{i}].id"},
                )
            if not d.content:
                raise BadRequest(
                    f"documents[{i}].content is empty", details={"field": f"documents[{i}].content"}
                )

    async def _publish(self, ctx: Context, pending: list[PendingEvent]) -> None:
        """Publish committed events now; what fails stays in the outbox for the flusher."""
        published: list[int] = []
        try:
            for event in pending:
                await self.events.emit(
                    ctx.tenant,
                    COMPONENT,
                    event.event,
                    event.message,
                    ctx.forward_headers(),
                    msg_id=event.msg_id,
                )
                published.append(event.id)
        except Exception as exc:
            ctx.log.warning("event publish deferred to the outbox", error=type(exc).__name__)
        try:
            await self.outbox.done(ctx.tenant, published)
        except Exception as exc:
            ctx.log.warning("outbox cleanup deferred", error=type(exc).__name__)

    async def flush_outbox(self, *, limit: int = 100) -> int:
        """Publish events left in the outbox (older than the grace period); returns how many."""
        async with self.outbox.pool.acquire() as conn, conn.transaction():
            pending = await self.outbox.claim(
                conn, older_than=self.settings.outbox_grace_seconds, limit=limit
            )
            published: list[int] = []
            for event in pending:
                try:
                    await self.events.emit(
                        event.tenant, COMPONENT, event.event, event.message, msg_id=event.msg_id
                    )
                except Exception as exc:
                    log.warning("outbox publish failed", error=type(exc).__name__)
                    break
                published.append(event.id)
            if published:
                await conn.execute(
                    "DELETE FROM prompt.outbox WHERE id = ANY($1::bigint[])", published
                )
        return len(published)

    async def run_outbox(self) -> None:
        """Flush the outbox every `outbox_interval_seconds` until cancelled."""
        while True:
            await asyncio.sleep(self.settings.outbox_interval_seconds)
            try:
                while await self.flush_outbox() == 100:
                    pass
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("outbox flush failed", error=type(exc).__name__)


def _not_found(name: str, version: int | None, label: str | None) -> NotFound:
    if version is not None:
        return NotFound(
            f"template {name} has no version {version}",
            details={"name": name, "version": version},
        )
    if label is not None and label != LATEST:
        return NotFound(
            f"template {name} has no label {label}", details={"name": name, "label": label}
        )
    return NotFound(f"no template named {name}", details={"name": name})


def _template(row: VersionRow) -> Template:
    out = Template(
        name=row.name,
        version=row.version,
        kind=row.kind,
        variables=row.variables,
        labels=row.labels,
        created_by=row.created_by,
    )
    if row.kind == "text":
        out.text = row.body
    else:
        for m in row.body:
            out.messages.add(role=m["role"], content=m["content"], name=m.get("name", ""))
    out.config.update(row.config)
    out.metadata.update(row.metadata)
    out.created_at.FromDatetime(row.created_at)
    return out


def _compile_stored(kind: str, body: Any) -> CompiledTemplate:
    if kind == "text":
        return compile_template(body)
    return compile_template(None, [(m["role"], m.get("name", ""), m["content"]) for m in body])


# -- build_context ---------------------------------------------------------------------------


def documents_content(documents: Sequence[prompt_pb2.ContextDocument]) -> str:
    """The one system message the kept documents are sent as."""
    blocks = [f"[{d.id or i + 1}]\n{d.content}" for i, d in enumerate(documents)]
    return DOCUMENTS_HEADER + "\n\n" + "\n\n".join(blocks)


def turns_of(messages: Sequence[ChatMessage]) -> list[range]:
    """Turns as index ranges: a turn starts at each `user` message (and at message 0)."""
    starts = [0] + [i for i, m in enumerate(messages) if m.role == "user" and i > 0]
    ends = [*starts[1:], len(messages)]
    return [range(a, b) for a, b in zip(starts, ends, strict=True)]


async def build_context(
    req: BuildContextRequest, counter: tokens.ModelCounter
) -> BuildContextResponse:
    """Keep the system prompt and the newest turn, then as many documents (most relevant
    first) and then as many older turns (newest first) as fit; never more than the budget."""
    budget = req.budget_tokens
    counted = 0

    async def message_tokens(role: str, content: str, name: str = "") -> int:
        nonlocal counted
        counted += len(content)
        if counted >= _YIELD_EVERY_CHARS:  # counting holds the GIL: let other requests in
            counted = 0
            await asyncio.sleep(0)
        return counter.message(role, content, name)

    system = await message_tokens("system", req.system_prompt) if req.system_prompt else 0
    per_message = [await message_tokens(m.role, m.content, m.name) for m in req.messages]
    turns = turns_of(req.messages)
    newest = turns[-1]
    required = counter.priming + system + sum(per_message[i] for i in newest)
    if required > budget:
        raise Unprocessable(
            "the system prompt and the newest turn alone exceed the budget",
            details={
                "required_tokens": required,
                "budget_tokens": budget,
                "tokenizer": counter.description,
            },
        )
    room = budget - required

    # Documents: the longest prefix that fits. Blocks are counted one by one to estimate it,
    # then the joined message is counted exactly, and the prefix shortened or lengthened until
    # it is the longest that fits by the exact count.
    docs = list(req.documents)
    kept_docs = 0
    docs_tokens = 0
    if docs:
        base = await message_tokens("system", DOCUMENTS_HEADER)
        estimate = base
        for d in docs:
            block = counter.text(f"\n\n[{d.id or kept_docs + 1}]\n") + counter.text(d.content)
            if estimate + block > room:
                break
            estimate += block
            kept_docs += 1
        while kept_docs:
            docs_tokens = await message_tokens("system", documents_content(docs[:kept_docs]))
            if docs_tokens <= room:
                break
            kept_docs -= 1
            docs_tokens = 0
        # The estimate may also be high by a token or two: take one more while it fits.
        while kept_docs < len(docs):
            more = await message_tokens("system", documents_content(docs[: kept_docs + 1]))
            if more > room:
                break
            kept_docs, docs_tokens = kept_docs + 1, more
    room -= docs_tokens

    # Older turns, newest first, while they fit: the kept history is always a suffix.
    first_kept = newest.start
    for turn in reversed(turns[:-1]):
        cost = sum(per_message[i] for i in turn)
        if cost > room:
            break
        room -= cost
        first_kept = turn.start

    reply = BuildContextResponse(
        budget_tokens=budget, tokenizer=counter.description, exact=counter.exact
    )
    if req.system_prompt:
        reply.messages.add(role="system", content=req.system_prompt)
        reply.message_tokens.append(system)
    if kept_docs:
        reply.messages.add(role="system", content=documents_content(docs[:kept_docs]))
        reply.message_tokens.append(docs_tokens)
    for i in range(first_kept, len(req.messages)):
        reply.messages.append(req.messages[i])
        reply.message_tokens.append(per_message[i])
    reply.dropped_message_indexes.extend(range(first_kept))
    reply.dropped_document_indexes.extend(range(kept_docs, len(docs)))
    reply.dropped_tokens = sum(per_message[:first_kept])
    reply.total_tokens = counter.priming + sum(reply.message_tokens)
    if reply.total_tokens > budget:  # cannot happen by construction; never answer over budget
        raise AssertionError("build_context exceeded its budget")
    return reply


# -- start -----------------------------------------------------------------------------------


@asynccontextmanager
async def start(resources: Resources) -> AsyncIterator[PromptService]:
    settings = load_settings(PromptSettings)
    pool = await resources.postgres()
    await migrate(pool, SCHEMA, MIGRATIONS)
    # Load the encodings before taking requests (~0.1 s), not during the first one.
    await asyncio.to_thread(tokens.preload, settings.preload_encodings)
    service = PromptService(PromptStore(pool), Outbox(pool), resources.events, settings)
    flusher = asyncio.create_task(service.run_outbox(), name="prompt-outbox")
    try:
        yield service
    finally:
        flusher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await flusher


component = Component(
    prompt_pb2.DESCRIPTOR.services_by_name["PromptService"],
    start=start,
    description="Versioned prompt templates, strict rendering and token-budgeted context",
)
