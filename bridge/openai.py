"""The OpenAI-compatible surface: `/v1/chat/completions`, `/v1/embeddings`, `/v1/models`.

Existing OpenAI clients work unchanged against the gateway: requests are translated field by
field into `GenerateRequest` / `EmbedRequest` (the gateway validates them), replies into
OpenAI's objects, errors into OpenAI's error shape with the same HTTP status. Every request
goes through the forwarder like any rpc route: the same token and tenant, rate limit, body
limits, request id, traceparent and deadline. What OpenAI's objects have no field for (cost,
cache hit, the deployment that answered) travels in `x-aifleet-*` response headers.
"""

from __future__ import annotations

import base64
import contextlib
import json
import struct
import time
from collections.abc import AsyncGenerator, AsyncIterator
from functools import partial
from typing import Any

from nats.aio.msg import Msg
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from bridge.errors import JSON
from bridge.forward import Exchange, Forwarder, JsonReply, Respond
from bridge.sse import sse_response
from schemas.codec import JSON_CODEC
from schemas.errors import BadRequest, NotFound, ServiceError
from schemas.registry import Rpc, rpc
from schemas.v1.common_pb2 import ToolCall
from schemas.v1.gateway_pb2 import (
    EmbedResponse,
    GenerateChunk,
    GenerateResponse,
    ListModelsResponse,
    Usage,
)

# Parameters passed to the gateway as they are; `agent_id` and `cache` are aifleet's own
# (an OpenAI client sends them through `extra_body`).
_PASSED = frozenset({"model", "temperature", "top_p", "presence_penalty", "frequency_penalty"})
_PASSED |= {"seed", "tools", "tool_choice", "response_format", "agent_id", "cache"}
_CHAT = _PASSED | {"messages", "max_tokens", "max_completion_tokens", "stop", "n"}
_CHAT |= {"stream", "stream_options", "user", "metadata", "parallel_tool_calls", "logprobs"}
_EMBED = frozenset({"input", "model", "dimensions", "encoding_format", "user", "agent_id"})
_MESSAGE = frozenset({"role", "content", "name", "tool_calls", "tool_call_id"})
_ECHOED = frozenset({"refusal", "annotations"})  # in replies; a client may send them back
_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error"}
_TYPES |= {404: "invalid_request_error", 429: "rate_limit_error"}
_CODES = {404: "model_not_found", 429: "rate_limit_exceeded", 503: "service_unavailable"}
_CLOSE = frozenset({408, 413})
_DONE = b"data: [DONE]\n\n"


def invalid(message: str, param: str | None, code: str = "invalid_value") -> BadRequest:
    """A 400 naming the OpenAI parameter at fault and OpenAI's code for the fault."""
    return BadRequest(message, details={"field": param, "reason": code})


def error_object(error: ServiceError) -> dict[str, Any]:
    """The fleet's error as OpenAI's `{"error": {message, type, param, code}}`."""
    status = error.status
    field = error.details.get("field")
    param = f"input{field[5:]}" if isinstance(field, str) and field.startswith("texts") else field
    kind = _TYPES.get(status) or ("api_error" if status >= 500 else "invalid_request_error")
    code = _CODES.get(status) or error.details.get("reason") or error.code.lower()
    return {"error": {"message": error.message, "type": kind, "param": param, "code": code}}


def error_response(error: ServiceError, headers: dict[str, str]) -> Response:
    out = {**headers, "Connection": "close"} if error.status in _CLOSE else headers
    body = json.dumps(error_object(error)).encode()
    return Response(body, status_code=error.status, media_type=JSON, headers=out)


# -- requests ---------------------------------------------------------------------------------


