"""Chat messages as stored JSON (jsonb) and back: the proto JSON mapping with .proto names."""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format

from schemas.v1.common_pb2 import ChatMessage
from workers.runtime import validation as check


def storable_message(message: ChatMessage) -> ChatMessage:
    """A model's message with NUL characters replaced in its text and tool calls (in place)."""
    message.content = check.storable(message.content)
    for call in message.tool_calls:
        call.id = check.storable(call.id)
        call.function.name = check.storable(call.function.name)
        call.function.arguments = check.storable(call.function.arguments)
    return message


def message_json(message: ChatMessage) -> dict[str, Any]:
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def message_of(value: dict[str, Any]) -> ChatMessage:
    return json_format.ParseDict(value, ChatMessage())
