"""Chat messages as stored JSON (jsonb) and back: the proto JSON mapping with .proto names."""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format

from schemas.v1.common_pb2 import ChatMessage


def storable(text: str) -> str:
    """`text` with every NUL character replaced by U+FFFD. PostgreSQL stores no NUL, and what a
    model or a tool produced is kept as well as it can be rather than failing the run."""
    return text.replace("\x00", "\ufffd") if "\x00" in text else text


def storable_json(value: Any) -> Any:
    """`storable` for every string (and key) of a plain JSON value."""
    if isinstance(value, str):
        return storable(value)
    if isinstance(value, dict):
        return {storable(k): storable_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [storable_json(v) for v in value]
    return value


def storable_message(message: ChatMessage) -> ChatMessage:
    """A model's message with NUL characters replaced in its text and tool calls (in place)."""
    message.content = storable(message.content)
    for call in message.tool_calls:
        call.id = storable(call.id)
        call.function.name = storable(call.function.name)
        call.function.arguments = storable(call.function.arguments)
    return message


def message_json(message: ChatMessage) -> dict[str, Any]:
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def message_of(value: dict[str, Any]) -> ChatMessage:
    return json_format.ParseDict(value, ChatMessage())
