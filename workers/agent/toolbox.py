"""What one run may call: the agent's allowlisted tools (HTTP, fleet operations, other agents)
and the memory tools its settings give it, resolved once when the run starts. Nothing a model,
a document or a tool result says can change this set during the run.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import Message

from schemas import registry
from schemas.contracts import Unary
from schemas.errors import ServiceError
from schemas.v1.common_pb2 import ChatMessage
from workers.agent import memory_tools
from workers.agent.calls import CheckedCall, ToolSpec
from workers.agent.http_tool import HttpLimits, call_http
from workers.agent.loop import ToolResult
from workers.agent.memory_store import MemoryStore
from workers.agent.runs_store import RunsStore
from workers.agent.settings import AgentSettings
from workers.runtime.context import Context

Handoff = Callable[[str, str, int], Awaitable[ToolResult]]  # (agent_id, message, depth)


def specs_of(tool_rows: list[Any], memory: dict[str, Any]) -> dict[str, ToolSpec]:
    """The run's tools by function name: stored tools in allowlist order, then memory tools."""
    specs: dict[str, ToolSpec] = {}
    for row in tool_rows:
        definition = row["definition"]
        definition = json.loads(definition) if isinstance(definition, str) else definition
        kind = next(k for k in ("http", "fleet", "agent") if k in definition)
        specs[definition["name"]] = ToolSpec(
            row["tool_id"],
            definition["name"],
            definition.get("description", ""),
            definition["parameters"],
            kind,
            definition,
        )
    for spec in memory_tools.specs(memory):
        specs.setdefault(spec.name, spec)
    return specs


@dataclass
class Toolbox:
    ctx: Context
    settings: AgentSettings
    memory_store: MemoryStore
    runs_store: RunsStore
    agent_id: str
    user: str
    run_id: str
    memory: dict[str, Any]  # the agent's memory settings
    base_prompt: str
    depth: int
    handoff: Handoff
    specs_by_name: dict[str, ToolSpec] = field(default_factory=dict)
    _memory_changed: bool = False

    @property
    def specs(self) -> dict[str, ToolSpec]:
        return self.specs_by_name

    async def system_message(self) -> ChatMessage | None:
        if not self._memory_changed:
            return None
        self._memory_changed = False
        return ChatMessage(role="system", content=await self.system_prompt())

    async def system_prompt(self) -> str:
        blocks = self.memory.get("core_blocks") or []
        if not blocks:
            return self.base_prompt
        stored = await self.memory_store.blocks(self.ctx.tenant, self.agent_id, self.user)
        return memory_tools.system_prompt(self.base_prompt, blocks, stored)

    async def run(self, call: CheckedCall) -> ToolResult:
        spec = call.spec
        assert spec is not None
        if spec.kind == "http":
            key = hashlib.sha256(
                f"{self.ctx.tenant}\x00{self.run_id}\x00{call.id}".encode()
            ).hexdigest()[:40]
            s = self.settings
            limits = HttpLimits(
                s.http_timeout_seconds,
                s.http_max_timeout_seconds,
                s.http_response_bytes,
                s.http_max_response_bytes,
            )
            return await call_http(
                spec.definition["http"], call.arguments, idempotency_key=key, limits=limits
            )
        if spec.kind == "fleet":
            return await self._fleet(spec.definition["fleet"], call.arguments)
        if spec.kind == "agent":
            if self.depth >= self.settings.max_handoff_depth:
                return ToolResult("agent handoffs are nested too deeply", is_error=True)
            return await self.handoff(
                spec.definition["agent"]["agent_id"], call.arguments["message"], self.depth + 1
            )
        return await memory_tools.run(self, spec.name, call.arguments)

    async def _fleet(self, fleet: dict[str, Any], arguments: dict[str, Any]) -> ToolResult:
        operation = fleet["operation"]
        if operation not in self.settings.fleet_tools:
            return ToolResult(f"the operation {operation} is not allowed for tools", is_error=True)
        component, op = operation.split(".")
        rpc = registry.rpc(component, op)
        if rpc is None or rpc.streaming:
            return ToolResult(f"the operation {operation} is not available", is_error=True)
        request: Message = rpc.request()
        try:
            json_format.ParseDict({**arguments, **fleet.get("defaults", {})}, request)
        except (json_format.ParseError, ValueError, TypeError) as exc:
            return ToolResult(f"arguments do not fit {operation}: {str(exc)[:300]}", is_error=True)
        try:
            reply = await self.ctx.call(Unary(component, op, rpc.request, rpc.response), request)
        except ServiceError as exc:
            return ToolResult(f"{operation} failed: {exc.message[:300]}", is_error=True)
        body = json_format.MessageToDict(reply, preserving_proto_field_name=True)
        return ToolResult(json.dumps(body, ensure_ascii=False))

    def memory_edited(self) -> None:
        self._memory_changed = True