def _object(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        raise invalid("the body is not valid JSON", None, "invalid_json") from None
    if not isinstance(data, dict):
        raise invalid("the body must be a JSON object", None, "invalid_json")
    return data


def _known(body: dict[str, Any], names: frozenset[str]) -> dict[str, Any]:
    """The parameters that are set (null means not given); an unknown one is refused."""
    for name in body:
        if name not in names:
            raise invalid(
                f"Unrecognized request argument supplied: {name}", name, "unknown_parameter"
            )
    return {k: v for k, v in body.items() if v is not None}


def generate_request(body: dict[str, Any]) -> tuple[dict[str, Any], bool, bool]:
    """An OpenAI chat request as GenerateRequest JSON, whether to stream, and whether a
    streamed reply ends with a usage chunk."""
    given = _known(body, _CHAT)
    if given.get("n", 1) != 1:
        raise invalid("only n=1 is supported", "n", "unsupported_value")
    if given.get("logprobs"):
        raise invalid("logprobs are not supported", "logprobs", "unsupported_value")
    messages = given.get("messages")
    if not isinstance(messages, list):
        raise invalid("messages must be a list of messages", "messages")
    out = {name: given[name] for name in _PASSED if name in given}
    out["messages"] = [_message(m, f"messages[{i}]") for i, m in enumerate(messages)]
    tokens = given.get("max_completion_tokens", given.get("max_tokens"))
    if tokens is not None:
        out["max_tokens"] = tokens
    stop = given.get("stop")
    if stop is not None:
        out["stop"] = [stop] if isinstance(stop, str) else stop
    metadata = given.get("metadata", {})
    if not isinstance(metadata, dict):
        raise invalid("metadata must be an object", "metadata")
    if isinstance(given.get("user"), str):  # the caller's own end user, recorded
        metadata = {"user": given["user"], **metadata}
    if metadata:
        out["metadata"] = metadata
    stream = given.get("stream", False)
    options = given.get("stream_options", {})
    if not isinstance(stream, bool) or not isinstance(options, dict):
        raise invalid("stream must be a boolean and stream_options an object", "stream")
    return out, stream, bool(stream and options.get("include_usage"))


def _message(message: Any, where: str) -> dict[str, Any]:
    if not isinstance(message, dict):
        raise invalid(f"{where} must be an object", where)
    out: dict[str, Any] = {}
    for key, value in message.items():
        if value is None or key in _ECHOED:
            continue
        if key not in _MESSAGE:
            raise invalid(f"{where}.{key} is not supported", f"{where}.{key}", "unknown_parameter")
        out[key] = _text(value, f"{where}.content") if key == "content" else value
    return out


def _text(content: Any, where: str) -> Any:
    """Content given as parts: the text parts joined; any other part is refused."""
    if not isinstance(content, list):
        return content
    texts = []
    for i, part in enumerate(content):
        text = part.get("text") if isinstance(part, dict) and part.get("type") == "text" else None
        if not isinstance(text, str):
            raise invalid("only text parts are supported", f"{where}[{i}]", "unsupported_content")
        texts.append(text)
    return "\n".join(texts)


def embed_request(body: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """An OpenAI embeddings request as EmbedRequest JSON, and whether vectors go as base64."""
    given = _known(body, _EMBED)
    texts = given.get("input")
    texts = [texts] if isinstance(texts, str) else texts
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        raise invalid("input must be a string or a list of strings (not tokens)", "input")
    encoding = given.get("encoding_format", "float")
    if encoding not in ("float", "base64"):
        raise invalid("encoding_format must be float or base64", "encoding_format")
    out = {"model": given.get("model", ""), "texts": texts}
    out |= {k: given[k] for k in ("dimensions", "agent_id") if k in given}
    return out, encoding == "base64"


# -- replies ----------------------------------------------------------------------------------


def _usage(usage: Usage) -> dict[str, int]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    }


def _call(call: ToolCall, streamed: bool) -> dict[str, Any]:
    """A tool call, or in a stream a fragment of one (its id and name only where given)."""
    function: dict[str, Any] = {"arguments": call.function.arguments}
    if call.function.name or not streamed:
        function["name"] = call.function.name
    out: dict[str, Any] = {"index": call.index} if streamed else {}
    if call.id or not streamed:
        out |= {"id": call.id, "type": "function"}
    return out | {"function": function}


def completion(reply: GenerateResponse) -> dict[str, Any]:
    """GenerateResponse as OpenAI's chat.completion object."""
    calls = [_call(c, False) for c in reply.message.tool_calls]
    message: dict[str, Any] = {
        "role": "assistant",
        "content": reply.message.content or (None if calls else ""),
        "refusal": None,
    }
    if calls:
        message["tool_calls"] = calls
    return {
        "id": reply.id,
        "object": "chat.completion",
        "created": reply.created,
        "model": reply.model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": reply.finish_reason or "stop",
            }
        ],
        "usage": _usage(reply.usage),
    }


def chunk_objects(
    chunk: GenerateChunk, head: dict[str, Any], include_usage: bool
) -> list[dict[str, Any]]:
    """One gateway chunk as chat.completion.chunk objects: the role, the content and tool-call
    deltas, the finish reason, then (if asked for) the usage with no choices."""
    extra = {"usage": None} if include_usage else {}
    deltas: list[tuple[dict[str, Any], str | None]] = []
    if chunk.role:
        deltas.append(({"role": chunk.role, "content": ""}, None))
    if chunk.delta or chunk.tool_calls:
        delta: dict[str, Any] = {"content": chunk.delta} if chunk.delta else {}
        if chunk.tool_calls:
            delta["tool_calls"] = [_call(c, True) for c in chunk.tool_calls]
        deltas.append((delta, None))
    if chunk.finish_reason:
        deltas.append(({}, chunk.finish_reason))
    out = [
        {**head, "choices": [{"index": 0, "delta": d, "logprobs": None, "finish_reason": f}]}
        | extra
        for d, f in deltas
    ]
    if chunk.finish_reason and include_usage:
        out.append({**head, "choices": [], "usage": _usage(chunk.usage)})
    return out


async def completion_events(
    include_usage: bool, replies: AsyncGenerator[Msg, None]
) -> AsyncIterator[bytes]:
    """OpenAI's SSE: `data: <chunk>` per chunk, then `data: [DONE]`; a failure mid-stream is
    `data: {"error": ...}` and the end of the stream."""
    head: dict[str, Any] = {"object": "chat.completion.chunk", "created": int(time.time())}
    async with contextlib.aclosing(replies):
        try:
            async for msg in replies:
                chunk = JSON_CODEC.decode(GenerateChunk, msg.data)
                head.setdefault("id", chunk.id)
                head.setdefault("model", chunk.model)
                for data in chunk_objects(chunk, head, include_usage):
                    yield _data(data)
        except ServiceError as exc:
            yield _data(error_object(exc))
            return
    yield _DONE


