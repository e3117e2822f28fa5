"""Mapping an HTTP request onto its rpc's request message, as the http rule declares.

Path parameters and query parameters set fields (strings converted by field type, unknown or
mistyped ones refused); `body: "*"` makes the JSON body the message, with path fields merged
in (a body field contradicting the path is refused); `body: "field"` makes the body that
field's value. Everything that is mapped goes through the proto message, so a bad request is a
`BadRequest` (400) here; a body that is the whole message with nothing to merge is forwarded as
sent, and the worker's runtime validates it the same way.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qsl

from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from bridge.routes import Binding, descriptor, resolve
from schemas.codec import JSON_CODEC
from schemas.errors import BadRequest


def request_payload(
    binding: Binding, path: dict[str, str], query_string: bytes, body: bytes
) -> bytes:
    """The JSON request forwarded to the worker; `BadRequest` for anything the rule rejects."""
    desc = binding.request
    query = parse_qsl(query_string.decode("latin-1"), keep_blank_values=True)
    if binding.body == "*" and not path and not query:
        # The whole body is the message, as sent: the worker's runtime decodes and validates it
        # (one validation, where the contract is enforced, answering 400 for anything wrong).
        return body
    bound: dict[str, Any] = {}
    for var, value in path.items():
        fields = resolve(desc, var.split("."))
        _put(bound, fields, _scalar(fields[-1], value))
    if query:
        if binding.body == "*":
            raise BadRequest("this route takes its fields from the body, not the query")
        allowed = binding.query_fields()
        for name, value in query:
            _put_query(bound, allowed, desc, name, value)
    if binding.body == "*":
        msg = _parse_message(binding.rpc.request, _loads(body) if body.strip() else {})
        from_path = _parse_message(binding.rpc.request, bound)
        _check_conflicts(msg, from_path, binding.variables)
        msg.MergeFrom(from_path)
    else:
        if binding.body and body.strip():
            bound[binding.body] = _loads(body, require_object=False)
        msg = _parse_message(binding.rpc.request, bound)
    return JSON_CODEC.encode(msg)


def _put_query(
    bound: dict[str, Any],
    allowed: dict[str, tuple[FieldDescriptor, ...]],
    desc: Descriptor,
    name: str,
    value: str,
) -> None:
    try:
        path = resolve(desc, name.split("."))
    except ValueError:
        raise BadRequest(
            f"unknown query parameter {name[:80]!r}", details={"field": name[:80]}
        ) from None
    canonical = ".".join(f.name for f in path)
    if canonical not in allowed:
        raise BadRequest(
            f"{canonical} cannot be set from the query on this route", details={"field": canonical}
        )
    leaf = path[-1]
    converted = _scalar(leaf, value)
    if leaf.is_repeated:
        _put(bound, path, converted, append=True)
    else:
        _put(bound, path, converted)


def _put(
    bound: dict[str, Any],
    path: tuple[FieldDescriptor, ...],
    value: Any,
    *,
    append: bool = False,
) -> None:
    node = bound
    for field in path[:-1]:
        node = node.setdefault(field.name, {})
    name = path[-1].name
    if append:
        node.setdefault(name, []).append(value)
    elif name in node:
        raise BadRequest(f"{name} is given more than once", details={"field": name})
    else:
        node[name] = value


def _scalar(field: FieldDescriptor, text: str) -> Any:
    """A path or query string as the JSON value the field's proto3 JSON mapping expects."""
    if field.type == FieldDescriptor.TYPE_BOOL:
        lowered = text.lower()
        if lowered not in ("true", "false"):
            raise BadRequest(f"{field.name} must be true or false", details={"field": field.name})
        return lowered == "true"
    return text  # numbers, enums, bytes (base64) and well-known scalars parse from strings


def _parse_message(cls: type[Message], data: Any) -> Message:
    if not isinstance(data, dict):
        raise BadRequest("the body must be a JSON object")
    msg = cls()
    try:
        json_format.ParseDict(data, msg, ignore_unknown_fields=False)
    except (json_format.ParseError, RecursionError, ValueError, TypeError) as exc:
        first = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise BadRequest(f"invalid request: {first}") from exc
    return msg


def _check_conflicts(body: Message, path: Message, variables: tuple[str, ...]) -> None:
    for var in variables:
        fields = resolve(descriptor(type(body)), var.split("."))
        node: Message = body
        for field in fields[:-1]:
            if not node.HasField(field.name):
                break
            node = getattr(node, field.name)
        else:
            leaf = fields[-1]
            has = node.HasField(leaf.name) if leaf.has_presence else bool(getattr(node, leaf.name))
            if not has:
                continue
            want: Any = path
            for field in fields:
                want = getattr(want, field.name)
            if getattr(node, leaf.name) != want:
                raise BadRequest(f"{var} in the body differs from the path", details={"field": var})


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise BadRequest(f"duplicate key {key[:80]!r} in the JSON body")
        out[key] = value
    return out


def _loads(body: bytes, *, require_object: bool = True) -> Any:
    try:
        data = json.loads(body, object_pairs_hook=_no_duplicates)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError
        raise BadRequest("the body is not valid JSON") from exc
    if require_object and not isinstance(data, dict):
        raise BadRequest("the body must be a JSON object")
    return data
