"""The drafting loop without servers (the kit's handler test context): what it asks the fleet,
as whom, and how it repairs."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from google.protobuf import json_format

from schemas.errors import BadRequest, Unavailable, Unprocessable
from schemas.v1.agent_pb2 import (
    CheckPermissionResponse,
    DefinitionSchemasResponse,
    ToolListResponse,
    ToolRecord,
)
from schemas.v1.agent_rpc import AgentService
from schemas.v1.common_pb2 import ChatMessage
from schemas.v1.gateway_pb2 import GenerateRequest, GenerateResponse, ListModelsResponse, ModelInfo
from schemas.v1.gateway_rpc import GatewayService
from subjects import HEADER_USER_ID
from workers.agent.definitions import AGENT_DEFINITION_SCHEMA, TOOL_DEFINITION_SCHEMA
from workers.generator.generation import Drafter
from workers.generator.settings import GeneratorSettings
from workers.runtime import testing


def schemas() -> DefinitionSchemasResponse:
    reply = DefinitionSchemasResponse()
    reply.agent_definition.update(AGENT_DEFINITION_SCHEMA)
    reply.tool_definition.update(TOOL_DEFINITION_SCHEMA)
    return reply


def replies_of(*specs: dict[str, Any]) -> Callable[[GenerateRequest], GenerateResponse]:
    """gateway.generate answering each spec in turn."""
    queue = [json.dumps(s) for s in specs]

    def answer(request: GenerateRequest) -> GenerateResponse:
        return GenerateResponse(message=ChatMessage(role="assistant", content=queue.pop(0)))

    return answer


def generate_requests(seen: testing.Seen) -> list[GenerateRequest]:
    """The gateway.generate requests made, in order."""
    found = [c.request for c in seen.calls if c.method is GatewayService.Generate]
    assert all(isinstance(r, GenerateRequest) for r in found)
    return [r for r in found if isinstance(r, GenerateRequest)]


def fleet(generate: Any, *, executable: bool = True) -> dict[Any, Any]:
    tool = ToolRecord(tool_id="kv")
    tool.definition.name = "kv"
    return {
        AgentService.DefinitionSchemas: schemas(),
        AgentService.ToolList: ToolListResponse(tools=[tool]),
        AgentService.CheckPermission: CheckPermissionResponse(allowed=executable),
        GatewayService.ListModels: ListModelsResponse(models=[ModelInfo(name="m", mode="chat")]),
        GatewayService.Generate: generate,
    }


async def test_every_call_is_made_as_the_caller() -> None:
    """X-User-ID goes with each call to the agent component and the gateway."""
    ctx, seen = testing.context(user="alice", replies=fleet(replies_of({"name": "A"})))
    made = await Drafter(GeneratorSettings()).draft(ctx, "agent", "An agent", "", {})
    assert made.spec == {"name": "A"}
    assert made.model_calls == 1
    assert {c.headers.get(HEADER_USER_ID) for c in seen.calls} == {"alice"}


async def test_the_model_gets_the_schema_as_the_response_format() -> None:
    """json_schema with the agent component's schema; the gateway's cache skipped."""
    ctx, seen = testing.context(replies=fleet(replies_of({"name": "A"})))
    await Drafter(GeneratorSettings()).draft(ctx, "agent", "An agent", "m", {"tone": "dry"})
    request = generate_requests(seen)[0]
    assert request.response_format.type == "json_schema"
    fmt = json_format.MessageToDict(request.response_format.json_schema)
    assert fmt["schema"]["title"] == "AgentDefinition"
    assert request.cache.skip
    assert request.model == "m"
    assert '"tone": "dry"' in request.messages[-1].content


async def test_one_repair_round_carries_the_errors() -> None:
    """The second request is the first plus the reply and its errors."""
    ctx, seen = testing.context(
        replies=fleet(replies_of({"name": "A", "max_turns": 99}, {"name": "B"}))
    )
    made = await Drafter(GeneratorSettings()).draft(ctx, "agent", "An agent", "", {})
    assert (made.spec, made.model_calls) == ({"name": "B"}, 2)
    second = generate_requests(seen)[1]
    assert [m.role for m in second.messages] == ["system", "user", "assistant", "user"]
    assert "spec.max_turns" in second.messages[-1].content


async def test_a_tool_the_caller_may_not_execute_is_422_after_the_repair() -> None:
    """CheckPermission says no twice: 422 with that error."""
    ctx, _ = testing.context(
        user="bob",
        replies=fleet(replies_of(*[{"name": "A", "tools": ["kv"]}] * 2), executable=False),
    )
    with pytest.raises(Unprocessable) as raised:
        await Drafter(GeneratorSettings()).draft(ctx, "agent", "An agent", "", {})
    assert raised.value.details["errors"] == ["spec.tools[0]: the caller may not execute tool 'kv'"]


async def test_an_unknown_model_alias_is_400_before_any_model_call() -> None:
    """llm_model must be a chat alias of the gateway."""
    ctx, seen = testing.context(replies=fleet(replies_of()))
    with pytest.raises(BadRequest, match="llm_model"):
        await Drafter(GeneratorSettings()).draft(ctx, "agent", "An agent", "nope", {})
    assert GatewayService.Generate not in [c.method for c in seen.calls]


async def test_the_agent_component_down_is_unavailable() -> None:
    """No definition schema: 503, nothing asked of the model."""
    replies = fleet(replies_of({"name": "A"}))
    replies[AgentService.DefinitionSchemas] = Unavailable("down")
    ctx, seen = testing.context(replies=replies)
    with pytest.raises(Unavailable):
        await Drafter(GeneratorSettings()).draft(ctx, "agent", "An agent", "", {})
    assert GatewayService.Generate not in [c.method for c in seen.calls]
