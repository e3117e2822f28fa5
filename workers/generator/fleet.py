"""What the generator asks the rest of the fleet, as the caller (ctx.call carries X-User-ID):
the definition schemas and tools of the agent component, the gateway's model aliases, and
the checks of a definition against them."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from google.protobuf import json_format

from schemas.errors import NotFound, PermissionDenied
from schemas.v1.agent_pb2 import (
    CheckPermissionRequest,
    DefinitionSchemasRequest,
    GetAgentRequest,
    ToolListRequest,
)
from schemas.v1.agent_rpc import AgentService
from schemas.v1.common_pb2 import PageRequest
from schemas.v1.gateway_pb2 import ListModelsRequest
from schemas.v1.gateway_rpc import GatewayService
from workers.generator.drafting import PLACEHOLDER, Catalog
from workers.runtime.context import Context

_CATALOG_TOOLS = 200


async def definition_schema(ctx: Context, kind: str) -> dict[str, Any]:
    """The JSON Schema the agent component accepts for this kind of definition."""
    reply = await ctx.call(AgentService.DefinitionSchemas, DefinitionSchemasRequest())
    schema = reply.agent_definition if kind == "agent" else reply.tool_definition
    return json_format.MessageToDict(schema)


async def catalog(ctx: Context) -> Catalog:
    """Chat model aliases, and the (first 200) tools the caller may read."""
    models = await ctx.call(GatewayService.ListModels, ListModelsRequest())
    tools = await ctx.call(
        AgentService.ToolList, ToolListRequest(page=PageRequest(page_size=_CATALOG_TOOLS))
    )
    return Catalog(
        models=[m.name for m in models.models if m.mode == "chat"],
        tools={t.tool_id: (t.definition.name, t.definition.description) for t in tools.tools},
    )


async def errors(ctx: Context, kind: str, spec: dict[str, Any], known: Catalog) -> list[str]:
    """Where a schema-valid definition does not fit the fleet: an unknown model alias, a tool
    that is missing or the caller may not execute, an HTTP tool whose URL is off its hosts."""
    if kind == "tool":
        return await _tool_errors(ctx, spec)
    found = []
    model = spec.get("model", "")
    if model and model not in known.models:
        found.append(f"spec.model: no chat model alias {model!r} (have {known.models})")
    for i, tool_id in enumerate(spec.get("tools") or []):
        if tool_id not in known.tools:
            found.append(f"spec.tools[{i}]: no tool {tool_id!r} the caller may read")
        elif not await _may_execute(ctx, tool_id):
            found.append(f"spec.tools[{i}]: the caller may not execute tool {tool_id!r}")
    return found


async def _may_execute(ctx: Context, tool_id: str) -> bool:
    if not ctx.user_id:
        return True  # a tenant-level call is not restricted (as in the agent component)
    reply = await ctx.call(
        AgentService.CheckPermission,
        CheckPermissionRequest(
            user_id=ctx.user_id, resource_type="tool", resource_id=tool_id, permission="execute"
        ),
    )
    return reply.allowed


async def _tool_errors(ctx: Context, spec: dict[str, Any]) -> list[str]:
    found = []
    parameters = spec.get("parameters")
    if "agent" not in spec and (
        not isinstance(parameters, dict) or parameters.get("type") != "object"
    ):
        found.append('spec.parameters: a JSON Schema with "type": "object" is required')
    http = spec.get("http")
    if isinstance(http, dict):
        host = (urlsplit(PLACEHOLDER.sub("x", http.get("url", ""))).hostname or "").lower()
        allowed = [h.lower() for h in http.get("allowed_hosts") or []]
        if not any(h == host or (h.startswith("*.") and host.endswith(h[1:])) for h in allowed):
            found.append(f"spec.http.url: its host {host!r} is not in allowed_hosts")
        properties = (parameters or {}).get("properties") or {}
        missing = [n for n in PLACEHOLDER.findall(http.get("url", "")) if n not in properties]
        if missing:
            found.append(f"spec.http.url: placeholders {missing} are not in parameters")
    target = (spec.get("agent") or {}).get("agent_id")
    if target:
        try:
            await ctx.call(AgentService.GetAgent, GetAgentRequest(agent_id=target))
        except (NotFound, PermissionDenied):
            found.append(f"spec.agent.agent_id: no agent {target!r} the caller may read")
    return found
