"""Approving a draft: its agent or tool created in the agent component as the caller (who
gets admin on it), once. The definition's metadata names the draft, which is how a repeated or
concurrent approval that meets 409 recognises the resource it made, and tells it apart from
one that took the id meanwhile (a 409 for the caller)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from google.protobuf import json_format

from schemas.contracts import Unary
from schemas.errors import Conflict, NotFound, PermissionDenied
from schemas.v1.agent_rpc import AgentService
from schemas.v1.generator_pb2 import Draft, DraftResponse
from workers.generator.store import DraftRow, GeneratorStore
from workers.runtime.context import Context

# Set in the metadata of what an approval creates: where it came from.
ORIGIN = "generator_draft_id"


@dataclass(frozen=True)
class _Kind:
    create: Unary[Any, Any]
    get: Unary[Any, Any]
    id_field: str  # agent_id / tool_id in both requests
    field: str  # agent / tool: the definition in the create request, the record in replies


_KINDS = {
    "agent": _Kind(AgentService.CreateAgent, AgentService.GetAgent, "agent_id", "agent"),
    "tool": _Kind(AgentService.ToolCreate, AgentService.ToolGet, "tool_id", "tool"),
}


async def approve(ctx: Context, store: GeneratorStore, row: DraftRow) -> DraftResponse:
    """The draft approved, with the agent or tool it created (or created before)."""
    created = await _created(ctx, row)
    approved, staged = await store.approve(ctx, row.draft_id)
    if staged is not None:
        await store.outbox.publish(staged)  # after the commit; never raises
    reply = DraftResponse(draft=draft_message(approved))
    getattr(reply, _KINDS[row.kind].field).CopyFrom(created)
    return reply


async def _created(ctx: Context, row: DraftRow) -> Any:
    kind = _KINDS[row.kind]
    get = kind.get.request(**{kind.id_field: row.resource_id})
    if row.status == "approved":
        return getattr(await ctx.call(kind.get, get), kind.field)
    request = kind.create.request(**{kind.id_field: row.resource_id})
    definition = getattr(request, kind.field)
    json_format.ParseDict(row.spec, definition)
    definition.metadata[ORIGIN] = row.draft_id
    try:
        return getattr(await ctx.call(kind.create, request), kind.field)
    except Conflict:
        try:
            existing = getattr(await ctx.call(kind.get, get), kind.field)
        except (NotFound, PermissionDenied):
            existing = None
        if existing is None or _origin(existing.definition) != row.draft_id:
            raise Conflict(f"{kind.id_field} is taken", details={"field": kind.id_field}) from None
        return existing


def _origin(definition: Any) -> str:
    """The draft an agent or tool was created from (its metadata says), else ""."""
    value = definition.metadata.fields.get(ORIGIN)
    return value.string_value if value is not None else ""


def draft_message(row: DraftRow) -> Draft:
    draft = Draft(
        draft_id=row.draft_id,
        kind=row.kind,
        prompt=row.prompt,
        llm_model=row.llm_model,
        status=row.status,
        version=row.version,
        resource_id=row.resource_id,
        feedback=row.feedback,
        cached=row.cached,
        model_calls=row.model_calls,
        created_by=row.created_by,
        approved_by=row.approved_by,
    )
    draft.additional_config.update(row.additional_config)
    draft.spec.update(row.spec)
    draft.created_at.FromDatetime(row.created_at)
    draft.updated_at.FromDatetime(row.updated_at)
    return draft
