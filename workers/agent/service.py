"""Agent handlers: agent and tool definitions, permissions, and the component itself.

Chat, sessions and runs are in `chat_ops`, tasks in `task_ops`, memory in `memory_ops`; all
check input before anything is written, so a refused request changes nothing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg

from schemas.errors import BadRequest, Conflict, NotFound
from schemas.v1 import agent_pb2
from schemas.v1.agent_pb2 import (
    AgentResponse,
    AgentTool,
    CheckPermissionRequest,
    CheckPermissionResponse,
    CreateAgentRequest,
    DefinitionSchemasRequest,
    DefinitionSchemasResponse,
    DeleteAgentRequest,
    DeleteAgentResponse,
    GetAgentRequest,
    GrantPermissionRequest,
    ListAgentsRequest,
    ListAgentsResponse,
    ListAgentToolsRequest,
    ListAgentToolsResponse,
    ListPermissionsRequest,
    ListPermissionsResponse,
    PermissionResponse,
    RevokePermissionRequest,
    ToolCreateRequest,
    ToolDeleteRequest,
    ToolDeleteResponse,
    ToolGetRequest,
    ToolListRequest,
    ToolListResponse,
    ToolResponse,
    ToolUpdateRequest,
    UpdateAgentRequest,
)
from workers.agent import access, convert, definitions, memory_tools
from workers.agent.chat_ops import ChatHandlers
from workers.agent.memory_ops import MemoryHandlers
from workers.agent.memory_store import MemoryStore
from workers.agent.runner import Runner, new_id
from workers.agent.runs_store import RunsStore
from workers.agent.settings import AgentSettings
from workers.agent.store import SCHEMA, AgentStore, InUse, Stale, Taken
from workers.agent.task_ops import TaskHandlers
from workers.agent.toolbox import specs_of
from workers.runtime import paging as pages
from workers.runtime.component import Component
from workers.runtime.config import load_settings
from workers.runtime.context import Context
from workers.runtime.outbox import Outbox
from workers.runtime.postgres import migrate
from workers.runtime.resources import Resources
from workers.runtime.validation import to_struct

MIGRATIONS = Path(__file__).resolve().with_name("migrations")


class AgentService(ChatHandlers, TaskHandlers, MemoryHandlers):
    def __init__(
        self, pool: asyncpg.Pool, settings: AgentSettings, outbox: Outbox, job_attempts: int = 5
    ) -> None:
        self.store = AgentStore(pool)
        self.runs = RunsStore(pool)
        self.memory = MemoryStore(pool)
        self.settings = settings
        self.runner = Runner(self.store, self.runs, self.memory, settings, outbox)
        self.job_attempts = job_attempts

    # -- agents -------------------------------------------------------------------------------

    async def create_agent(self, ctx: Context, req: CreateAgentRequest) -> AgentResponse:
        agent_id = self._agent_id(req.agent_id) or new_id("a")
        definition = await self._checked_agent(ctx, req.agent)
        await access.may_create(ctx, self.store, "agent", self.settings.open_create)
        try:
            row = await self.store.create_agent(
                ctx.tenant, agent_id, definition, access.user_of(ctx)
            )
        except Taken:
            raise Conflict("agent_id is taken", details={"field": "agent_id"}) from None
        except asyncpg.ForeignKeyViolationError:
            raise BadRequest(
                "a listed tool was deleted meanwhile", details={"field": "agent.tools"}
            ) from None
        return AgentResponse(agent=convert.agent(row))

    async def get_agent(self, ctx: Context, req: GetAgentRequest) -> AgentResponse:
        return AgentResponse(agent=convert.agent(await self.agent_row(ctx, req.agent_id, "read")))

    async def update_agent(self, ctx: Context, req: UpdateAgentRequest) -> AgentResponse:
        agent_id = definitions.check_id(req.agent_id, "agent_id")
        definition = await self._checked_agent(ctx, req.agent)
        await self.agent_row(ctx, agent_id, "admin")
        try:
            row = await self.store.update_agent(
                ctx.tenant, agent_id, definition, req.expected_version
            )
        except Stale:
            raise Conflict(
                "the agent is at another version", details={"field": "expected_version"}
            ) from None
        except asyncpg.ForeignKeyViolationError:
            raise BadRequest(
                "a listed tool was deleted meanwhile", details={"field": "agent.tools"}
            ) from None
        if row is None:
            raise NotFound("agent not found", details={"field": "agent_id"})
        return AgentResponse(agent=convert.agent(row))

    async def delete_agent(self, ctx: Context, req: DeleteAgentRequest) -> DeleteAgentResponse:
        row = await self.agent_row(ctx, req.agent_id, "delete")
        return DeleteAgentResponse(
            deleted=await self.store.delete_agent(ctx.tenant, row["agent_id"])
        )

    async def list_agents(self, ctx: Context, req: ListAgentsRequest) -> ListAgentsResponse:
        user = access.user_of(ctx) or None
        page = pages.start(ctx.tenant, req.page, {"op": "agents", "user": user})
        rows = await self.store.list_agents(ctx.tenant, user, page.after, page.size + 1)
        kept, token = pages.finish(
            ctx.tenant, page, rows, lambda r: (r["created_at"], r["agent_id"])
        )
        return ListAgentsResponse(agents=[convert.agent(r) for r in kept], page=token)

    async def list_agent_tools(
        self, ctx: Context, req: ListAgentToolsRequest
    ) -> ListAgentToolsResponse:
        row = await self.agent_row(ctx, req.agent_id, "read")
        definition = convert.agent(row).definition
        as_dict = definitions.as_json(definition)
        found = await self.store.get_tools(ctx.tenant, list(definition.tools))
        specs = specs_of(
            [found[t] for t in definition.tools if t in found], as_dict.get("memory", {})
        )
        return ListAgentToolsResponse(
            tools=[
                AgentTool(
                    tool_id=s.tool_id,
                    name=s.name,
                    description=s.description,
                    parameters=to_struct(s.parameters),
                    kind=s.kind,
                )
                for s in specs.values()
            ]
        )

    def _agent_id(self, agent_id: str) -> str:
        definitions.check_id(agent_id, "agent_id", required=False)
        if agent_id in definitions.RESERVED_AGENT_IDS:
            raise BadRequest(f"agent_id {agent_id!r} is reserved", details={"field": "agent_id"})
        return agent_id

    async def _checked_agent(
        self, ctx: Context, message: agent_pb2.AgentDefinition
    ) -> dict[str, Any]:
        definition = definitions.check_agent(message)
        tool_ids = definition.get("tools", [])
        found = await self.store.get_tools(ctx.tenant, tool_ids) if tool_ids else {}
        missing = [t for t in tool_ids if t not in found]
        if missing:
            raise BadRequest(f"tools not found: {missing[:10]}", details={"field": "agent.tools"})
        for tool_id in tool_ids:
            await access.require(ctx, self.store, "tool", tool_id, "execute")
        specs = specs_of([found[t] for t in tool_ids], definition.get("memory", {}))
        choice = definition.get("tool_choice", "")
        if choice and choice not in ("auto", "required", "none") and choice not in specs:
            raise BadRequest(
                "tool_choice names no tool of the agent", details={"field": "agent.tool_choice"}
            )
        if len(specs) != len(tool_ids) + len(memory_tools.specs(definition.get("memory", {}))):
            raise BadRequest(
                "two of the agent's tools have the same name", details={"field": "agent.tools"}
            )
        return definition

    # -- tools --------------------------------------------------------------------------------

    async def tool_create(self, ctx: Context, req: ToolCreateRequest) -> ToolResponse:
        tool_id = definitions.check_id(req.tool_id, "tool_id", required=False) or new_id("tool")
        definition = self._checked_tool(req.tool)
        await access.may_create(ctx, self.store, "tool", self.settings.open_create)
        try:
            row = await self.store.create_tool(ctx.tenant, tool_id, definition, access.user_of(ctx))
        except Taken:
            raise Conflict("tool_id is taken", details={"field": "tool_id"}) from None
        return ToolResponse(tool=convert.tool(row))

    async def tool_get(self, ctx: Context, req: ToolGetRequest) -> ToolResponse:
        return ToolResponse(tool=convert.tool(await self._tool_row(ctx, req.tool_id, "read")))

    async def tool_update(self, ctx: Context, req: ToolUpdateRequest) -> ToolResponse:
        tool_id = definitions.check_id(req.tool_id, "tool_id")
        definition = self._checked_tool(req.tool)
        await self._tool_row(ctx, tool_id, "admin")
        row = await self.store.update_tool(ctx.tenant, tool_id, definition)
        if row is None:
            raise NotFound("tool not found", details={"field": "tool_id"})
        return ToolResponse(tool=convert.tool(row))

    async def tool_delete(self, ctx: Context, req: ToolDeleteRequest) -> ToolDeleteResponse:
        row = await self._tool_row(ctx, req.tool_id, "delete")
        try:
            deleted = await self.store.delete_tool(ctx.tenant, row["tool_id"])
        except InUse as exc:
            raise Conflict("agents still list this tool", details={"agents": exc.agents}) from None
        return ToolDeleteResponse(deleted=deleted)

    async def tool_list(self, ctx: Context, req: ToolListRequest) -> ToolListResponse:
        user = access.user_of(ctx) or None
        page = pages.start(ctx.tenant, req.page, {"op": "tools", "user": user})
        rows = await self.store.list_tools(ctx.tenant, user, page.after, page.size + 1)
        kept, token = pages.finish(
            ctx.tenant, page, rows, lambda r: (r["created_at"], r["tool_id"])
        )
        return ToolListResponse(tools=[convert.tool(r) for r in kept], page=token)

    async def _tool_row(self, ctx: Context, tool_id: str, permission: str) -> Any:
        definitions.check_id(tool_id, "tool_id")
        row = await self.store.get_tool(ctx.tenant, tool_id)
        await access.require_existing(ctx, self.store, "tool", tool_id, permission, row is not None)
        return row

    def _checked_tool(self, message: agent_pb2.ToolDefinition) -> dict[str, Any]:
        definition = definitions.check_tool(message)
        operation = definition.get("fleet", {}).get("operation")
        if operation and operation not in self.settings.fleet_tools:
            raise BadRequest(
                f"{operation} is not an operation tools may call",
                details={"field": "tool.fleet.operation", "allowed": self.settings.fleet_tools},
            )
        return definition

    # -- permissions --------------------------------------------------------------------------

    async def grant_permission(
        self, ctx: Context, req: GrantPermissionRequest
    ) -> PermissionResponse:
        access.check_grant_fields(req.resource_type, req.resource_id, req.user_id, req.permission)
        await self._may_administer(ctx, req.resource_type, req.resource_id)
        row, changed = await self.store.grant(
            ctx.tenant,
            req.resource_type,
            req.resource_id,
            req.user_id,
            req.permission,
            access.user_of(ctx),
        )
        return PermissionResponse(grant=convert.grant(row), changed=changed)

    async def revoke_permission(
        self, ctx: Context, req: RevokePermissionRequest
    ) -> PermissionResponse:
        access.check_grant_fields(req.resource_type, req.resource_id, req.user_id, req.permission)
        await self._may_administer(ctx, req.resource_type, req.resource_id)
        row = await self.store.revoke(
            ctx.tenant, req.resource_type, req.resource_id, req.user_id, req.permission
        )
        if row is None:
            return PermissionResponse(changed=False)
        return PermissionResponse(grant=convert.grant(row), changed=True)

    async def check_permission(
        self, ctx: Context, req: CheckPermissionRequest
    ) -> CheckPermissionResponse:
        access.check_grant_fields(req.resource_type, req.resource_id, req.user_id, req.permission)
        if access.user_of(ctx) not in ("", req.user_id):
            await self._may_administer(ctx, req.resource_type, req.resource_id)
        via = await self.store.holds(
            ctx.tenant, req.user_id, req.resource_type, req.resource_id, req.permission
        )
        return CheckPermissionResponse(allowed=bool(via), via=via)

    async def list_permissions(
        self, ctx: Context, req: ListPermissionsRequest
    ) -> ListPermissionsResponse:
        kind, resource_id, user = req.resource_type, req.resource_id, req.user_id
        if kind and kind not in access.KINDS:
            raise BadRequest(
                "resource_type must be agent or tool", details={"field": "resource_type"}
            )
        if resource_id and resource_id != "*":
            definitions.check_id(resource_id, "resource_id")
        definitions.check_id(user, "user_id", required=False)
        if not (kind and resource_id) and not user:
            raise BadRequest(
                "give resource_type and resource_id, or user_id", details={"field": "user_id"}
            )
        caller = access.user_of(ctx)
        if kind and resource_id:
            if caller != user:
                await self._may_administer(ctx, kind, resource_id)
        elif caller and caller != user:
            raise BadRequest("a user may list only their own grants", details={"field": "user_id"})
        page = pages.start(
            ctx.tenant, req.page, {"op": "grants", "k": kind, "r": resource_id, "u": user}
        )
        rows = await self.store.list_grants(
            ctx.tenant, kind, resource_id, user, page.after, page.size + 1
        )
        kept, token = pages.finish(
            ctx.tenant,
            page,
            rows,
            lambda r: (r["resource_type"], r["resource_id"], r["user_id"], r["permission"]),
        )
        return ListPermissionsResponse(grants=[convert.grant(r) for r in kept], page=token)

    async def _may_administer(self, ctx: Context, kind: str, resource_id: str) -> None:
        await access.require(ctx, self.store, kind, resource_id, "admin")
        if resource_id != "*":
            get = self.store.get_agent if kind == "agent" else self.store.get_tool
            if await get(ctx.tenant, resource_id) is None:
                raise NotFound(f"{kind} not found", details={"field": "resource_id"})

    async def definition_schemas(
        self, ctx: Context, req: DefinitionSchemasRequest
    ) -> DefinitionSchemasResponse:
        return DefinitionSchemasResponse(
            agent_definition=to_struct(definitions.AGENT_DEFINITION_SCHEMA),
            tool_definition=to_struct(definitions.TOOL_DEFINITION_SCHEMA),
        )


@asynccontextmanager
async def start(resources: Resources) -> AsyncIterator[AgentService]:
    settings = load_settings(AgentSettings)
    pool = await resources.postgres()
    await migrate(pool, SCHEMA, MIGRATIONS)
    outbox = await resources.outbox()
    yield AgentService(pool, settings, outbox, resources.settings.job_max_deliver)


component = Component(
    agent_pb2.DESCRIPTOR.services_by_name["AgentService"],
    start=start,
    jobs=frozenset({"execute"}),
    description="Agents: sessions, a bounded tool loop, memory and tasks",
)
