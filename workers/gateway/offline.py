"""The `aifleet` litellm provider: models that need no key and no network.

- `aifleet/offline` answers chat requests deterministically and says plainly that it is not a
  language model, so a fleet started with no configuration works end to end (limits, caching,
  accounting, streaming, tool calls) and nobody mistakes its replies for generated text.
- `aifleet/all-minilm-l6-v2` is a real embedding model (all-MiniLM-L6-v2, int8 ONNX) run
  locally; its vectors are meaningful (semantic cache, RAG) without any provider.

Registered through litellm's `custom_provider_map`, so both are plain model aliases to the
router, with the same fallbacks, cooldowns and cost accounting as any provider.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import litellm
from litellm import exceptions as errors
from litellm.llms.custom_llm import CustomLLM
from litellm.types.utils import EmbeddingResponse, GenericStreamingChunk, ModelResponse

from workers.gateway.embedding import MiniLM
from workers.gateway.schema_instance import instance

PROVIDER = "aifleet"
OFFLINE_MODEL = "offline"
EMBEDDING_MODEL = "all-minilm-l6-v2"
NOTICE = (
    "[aifleet offline model] No LLM provider is configured, so this reply is a fixed echo from "
    "aifleet's deterministic offline model, not generated text. Configure a model list "
    "(AIFLEET_GATEWAY_CONFIG) to use a real model."
)
_ECHO_CHARS = 400


def offline_reply(messages: list[dict[str, Any]], params: dict[str, Any]) -> dict[str, Any]:
    """What the offline model answers: the notice and an echo of the last user message, cut by
    `stop` and `max_tokens` the way a real model's output is; a tool call when one is forced; for a
    `json_schema` response format, an instance of the schema."""
    last: dict[str, Any] = next((m for m in reversed(messages) if m.get("role") == "user"), {})
    echo = _text_of(last.get("content"))[:_ECHO_CHARS]
    call = _forced_tool_call(params.get("tools") or [], params.get("tool_choice"))
    if call is not None:
        return {"content": "", "tool_calls": [call], "finish_reason": "tool_calls"}
    response_format = params.get("response_format") or {}
    fmt = response_format.get("type")
    if fmt == "json_schema":  # the schema's smallest instance, so structured output validates
        schema = (response_format.get("json_schema") or {}).get("schema") or {}
        return {"content": json.dumps(instance(schema)), "tool_calls": [], "finish_reason": "stop"}
    if fmt == "json_object":
        body = {"offline_model": True, "notice": NOTICE, "echo": echo}
        return {"content": json.dumps(body), "tool_calls": [], "finish_reason": "stop"}
    text = f"{NOTICE} You said: {echo}" if echo else NOTICE
    finish = "stop"
    for stop in params.get("stop") or []:
        if stop and stop in text:
            text = text[: text.index(stop)]
    max_tokens = params.get("max_tokens") or params.get("max_completion_tokens")
    if max_tokens:
        words = text.split(" ")
        if _tokens(text) > max_tokens:
            while words and _tokens(" ".join(words)) > max_tokens:
                words = words[: max(0, len(words) - max(1, len(words) // 8))]
            text, finish = " ".join(words), "length"
    return {"content": text, "tool_calls": [], "finish_reason": finish}


def _tokens(text: str) -> int:
    return int(litellm.token_counter(model="gpt-4o", text=text))


def _text_of(content: Any) -> str:
    if isinstance(content, list):  # content parts: keep the text ones
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return "" if content is None else str(content)


def _forced_tool_call(tools: list[dict[str, Any]], choice: Any) -> dict[str, Any] | None:
    if not tools or choice in (None, "auto", "none"):
        return None
    name = (choice.get("function") or {}).get("name") if isinstance(choice, dict) else None
    tool = next((t for t in tools if t["function"]["name"] == name), tools[0])
    schema = tool["function"].get("parameters") or {}
    props = schema.get("properties") or {}
    args = {k: _placeholder(props.get(k) or {}) for k in schema.get("required") or []}
    return {
        "id": "call_offline_0",
        "type": "function",
        "function": {"name": tool["function"]["name"], "arguments": json.dumps(args)},
        "index": 0,
    }


def _placeholder(schema: dict[str, Any]) -> Any:
    """A deterministic value of a JSON Schema type (the schema's first enum value if any)."""
    if schema.get("enum"):
        return schema["enum"][0]
    kind = schema.get("type")
    return {"integer": 0, "number": 0, "boolean": False, "array": [], "object": {}}.get(
        kind if isinstance(kind, str) else "", "offline"
    )


def _usage(messages: list[dict[str, Any]], completion: str) -> litellm.Usage:
    prompt = litellm.token_counter(model="gpt-4o", messages=messages)
    done = litellm.token_counter(model="gpt-4o", text=completion) if completion else 0
    return litellm.Usage(prompt_tokens=prompt, completion_tokens=done, total_tokens=prompt + done)


class AifleetProvider(CustomLLM):
    """litellm's handler for `aifleet/<model>`."""

    def __init__(self, embedder: Callable[[], MiniLM]) -> None:
        super().__init__()
        self._embedder = embedder

    async def acompletion(
        self,
        model: str,
        messages: list[dict[str, Any]],
        api_base: Any,
        custom_prompt_dict: Any,
        model_response: ModelResponse,
        *args: Any,
        **kwargs: Any,
    ) -> ModelResponse:
        _check_text_model(model)
        reply = offline_reply(messages, kwargs.get("optional_params") or {})
        choice = model_response.choices[0]
        choice.message.content = reply["content"] or None
        if reply["tool_calls"]:
            choice.message.tool_calls = [
                litellm.ChatCompletionMessageToolCall(
                    id=c["id"], type=c["type"], function=c["function"]
                )
                for c in reply["tool_calls"]
            ]
        choice.finish_reason = reply["finish_reason"]
        model_response.model = f"{PROVIDER}/{model}"
        model_response.created = int(time.time())
        args_text = "".join(c["function"]["arguments"] for c in reply["tool_calls"])
        model_response.usage = _usage(messages, reply["content"] + args_text)  # type: ignore[attr-defined]
        return model_response

    async def astreaming(  # type: ignore[override]
        self, model: str, messages: list[dict[str, Any]], *args: Any, **kwargs: Any
    ) -> AsyncIterator[GenericStreamingChunk]:
        _check_text_model(model)
        reply = offline_reply(messages, kwargs.get("optional_params") or {})
        words = reply["content"].split(" ") if reply["content"] else []
        pieces = [w if i == len(words) - 1 else w + " " for i, w in enumerate(words)]
        calls = reply["tool_calls"]
        args_text = "".join(c["function"]["arguments"] for c in calls)
        usage = _usage(messages, reply["content"] + args_text)
        for piece in pieces:
            yield _chunk(piece)
            await asyncio.sleep(0)
        for call in calls:
            yield _chunk("", tool_use=call)
        final = _chunk("", finish=reply["finish_reason"])
        final["usage"] = {
            "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens,
            "total_tokens": usage.total_tokens,
        }
        yield final

    async def aembedding(
        self,
        model: str,
        input: list[Any],
        model_response: EmbeddingResponse,
        *args: Any,
        **kwargs: Any,
    ) -> EmbeddingResponse:
        if model != EMBEDDING_MODEL:
            raise errors.BadRequestError(
                f"{PROVIDER}/{model} is not an embedding model", model=model, llm_provider=PROVIDER
            )
        texts = [str(t) for t in input]

        def run() -> tuple[Any, int]:
            embedder = self._embedder()  # loads the model on first use, off the event loop
            return embedder.embed_counted(texts)

        vectors, tokens = await asyncio.to_thread(run)
        model_response.data = [
            {"object": "embedding", "index": i, "embedding": v.tolist()}
            for i, v in enumerate(vectors)
        ]
        model_response.model = f"{PROVIDER}/{model}"
        model_response.usage = litellm.Usage(prompt_tokens=tokens, total_tokens=tokens)
        return model_response


def _check_text_model(model: str) -> None:
    if model != OFFLINE_MODEL:
        raise errors.BadRequestError(
            f"{PROVIDER}/{model} is not a text model", model=model, llm_provider=PROVIDER
        )


def _chunk(
    text: str, *, finish: str = "", tool_use: dict[str, Any] | None = None
) -> GenericStreamingChunk:
    return {
        "text": text,
        "tool_use": tool_use,  # type: ignore[typeddict-item]
        "is_finished": bool(finish),
        "finish_reason": finish,
        "usage": None,
        "index": 0,
    }
