"""Chat messages as stored JSON (jsonb) and back: the proto JSON mapping with .proto names."""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format

from schemas.v1.common_pb2 import ChatMessage


def message_json(message: ChatMessage) -> dict[str, Any]:
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def message_of(value: dict[str, Any]) -> ChatMessage:
    return json_format.ParseDict(value, ChatMessage())
