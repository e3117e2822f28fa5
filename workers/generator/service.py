"""The generator component: agent and tool definitions drafted from a description, kept as
drafts, approved into the agent component, rated. Input is checked (and refused descriptions
are refused) before any model call or write, so a refused request changes nothing.

Permissions are the agent component's: it owns the grants and checks them on every agent and
tool operation for the request's X-User-ID, which `ctx.call` carries on. Approving creates
the agent or tool as the caller, so the caller gets admin on it; the permission operations
here forward to the agent component's.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from google.protobuf import json_format

from schemas.errors import BadRequest, Conflict, NotFound, ServiceError
from schemas.v1 import generator_pb2
from schemas.v1.agent_pb2 import (
    CheckPermissionRequest,
    CheckPermissionResponse,
    GrantPermissionRequest,
    ListPermissionsRequest,
    ListPermissionsResponse,
    PermissionResponse,
    RevokePermissionRequest,
)
from schemas.v1.agent_rpc import AgentService
from schemas.v1.generator_pb2 import (
    ApproveDraftRequest,
    DraftResponse,
    GenerateAgentRequest,
    GenerateToolRequest,
    GetDraftRequest,
    ListDraftsRequest,
    ListDraftsResponse,
    RegenerateDraftRequest,
)
from workers.generator import approval, drafting, refusals
from workers.generator.approval import draft_message
from workers.generator.feedback_ops import FeedbackHandlers
from workers.generator.generation import Drafter, refuse
from workers.generator.settings import GeneratorSettings
from workers.generator.store import SCHEMA, DraftRow, GeneratorStore, NewDraft
from workers.runtime import paging
from workers.runtime import validation as check
from workers.runtime.component import Component
from workers.runtime.config import load_settings
from workers.runtime.context import Context
from workers.runtime.postgres import migrate
from workers.runtime.resources import Resources

MIGRATIONS = Path(__file__).resolve().with_name("migrations")
MAX_CONFIG_BYTES = 16 * 1024
MODEL_ALIAS = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:/@-]{0,127}\Z")  # as an agent's `model`
MAX_FEEDBACK_BYTES = 4096
RESERVED_AGENT_IDS = frozenset({"tools", "permissions", "schemas"})
KINDS, STATUSES = ("agent", "tool"), ("pending", "approved")


class GeneratorService(FeedbackHandlers):
    def __init__(self, store: GeneratorStore, settings: GeneratorSettings) -> None:
        self.store = store
        self.settings = settings
        self.drafter = Drafter(settings)

    # -- generation ---------------------------------------------------------------------------

    async def generate_agent(self, ctx: Context, req: GenerateAgentRequest) -> DraftResponse:
        agent_id = check.identifier(req.agent_id, "agent_id", required=False)
        if agent_id in RESERVED_AGENT_IDS:
            raise BadRequest(f"agent_id {agent_id!r} is reserved", details={"field": "agent_id"})
        return await self._generate(
            ctx, "agent", req.prompt, agent_id, req.llm_model, req, req.approve
        )

    async def generate_tool(self, ctx: Context, req: GenerateToolRequest) -> DraftResponse:
        tool_id = check.identifier(req.tool_id, "tool_id", required=False)
        return await self._generate(
            ctx, "tool", req.prompt, tool_id, req.llm_model, req, req.approve
        )

    async def _generate(
        self,
        ctx: Context,
        kind: str,
        prompt: str,
        resource_id: str,
        model: str,
        req: GenerateAgentRequest | GenerateToolRequest,
        approve: bool,
    ) -> DraftResponse:
        prompt = check.text(
            prompt, "prompt", required=True, max_bytes=self.settings.max_prompt_bytes
        )
        check.identifier(model, "llm_model", pattern=MODEL_ALIAS, required=False)
        config = check.struct(
            req.additional_config, "additional_config", max_bytes=MAX_CONFIG_BYTES
        )
        reasons = refusals.description_reasons(
            prompt + "\n" + json_format.MessageToJson(req.additional_config)
        )
        if reasons:
            raise refuse(reasons, "the description")
        key = drafting.cache_key(ctx.tenant, kind, prompt, model, config)
        generated = await self.drafter.cached(ctx, key, kind) if req.cache_enabled else None
        if generated is None:
            generated = await self.drafter.draft(ctx, kind, prompt, model, config)
            if req.cache_enabled:
                await self.drafter.remember(ctx, key, generated.spec)
        draft_id = "d-" + uuid.uuid4().hex
        row = await self.store.insert_draft(
            ctx.tenant,
            NewDraft(
                draft_id=draft_id,
                kind=kind,
                prompt=prompt,
                llm_model=model,
                additional_config=config,
                spec=generated.spec,
                resource_id=resource_id or f"{kind}-{draft_id[2:]}",
                cached=generated.cached,
                model_calls=generated.model_calls,
                created_by=ctx.user_id or "",
            ),
        )
        if not approve:
            return DraftResponse(draft=draft_message(row))
        try:
            return await approval.approve(ctx, self.store, row)
        except ServiceError as exc:  # the draft is kept: say which, so it can be approved later
            exc.details = {**exc.details, "draft_id": row.draft_id}
            raise

    # -- drafts -------------------------------------------------------------------------------

    async def list_drafts(self, ctx: Context, req: ListDraftsRequest) -> ListDraftsResponse:
        if req.kind:
            check.choice(req.kind, "kind", KINDS)
        if req.status:
            check.choice(req.status, "status", STATUSES)
        user = ctx.user_id or ""
        query = {"op": "drafts", "user": user, "kind": req.kind, "status": req.status}
        page = paging.start(ctx.tenant, req.page, query)
        after = None
        if page.after is not None:
            if len(page.after) != 2 or not isinstance(page.after[0], dt.datetime):
                raise BadRequest("page_token is invalid", details={"field": paging.FIELD})
            after = (page.after[0], str(page.after[1]))
        rows = await self.store.drafts(
            ctx.tenant, user, req.kind, req.status, after=after, limit=page.size + 1
        )
        kept, token = paging.finish(ctx.tenant, page, rows, lambda r: (r.created_at, r.draft_id))
        return ListDraftsResponse(drafts=[draft_message(r) for r in kept], page=token)

    async def get_draft(self, ctx: Context, req: GetDraftRequest) -> DraftResponse:
        return DraftResponse(draft=draft_message(await self._row(ctx, req.draft_id)))

    async def approve_draft(self, ctx: Context, req: ApproveDraftRequest) -> DraftResponse:
        return await approval.approve(ctx, self.store, await self._row(ctx, req.draft_id))

    async def regenerate_draft(self, ctx: Context, req: RegenerateDraftRequest) -> DraftResponse:
        feedback = check.text(req.feedback, "feedback", required=True, max_bytes=MAX_FEEDBACK_BYTES)
        row = await self._row(ctx, req.draft_id)
        reasons = refusals.description_reasons(feedback)
        if reasons:
            raise refuse(reasons, "the feedback")
        if row.status != "pending":
            raise Conflict("the draft is approved", details={"field": "draft_id"})
        notes = [*row.feedback, feedback]
        generated = await self.drafter.draft(
            ctx,
            row.kind,
            row.prompt,
            row.llm_model,
            row.additional_config,
            feedback=notes,
            previous=row.spec,
        )
        updated = await self.store.regenerated(
            ctx.tenant,
            row.draft_id,
            version=row.version,
            spec=generated.spec,
            feedback=notes,
            model_calls=generated.model_calls,
        )
        if updated is None:
            raise Conflict("the draft changed meanwhile", details={"field": "draft_id"})
        return DraftResponse(draft=draft_message(updated))

    async def _row(self, ctx: Context, draft_id: str) -> DraftRow:
        check.identifier(draft_id, "draft_id")
        row = await self.store.draft(ctx.tenant, draft_id, ctx.user_id or "")
        if row is None:
            raise NotFound("draft not found", details={"field": "draft_id"})
        return row

    # -- permissions: the agent component's, forwarded ----------------------------------------

    async def grant_permission(
        self, ctx: Context, req: GrantPermissionRequest
    ) -> PermissionResponse:
        return await ctx.call(AgentService.GrantPermission, req)

    async def revoke_permission(
        self, ctx: Context, req: RevokePermissionRequest
    ) -> PermissionResponse:
        return await ctx.call(AgentService.RevokePermission, req)

    async def check_permission(
        self, ctx: Context, req: CheckPermissionRequest
    ) -> CheckPermissionResponse:
        return await ctx.call(AgentService.CheckPermission, req)

    async def list_permissions(
        self, ctx: Context, req: ListPermissionsRequest
    ) -> ListPermissionsResponse:
        return await ctx.call(AgentService.ListPermissions, req)


@asynccontextmanager
async def start(resources: Resources) -> AsyncIterator[GeneratorService]:
    settings = load_settings(GeneratorSettings)
    pool = await resources.postgres()
    outbox = await resources.outbox()
    await migrate(pool, SCHEMA, MIGRATIONS)
    yield GeneratorService(GeneratorStore(pool, outbox), settings)


component = Component(
    generator_pb2.DESCRIPTOR.services_by_name["GeneratorService"],
    start=start,
    description="Agent and tool definitions drafted from a description, approved and rated",
)
