"""Chat requests in, chat replies out: checking a `GenerateRequest` and translating it to the
OpenAI-shaped parameters litellm takes, and litellm's replies back to the contract.

Every check names the offending field; nothing reaches a provider that the contract rejects.
"""

from __future__ import annotations

import json
import re
from typing import Any

import jsonschema
from google.protobuf import json_format

from schemas.errors import BadRequest
from schemas.v1.common_pb2 import ChatMessage, ToolCall
from schemas.v1.gateway_pb2 import GenerateRequest, Usage
from workers.runtime import validation as check

ROLES = frozenset({"system", "developer", "user", "assistant", "tool"})
MAX_MESSAGES = 1024
MAX_TOKENS_LIMIT = 1_000_000
MAX_METADATA_BYTES = 16 * 1024
MAX_AGENT_ID = 128
MAX_CACHE_TTL_S = 30 * 86_400
_TOOL_NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}\Z")


def _bad(message: str, field: str) -> BadRequest:
    return BadRequest(message, details={"field": field})


def chat_params(req: GenerateRequest) -> dict[str, Any]:
    """litellm/OpenAI parameters of a request, after checking every field."""
    if req.prompt and req.messages:
        raise _bad("give prompt or messages, not both", "prompt")
    if not req.prompt and not req.messages:
        raise _bad("prompt or messages is required", "messages")
    check.integer(len(req.messages), "messages", maximum=MAX_MESSAGES)
    messages = (
        [{"role": "user", "content": req.prompt}]
        if req.prompt
        else [_message(m, i) for i, m in enumerate(req.messages)]
    )
    params: dict[str, Any] = {"messages": messages}
    if req.HasField("max_tokens"):
        params["max_tokens"] = check.integer(
            req.max_tokens, "max_tokens", minimum=1, maximum=MAX_TOKENS_LIMIT
        )
    for name, low, high in (
        ("temperature", 0.0, 2.0),
        ("top_p", 0.0, 1.0),
        ("presence_penalty", -2.0, 2.0),
        ("frequency_penalty", -2.0, 2.0),
    ):
        if req.HasField(name):  # type: ignore[arg-type]
            params[name] = check.number(getattr(req, name), name, minimum=low, maximum=high)
    if req.stop:
        if len(req.stop) > 4 or any(not s for s in req.stop):
            raise _bad("stop takes at most 4 non-empty sequences", "stop")
        params["stop"] = list(req.stop)
    if req.HasField("seed"):
        params["seed"] = req.seed
    if req.tools:
        params["tools"] = [_tool(t, i) for i, t in enumerate(req.tools)]
    if req.HasField("tool_choice"):
        params["tool_choice"] = _tool_choice(
            json_format.MessageToDict(req.tool_choice), params.get("tools", [])
        )
    if req.HasField("response_format"):
        params["response_format"] = _response_format(req)
    check_agent_id(req.agent_id)
    if req.HasField("metadata"):
        check.struct(req.metadata, "metadata", max_bytes=MAX_METADATA_BYTES)
    cache = req.cache
    check.number(cache.ttl_seconds, "cache.ttl_seconds", minimum=0, maximum=MAX_CACHE_TTL_S)
    check.number(cache.similarity_threshold, "cache.similarity_threshold", minimum=0, maximum=1)
    return params


def check_agent_id(agent_id: str) -> None:
    check.text(agent_id, "agent_id", max_chars=MAX_AGENT_ID, multiline=False)


def _message(m: ChatMessage, i: int) -> dict[str, Any]:
    where = f"messages[{i}]"
    check.choice(m.role, f"{where}.role", ROLES)
    out: dict[str, Any] = {"role": m.role, "content": m.content}
    if m.name:
        out["name"] = m.name
    if m.tool_calls:
        if m.role != "assistant":
            raise _bad("only assistant messages carry tool_calls", f"{where}.tool_calls")
        out["tool_calls"] = [
            {
                "id": c.id,
                "type": "function",
                "function": {"name": c.function.name, "arguments": c.function.arguments},
            }
            for c in m.tool_calls
        ]
        if not m.content:
            out["content"] = None
    else:
        check.text(m.content, f"{where}.content", required=True, control=True)
    if m.role == "tool":
        if not m.tool_call_id:
            raise _bad("tool messages need tool_call_id", f"{where}.tool_call_id")
        out["tool_call_id"] = m.tool_call_id
    return out


