"""The loop's model: `gateway.generate` (or `generate_stream`, tokens passed on as they come)
with the agent's tools, its agent_id and the run in the gateway's metadata, so LLMOps records
every model call of an agent."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from google.protobuf.struct_pb2 import Struct, Value

from schemas.v1.common_pb2 import ChatMessage, FunctionCall, ToolCall
from schemas.v1.gateway_pb2 import (
    FunctionDefinition,
    GenerateChunk,
    GenerateRequest,
    Tool,
)
from schemas.v1.gateway_rpc import GatewayService
from workers.agent.calls import ToolSpec
from workers.agent.loop import ModelReply
from workers.agent.messages import storable_message
from workers.runtime.context import Context
from workers.runtime.validation import storable

Delta = Callable[[str], Awaitable[None]]


def tool_choice_value(choice: str, tools: Sequence[ToolSpec]) -> Value | None:
    if not tools or not choice:
        return None
    value = Value()
    if choice in ("auto", "required", "none"):
        value.string_value = choice
    else:
        value.struct_value.update({"type": "function", "function": {"name": choice}})
    return value


@dataclass
class GatewayModel:
    ctx: Context
    agent_id: str
    model: str
    temperature: float | None
    metadata: dict[str, Any]
    on_delta: Delta | None = None  # set: stream the call and pass on each text delta
    _tools_cache: dict[tuple[str, ...], list[Tool]] = field(default_factory=dict)

    def request(
        self,
        messages: Sequence[ChatMessage],
        tools: Sequence[ToolSpec],
        tool_choice: str,
        max_tokens: int | None,
    ) -> GenerateRequest:
        req = GenerateRequest(model=self.model, messages=list(messages), agent_id=self.agent_id)
        if tools:
            req.tools.extend(self._tools(tools))
            choice = tool_choice_value(tool_choice, tools)
            if choice is not None:
                req.tool_choice.CopyFrom(choice)
        if max_tokens:
            req.max_tokens = max_tokens
        if self.temperature is not None:
            req.temperature = self.temperature
        meta = Struct()
        meta.update(self.metadata)
        req.metadata.CopyFrom(meta)
        return req

    def _tools(self, tools: Sequence[ToolSpec]) -> list[Tool]:
        key = tuple(t.name for t in tools)
        cached = self._tools_cache.get(key)
        if cached is None:
            cached = []
            for spec in tools:
                parameters = Struct()
                parameters.update(spec.parameters)
                function = FunctionDefinition(
                    name=spec.name, description=spec.description, parameters=parameters
                )
                cached.append(Tool(type="function", function=function))
            self._tools_cache[key] = cached
        return cached

    async def complete(
        self,
        messages: Sequence[ChatMessage],
        tools: Sequence[ToolSpec],
        tool_choice: str,
        max_tokens: int | None,
    ) -> ModelReply:
        req = self.request(messages, tools, tool_choice, max_tokens)
        started = time.perf_counter()
        if self.on_delta is None:
            reply = await self.ctx.call(GatewayService.Generate, req)
            message = ChatMessage()
            message.CopyFrom(reply.message)
            message.role = "assistant"
            return ModelReply(
                storable_message(message),
                reply.finish_reason,
                reply.usage.prompt_tokens,
                reply.usage.completion_tokens,
                reply.cost_usd,
                (time.perf_counter() - started) * 1000,
            )
        return await self._stream(req, started)

    async def _stream(self, req: GenerateRequest, started: float) -> ModelReply:
        assert self.on_delta is not None
        text: list[str] = []
        calls: dict[int, ToolCall] = {}
        last = GenerateChunk()
        async for chunk in self.ctx.stream(GatewayService.GenerateStream, req):
            if chunk.delta:
                delta = storable(chunk.delta)
                text.append(delta)
                await self.on_delta(delta)
            for fragment in chunk.tool_calls:
                call = calls.setdefault(
                    fragment.index, ToolCall(type="function", function=FunctionCall())
                )
                call.id = call.id or fragment.id
                call.function.name += fragment.function.name
                call.function.arguments += fragment.function.arguments
            if chunk.finish_reason:
                last = chunk
        message = ChatMessage(
            role="assistant", content="".join(text), tool_calls=[calls[i] for i in sorted(calls)]
        )
        for i, call in enumerate(message.tool_calls):
            call.id = call.id or f"call_{i}"
        return ModelReply(
            storable_message(message),
            last.finish_reason,
            last.usage.prompt_tokens,
            last.usage.completion_tokens,
            last.cost_usd,
            (time.perf_counter() - started) * 1000,
        )
