"""Prompt handlers: versioned templates with labels, strict rendering, token-budgeted context.

Validation (validation.py) happens before anything is written: a request that fails it changes
nothing. Writes stage their events in the fleet's outbox in the same transaction and publish
them after the commit (workers/runtime/outbox.py).

Render caches compiled templates by (tenant, name, version) only (cache.py): that key always
means the same content, so a cached entry can never be stale; labels and `latest` are resolved
in SQL on every render, together with the version's existence, so a moved label or a deleted
version takes effect on every replica at once, with no invalidation messages.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from schemas.errors import BadRequest, Conflict, NotFound
from schemas.v1 import prompt_pb2
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
from workers.prompt import validation as v
from workers.prompt.cache import CachedTemplate, TemplateCache
from workers.prompt.context import build_context
from workers.prompt.render import CompiledTemplate, compile_template
from workers.prompt.settings import PromptSettings
from workers.prompt.store import (
    SCHEMA,
    LabelledVersion,
    NameNotFound,
    PromptStore,
    VersionNotFound,
    VersionRow,
)
from workers.runtime import paging
from workers.runtime import validation as check
from workers.runtime.component import Component
from workers.runtime.config import load_settings
from workers.runtime.context import Context
from workers.runtime.outbox import Outbox
from workers.runtime.postgres import migrate
from workers.runtime.resources import Resources

MIGRATIONS = Path(__file__).resolve().with_name("migrations")
ORDERS = {
    ListTemplatesRequest.ORDER_UNSPECIFIED: "newest",
    ListTemplatesRequest.ORDER_NEWEST: "newest",
    ListTemplatesRequest.ORDER_NAME: "name",
}


class PromptService:
    def __init__(self, store: PromptStore, outbox: Outbox, settings: PromptSettings) -> None:
        self.store = store
        self.outbox = outbox
        self.settings = settings
        self.cache = TemplateCache(settings.cache_entries, settings.cache_bytes)

    async def create_template(
        self, ctx: Context, req: CreateTemplateRequest
    ) -> CreateTemplateResponse:
        name = v.name(req.name)
        labels = v.create_labels(req.labels, self.settings)
        kind, body, compiled = v.template_body(req, self.settings)
        config = check.struct(req.config, "config", max_bytes=self.settings.max_config_bytes)
        metadata = check.struct(req.metadata, "metadata", max_bytes=self.settings.max_config_bytes)
        row, pending = await self.store.create_version(
            ctx.tenant,
            name,
            kind=kind,
            body=body,
            variables=compiled.variables,
            config=config,
            metadata=metadata,
            created_by=v.user_of(ctx),
            labels=labels,
            headers=ctx.forward_headers(),
        )
        self.cache.put(
            (ctx.tenant, name, row.version),
            CachedTemplate(compiled, check.to_struct(config), compiled.source_bytes),
        )
        await self.outbox.publish(pending)
        return CreateTemplateResponse(template=_template(row))

    async def get_template(self, ctx: Context, req: GetTemplateRequest) -> GetTemplateResponse:
        name = v.name(req.name)
        version, label = v.reference(req.version, req.label)
        row = await self.store.get_version(ctx.tenant, name, version=version, label=label)
        if row is None:
            raise _not_found(name, version, label)
        return GetTemplateResponse(template=_template(row))

    async def list_templates(
        self, ctx: Context, req: ListTemplatesRequest
    ) -> ListTemplatesResponse:
        order = ORDERS.get(req.order)
        if order is None:
            raise BadRequest("order is not a known value", details={"field": "order"})
        prefix = v.name_prefix(req.name_prefix)
        page = paging.start(ctx.tenant, req.page, {"order": order, "prefix": prefix})
        after: tuple[dt.datetime, str] | str | None = None
        if page.after is not None:
            after = _position(page.after, order)
        rows = await self.store.list_names(
            ctx.tenant, by_name=order == "name", prefix=prefix, after=after, limit=page.size + 1
        )
        kept, reply_page = paging.finish(
            ctx.tenant,
            page,
            rows,
            (lambda r: (r.name,)) if order == "name" else (lambda r: (r.updated_at, r.name)),
        )
        reply = ListTemplatesResponse(page=reply_page)
        for row in kept:
            summary = reply.templates.add(
                name=row.name,
                latest_version=row.latest_version,
                kind=row.kind,
                version_count=row.version_count,
            )
            summary.labels.update(row.labels)
            summary.updated_at.FromDatetime(row.updated_at)
        return reply

    async def set_label(self, ctx: Context, req: SetLabelRequest) -> SetLabelResponse:
        name = v.name(req.name)
        label = v.settable_label(req.label)
        if not req.version:
            raise BadRequest("version is required", details={"field": "version"})
        version = v.version(req.version)
        try:
            previous, pending = await self.store.set_label(
                ctx.tenant, name, label, version, headers=ctx.forward_headers()
            )
        except NameNotFound:
            raise _not_found(name, None, None) from None
        except VersionNotFound:
            raise _not_found(name, version, None) from None
        await self.outbox.publish(pending)
        return SetLabelResponse(name=name, label=label, version=version, previous_version=previous)

    async def delete_template(
        self, ctx: Context, req: DeleteTemplateRequest
    ) -> DeleteTemplateResponse:
        name = v.name(req.name)
        if req.version and req.all_versions:
            raise BadRequest(
                "give a version or all_versions, not both", details={"field": "all_versions"}
            )
        if not req.version and not req.all_versions:
            raise BadRequest(
                "give the version to delete, or all_versions=true for the whole name",
                details={"field": "version"},
            )
        version = v.version(req.version) if req.version else None
        try:
            deleted, removed, pending = await self.store.delete(
                ctx.tenant, name, version, force=req.force, headers=ctx.forward_headers()
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
        await self.outbox.publish(pending)
        return DeleteTemplateResponse(deleted_versions=deleted, removed_labels=removed)

    async def render(self, ctx: Context, req: RenderRequest) -> RenderResponse:
        name = v.name(req.name)
        version, label = v.reference(req.version, req.label)
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
            entry = CachedTemplate(compiled, check.to_struct(body.config), compiled.source_bytes)
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
        v.context_request(req, self.settings)
        counter = tokens.counter_for(req.model, approx_factor=self.settings.approx_factor)
        return await build_context(req, counter)


def _position(after: tuple[Any, ...], order: str) -> tuple[dt.datetime, str] | str:
    """The store's keyset position from a page token's: (updated_at, name) or the name."""
    if order == "name" and len(after) == 1 and isinstance(after[0], str):
        return after[0]
    if order == "newest" and len(after) == 2 and isinstance(after[0], dt.datetime):
        return after[0], str(after[1])
    raise BadRequest("page_token is invalid", details={"field": paging.FIELD})


def _not_found(name: str, version: int | None, label: str | None) -> NotFound:
    if version is not None:
        return NotFound(
            f"template {name} has no version {version}",
            details={"name": name, "version": version},
        )
    if label is not None and label != v.LATEST:
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


@asynccontextmanager
async def start(resources: Resources) -> AsyncIterator[PromptService]:
    settings = load_settings(PromptSettings)
    pool = await resources.postgres()
    outbox = await resources.outbox()  # before the migrations: 002 moves old rows into it
    await migrate(pool, SCHEMA, MIGRATIONS)
    # Load the encodings before taking requests (~0.1 s), not during the first one.
    await asyncio.to_thread(tokens.preload, settings.preload_encodings)
    yield PromptService(PromptStore(pool, outbox), outbox, settings)


component = Component(
    prompt_pb2.DESCRIPTOR.services_by_name["PromptService"],
    start=start,
    description="Versioned prompt templates, strict rendering and token-budgeted context",
)