def _tool(tool: Any, i: int) -> dict[str, Any]:
    where = f"tools[{i}]"
    if tool.type not in ("", "function"):
        raise _bad(f"{where}.type must be function", f"{where}.type")
    fn = tool.function
    check.identifier(fn.name, f"{where}.function.name", pattern=_TOOL_NAME)
    out: dict[str, Any] = {"name": fn.name}
    if fn.description:
        out["description"] = fn.description
    if fn.HasField("parameters"):
        schema = json_format.MessageToDict(fn.parameters)
        _check_schema(schema, f"{where}.function.parameters")
        out["parameters"] = schema
    if fn.strict:
        out["strict"] = True
    return {"type": "function", "function": out}


def _check_schema(schema: dict[str, Any], field: str) -> None:
    """Tool parameters must be a valid JSON Schema describing an object."""
    if schema.get("type", "object") != "object":
        raise _bad("tool parameters must be a JSON Schema of type object", field)
    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise BadRequest(
            f"tool parameters are not a valid JSON Schema: {exc.message}",
            details={"field": field, "schema_path": "/".join(map(str, exc.path))},
        ) from None
    props = schema.get("properties", {})
    missing = [r for r in schema.get("required", []) if r not in props]
    if missing:
        raise _bad(f"required names properties that are not defined: {missing}", field)


def _tool_choice(choice: Any, tools: list[dict[str, Any]]) -> Any:
    names = {t["function"]["name"] for t in tools}
    if choice in ("auto", "none", "required"):
        if choice == "required" and not tools:
            raise _bad("tool_choice required needs tools", "tool_choice")
        return choice
    if isinstance(choice, dict) and choice.get("type") == "function":
        name = (choice.get("function") or {}).get("name")
        if name in names:
            return {"type": "function", "function": {"name": name}}
        raise _bad(f"tool_choice names an undefined tool {name!r}", "tool_choice")
    raise _bad('tool_choice must be "auto", "none", "required" or a function', "tool_choice")


def _response_format(req: GenerateRequest) -> dict[str, Any]:
    fmt = req.response_format
    if fmt.type in ("", "text"):
        return {"type": "text"}
    if fmt.type == "json_object":
        return {"type": "json_object"}
    if fmt.type == "json_schema":
        spec = json_format.MessageToDict(fmt.json_schema)
        if not isinstance(spec.get("name"), str) or not isinstance(spec.get("schema"), dict):
            raise _bad("json_schema needs a name and a schema", "response_format.json_schema")
        try:
            jsonschema.Draft202012Validator.check_schema(spec["schema"])
        except jsonschema.SchemaError as exc:
            raise _bad(
                f"invalid JSON Schema: {exc.message}", "response_format.json_schema"
            ) from None
        return {"type": "json_schema", "json_schema": spec}
    raise _bad("response_format.type must be text, json_object or json_schema", "response_format")


def tool_calls_of(raw: Any) -> list[ToolCall]:
    """Contract tool calls from litellm's (objects or dicts, whole or streamed fragments)."""
    calls: list[ToolCall] = []
    for i, c in enumerate(raw or []):
        get = c.get if isinstance(c, dict) else lambda k, c=c: getattr(c, k, None)
        fn = get("function")
        fget = fn.get if isinstance(fn, dict) else lambda k, fn=fn: getattr(fn, k, None)
        index = get("index")
        call = ToolCall(id=get("id") or "", type="function", index=i if index is None else index)
        if fn is not None:
            call.function.name = fget("name") or ""
            call.function.arguments = fget("arguments") or ""
        calls.append(call)
    return calls


def usage_of(raw: Any) -> Usage:
    if raw is None:
        return Usage()
    get = raw.get if isinstance(raw, dict) else lambda k: getattr(raw, k, 0)
    prompt, completion = int(get("prompt_tokens") or 0), int(get("completion_tokens") or 0)
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=int(get("total_tokens") or 0) or prompt + completion,
    )


def cache_identity(alias: str, params: dict[str, Any]) -> str:
    """Canonical text of what determines a reply (the model and every parameter)."""
    return json.dumps({"model": alias, **params}, sort_keys=True, separators=(",", ":"))


def semantic_parts(alias: str, params: dict[str, Any]) -> tuple[str, str] | None:
    """(scope, text): the request without its last user message, and that message's text.
    None when the last message is not a user message (nothing to compare by meaning)."""
    messages = params["messages"]
    if messages[-1]["role"] != "user" or not isinstance(messages[-1]["content"], str):
        return None
    scope = cache_identity(alias, {**params, "messages": messages[:-1]})
    return scope, messages[-1]["content"]