def _data(obj: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"


def embeddings(reply: EmbedResponse, as_base64: bool) -> dict[str, Any]:
    """EmbedResponse as OpenAI's embedding list; base64 is little-endian float32 bytes."""
    data = []
    for i, e in enumerate(reply.embeddings):
        values = list(e.values)
        vector: Any = values
        if as_base64:
            vector = base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode()
        data.append({"object": "embedding", "index": i, "embedding": vector})
    usage = {"prompt_tokens": reply.usage.prompt_tokens, "total_tokens": reply.usage.total_tokens}
    return {"object": "list", "data": data, "model": reply.model, "usage": usage}


def _model(name: str, provider: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": 0, "owned_by": provider or "aifleet"}


def _json(obj: dict[str, Any], headers: dict[str, str]) -> Response:
    return JsonReply(json.dumps(obj, separators=(",", ":")).encode(), headers)


# -- endpoints --------------------------------------------------------------------------------


class Surface:
    """The /v1 endpoints: admitted by the forwarder, answered through the gateway."""

    def __init__(self, forwarder: Forwarder) -> None:
        self.forwarder = forwarder
        self.generate = _rpc("generate")
        self.generate_stream = _rpc("generate_stream")
        self.embed = _rpc("embed")
        self.list_models = _rpc("list_models")

    async def chat(self, ex: Exchange) -> Response:
        request, stream, include_usage = generate_request(
            _object(await self.forwarder.admit(ex, takes_body=True))
        )
        payload = json.dumps(request).encode()
        if stream:
            replies = await self.forwarder.stream(ex, self.generate_stream, payload)
            return await sse_response(replies, ex.out, partial(completion_events, include_usage))
        msg = await self.forwarder.request(ex, self.generate, payload)
        reply = JSON_CODEC.decode(GenerateResponse, msg.data)
        ex.out["x-aifleet-cost-usd"] = repr(reply.cost_usd)
        ex.out["x-aifleet-cache"] = reply.cache.kind if reply.HasField("cache") else "miss"
        ex.out["x-aifleet-provider-model"] = reply.provider_model
        return _json(completion(reply), ex.out)

    async def embeddings(self, ex: Exchange) -> Response:
        request, as_base64 = embed_request(_object(await self.forwarder.admit(ex, takes_body=True)))
        msg = await self.forwarder.request(ex, self.embed, json.dumps(request).encode())
        reply = JSON_CODEC.decode(EmbedResponse, msg.data)
        ex.out["x-aifleet-cost-usd"] = repr(reply.cost_usd)
        ex.out["x-aifleet-provider-model"] = reply.provider_model
        return _json(embeddings(reply, as_base64), ex.out)

    async def models(self, ex: Exchange) -> Response:
        data = [_model(name, provider) for name, provider in await self._models(ex)]
        return _json({"object": "list", "data": data}, ex.out)

    async def model(self, ex: Exchange) -> Response:
        wanted = ex.scope["path_params"]["model"]
        for name, provider in await self._models(ex):
            if name == wanted:
                return _json(_model(name, provider), ex.out)
        raise NotFound(f"The model '{wanted[:200]}' does not exist", details={"field": "model"})

    async def _models(self, ex: Exchange) -> list[tuple[str, str]]:
        await self.forwarder.admit(ex, takes_body=False)
        msg = await self.forwarder.request(ex, self.list_models, b"{}")
        reply = JSON_CODEC.decode(ListModelsResponse, msg.data)
        return [(m.name, m.deployments[0].provider if m.deployments else "") for m in reply.models]


def _rpc(op: str) -> Rpc:
    found = rpc("gateway", op)
    assert found is not None, f"gateway.{op} is not in the contracts"
    return found


class _Endpoint:
    """The ASGI app of one /v1 route (an object, so Starlette passes it scope, receive, send)."""

    def __init__(self, forwarder: Forwarder, method: str, path: str, rpc: Rpc, respond: Respond):
        self.forwarder, self.method, self.path, self.rpc = forwarder, method, path, rpc
        self.respond = respond

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.forwarder.serve(
            self.method, self.path, self.rpc, scope, receive, send, self.respond, error_response
        )


def openai_routes(forwarder: Forwarder) -> list[Route]:
    """The OpenAI-compatible routes, under /v1."""
    surface = Surface(forwarder)
    table = [
        ("POST", "/v1/chat/completions", surface.generate, surface.chat),
        ("POST", "/v1/embeddings", surface.embed, surface.embeddings),
        ("GET", "/v1/models", surface.list_models, surface.models),
        ("GET", "/v1/models/{model:path}", surface.list_models, surface.model),
    ]
    return [
        Route(path, _Endpoint(forwarder, method, path, op, respond), methods=[method])
        for method, path, op, respond in table
    ]
