"""The three encodings of one contract: protobuf, msgpack and JSON (DESIGN §2).

The `Content-Type` header picks the codec; no header means JSON so `nats req` works by hand.
msgpack and JSON go through the proto message, so an unknown field or a wrong type is a
`BadRequest`, never silently dropped. msgpack uses the proto field names (as declared in the
.proto, e.g. `ttl_seconds`; JSON also accepts the lowerCamel spelling) and native values: bytes
as binary, 64-bit integers as integers.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import math
from collections.abc import Callable
from typing import Any, TypeVar, cast

import msgpack
from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import DecodeError, Message

from schemas.errors import BadRequest

M = TypeVar("M", bound=Message)

PROTOBUF = "application/protobuf"
MSGPACK = "application/msgpack"
JSON = "application/json"

# Messages whose proto3 JSON form is not an object of their fields: json_format knows them.
_WELL_KNOWN = frozenset(
    {
        "google.protobuf.Value",
        "google.protobuf.Struct",
        "google.protobuf.ListValue",
        "google.protobuf.Timestamp",
        "google.protobuf.Duration",
        "google.protobuf.FieldMask",
        "google.protobuf.Any",
        *(
            f"google.protobuf.{w}Value"
            for w in (
                "Double",
                "Float",
                "Int64",
                "UInt64",
                "Int32",
                "UInt32",
                "Bool",
                "String",
                "Bytes",
            )
        ),
    }
)


class Codec:
    """One encoding: `decode(cls, body)` -> message, `encode(message)` -> body."""

    def __init__(
        self,
        content_type: str,
        decode: Callable[[type[Message], bytes], Message],
        encode: Callable[[Message], bytes],
    ) -> None:
        self.content_type = content_type
        self._decode = decode
        self.encode = encode

    def decode(self, cls: type[M], body: bytes) -> M:
        msg = self._decode(cls, body)
        assert isinstance(msg, cls)
        return msg

    def __repr__(self) -> str:
        return f"Codec({self.content_type})"


# -- protobuf ---------------------------------------------------------------------------------


def _decode_protobuf(cls: type[Message], body: bytes) -> Message:
    try:
        return cls.FromString(body)
    except DecodeError as exc:
        raise BadRequest(f"invalid protobuf body for {cls.DESCRIPTOR.full_name}") from exc


def _encode_protobuf(msg: Message) -> bytes:
    return msg.SerializeToString()


# -- JSON -------------------------------------------------------------------------------------


def _decode_json(cls: type[Message], body: bytes) -> Message:
    msg = cls()
    if not body.strip():
        return msg
    if body.lstrip()[:1] != b"{" and cls.DESCRIPTOR.full_name not in _WELL_KNOWN:
        # json_format walks any iterable as if it were an object: `[]` and `""` would pass.
        raise BadRequest("JSON body must be an object of the request's fields")
    try:
        if _has_bytes(cast(Descriptor, cls.DESCRIPTOR)):
            data = json.loads(body)
            _check_base64(cast(Descriptor, cls.DESCRIPTOR), data)
            json_format.ParseDict(data, msg, ignore_unknown_fields=False)
        else:
            json_format.Parse(body, msg, ignore_unknown_fields=False)
    except (json_format.ParseError, ValueError, RecursionError) as exc:
        raise BadRequest(f"invalid JSON body: {_first_line(exc)}") from exc
    return msg


@functools.cache
def _has_bytes(desc: Descriptor) -> bool:
    """Whether a message (or one nested in it) has a bytes field: those need a strict check."""
    return any(
        f.type == FieldDescriptor.TYPE_BYTES
        or (
            f.message_type is not None
            and f.message_type.full_name not in _WELL_KNOWN
            and f.message_type is not desc
            and _has_bytes(f.message_type)
        )
        for f in desc.fields
    )


def _check_base64(desc: Descriptor, data: Any) -> None:
    """Reject malformed base64 in bytes fields; json_format would decode it leniently (`!!!`
    becomes empty bytes), silently changing what the caller sent."""
    if not isinstance(data, dict):
        return
    for key, value in data.items():
        field = desc.fields_by_name.get(key) or _by_json_name(desc).get(key)
        if field is None or _is_map(field):
            continue
        values = value if field.is_repeated and isinstance(value, list) else [value]
        if field.type == FieldDescriptor.TYPE_BYTES:
            for item in values:
                if isinstance(item, str) and not _is_base64(item):
                    raise ValueError(f"field {key!r} is not valid base64")
        elif field.message_type is not None and _has_bytes(field.message_type):
            for item in values:
                _check_base64(field.message_type, item)


@functools.cache
def _by_json_name(desc: Descriptor) -> dict[str, FieldDescriptor]:
    return {f.json_name: f for f in desc.fields}


def _is_base64(text: str) -> bool:
    """Standard or URL-safe alphabet, padding optional (the proto3 JSON mapping accepts both)."""
    normal = text.replace("-", "+").replace("_", "/")
    try:
        base64.b64decode(normal + "=" * (-len(normal) % 4), validate=True)
    except binascii.Error:
        return False
    return True


def _encode_json(msg: Message) -> bytes:
    text = json_format.MessageToJson(
        msg,
        preserving_proto_field_name=True,
        always_print_fields_with_no_presence=True,
        indent=None,
    )
    return text.encode()


# -- msgpack ----------------------------------------------------------------------------------


def _decode_msgpack(cls: type[Message], body: bytes) -> Message:
    if not body:
        return cls()
    try:
        data = msgpack.unpackb(body, raw=False)
    except (ValueError, msgpack.UnpackException, RecursionError) as exc:
        raise BadRequest("invalid msgpack body") from exc
    if not isinstance(data, dict):
        raise BadRequest("msgpack body must be a map of the request's fields")
    try:
        return cls(**_kwargs(cast(Descriptor, cls.DESCRIPTOR), data))
    except (TypeError, ValueError, json_format.ParseError, RecursionError) as exc:
        raise BadRequest(f"invalid msgpack body: {_first_line(exc)}") from exc


def _kwargs(desc: Descriptor, data: dict[Any, Any]) -> dict[str, Any]:
    """Turn a msgpack map into constructor arguments; only well-known types need converting."""
    converters = _converters(desc)
    if not converters:
        return data
    out = dict(data)
    nulls = _null_values(desc)
    for name, convert in converters.items():
        if name in out and (out[name] is not None or name in nulls):
            out[name] = convert(out[name])
    return out


@functools.cache
def _null_values(desc: Descriptor) -> frozenset[str]:
    """Singular google.protobuf.Value fields: there nil is the JSON null, not an absent field."""
    return frozenset(
        f.name
        for f in desc.fields
        if not _is_repeated(f)
        and f.message_type is not None
        and f.message_type.full_name == "google.protobuf.Value"
    )


@functools.cache
def _converters(desc: Descriptor) -> dict[str, Callable[[Any], Any]]:
    """Per field, what turns its native msgpack value into something the constructor takes."""
    result: dict[str, Callable[[Any], Any]] = {}
    for field in desc.fields:
        sub = field.message_type
        if sub is None:
            if _is_repeated(field):
                # A string is iterable: without this check "ab" would become ["a", "b"].
                result[field.name] = _as_list
            continue
        if _is_map(field):
            value_field = _map_value(field)
            if value_field.message_type is not None:
                one = _one_converter(value_field.message_type)
                result[field.name] = functools.partial(_each_value, one)
            continue
        one = _one_converter(sub)
        if _is_repeated(field):
            result[field.name] = functools.partial(_each_item, one)
        else:
            result[field.name] = one
    return result


def _one_converter(sub: Descriptor) -> Callable[[Any], Any]:
    if sub.full_name in _WELL_KNOWN:
        cls = _message_class(sub)
        fill = _FILL.get(sub.full_name)

        def well_known(value: Any) -> Message:
            if fill is not None:
                msg = cls()
                try:
                    fill(msg, value)
                    return msg
                except (ValueError, TypeError, AttributeError, OverflowError):
                    pass  # json_format below says what is wrong
            msg = cls()
            json_format.ParseDict(value, msg)
            return msg

        return well_known

    def nested(value: Any) -> Any:
        if not isinstance(value, dict):
            raise TypeError(f"{sub.full_name} must be a map")
        return _kwargs(sub, value)

    return nested


def _fill_struct(msg: Any, value: Any) -> None:
    if not isinstance(value, dict):
        raise TypeError("not a map")
    msg.update(value)


def _fill_list(msg: Any, value: Any) -> None:
    if not isinstance(value, list):
        raise TypeError("not a list")
    msg.extend(value)


# Struct and ListValue from plain values in one C-backed call each (json_format.ParseDict walks
# them in Python: ~7x slower on a batch of rows); anything they refuse goes to ParseDict, so
# errors stay json_format's.
_FILL: dict[str, Callable[[Any, Any], None]] = {
    "google.protobuf.Struct": _fill_struct,
    "google.protobuf.ListValue": _fill_list,
}


def _each_item(one: Callable[[Any], Any], value: Any) -> list[Any]:
    return [one(x) for x in _as_list(value)]


def _each_value(one: Callable[[Any], Any], value: Any) -> dict[Any, Any]:
    return {k: one(x) for k, x in _as_map(value).items()}


def _as_list(value: Any) -> list[Any]:
    if not isinstance(value, list):
        raise TypeError("expected a list")
    return value


def _as_map(value: Any) -> dict[Any, Any]:
    if not isinstance(value, dict):
        raise TypeError("expected a map")
    return value


def _encode_msgpack(msg: Message) -> bytes:
    packed: bytes = msgpack.packb(_native(msg), use_bin_type=True)
    return packed


def _native(msg: Message) -> Any:
    """The message as plain values, the JSON mapping's shape with binary bytes and int64s."""
    desc = msg.DESCRIPTOR
    if desc.full_name in _WELL_KNOWN:
        plain = _PLAIN.get(desc.full_name)
        return plain(msg) if plain is not None else json_format.MessageToDict(msg)
    out: dict[str, Any] = {}
    for field, kind in _plan(desc):
        name = field.name
        if kind == "present":
            if not msg.HasField(name):
                continue
            kind = "message" if field.message_type is not None else "scalar"
        value = getattr(msg, name)
        if kind == "scalar":
            out[name] = value
        elif kind == "enum":
            out[name] = _enum_name(field, value)
        elif kind == "message":
            out[name] = _native(value)
        elif kind == "repeated":
            out[name] = list(value)
        elif kind == "repeated_message":
            out[name] = [_native(v) for v in value]
        elif kind == "map":
            out[name] = dict(value)
        else:  # map of messages
            out[name] = {k: _native(v) for k, v in value.items()}
    return out


def _plain_value(value: Any) -> Any:
    """A Value as json_format.MessageToDict gives it (also refusing NaN and infinities)."""
    kind = value.WhichOneof("kind")
    if kind is None or kind == "null_value":
        return None
    if kind == "number_value":
        number = value.number_value
        if math.isinf(number) or math.isnan(number):
            raise ValueError(f"Fail to serialize {number} for Value.number_value")
        return number
    if kind == "struct_value":
        return _plain_struct(value.struct_value)
    if kind == "list_value":
        return [_plain_value(v) for v in value.list_value.values]
    return getattr(value, kind)


def _plain_struct(struct: Any) -> dict[str, Any]:
    return {key: _plain_value(item) for key, item in struct.fields.items()}


def _plain_list(values: Any) -> list[Any]:
    return [_plain_value(v) for v in values.values]


# The JSON-shaped well-known types walked directly: MessageToDict costs ~10x more per value.
_PLAIN: dict[str, Callable[[Any], Any]] = {
    "google.protobuf.Value": _plain_value,
    "google.protobuf.Struct": _plain_struct,
    "google.protobuf.ListValue": _plain_list,
}


@functools.cache
def _plan(desc: Descriptor) -> tuple[tuple[FieldDescriptor, str], ...]:
    """How each field is turned into a native value, decided once per message type."""
    plan = []
    for field in desc.fields:
        if _is_map(field):
            value_field = _map_value(field)
            kind = "map" if value_field.message_type is None else "map_message"
        elif _is_repeated(field):
            kind = "repeated" if field.message_type is None else "repeated_message"
        elif field.has_presence:
            kind = "present"
        elif field.enum_type is not None:
            kind = "enum"
        else:
            kind = "scalar"
        plan.append((field, kind))
    return tuple(plan)


def _map_value(field: FieldDescriptor) -> FieldDescriptor:
    assert field.message_type is not None
    return field.message_type.fields_by_name["value"]


def _enum_name(field: FieldDescriptor, number: int) -> str | int:
    assert field.enum_type is not None
    value = field.enum_type.values_by_number.get(number)
    return value.name if value is not None else number


def _is_repeated(field: FieldDescriptor) -> bool:
    return bool(field.is_repeated)


def _is_map(field: FieldDescriptor) -> bool:
    return (
        _is_repeated(field)
        and field.message_type is not None
        and field.message_type.GetOptions().map_entry
    )


@functools.cache
def _message_class(desc: Descriptor) -> type[Message]:
    from google.protobuf import message_factory

    return message_factory.GetMessageClass(desc)


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__


# -- choosing ---------------------------------------------------------------------------------

PROTOBUF_CODEC = Codec(PROTOBUF, _decode_protobuf, _encode_protobuf)
MSGPACK_CODEC = Codec(MSGPACK, _decode_msgpack, _encode_msgpack)
JSON_CODEC = Codec(JSON, _decode_json, _encode_json)

_BY_CONTENT_TYPE = {
    PROTOBUF: PROTOBUF_CODEC,
    "application/x-protobuf": PROTOBUF_CODEC,
    "application/vnd.google.protobuf": PROTOBUF_CODEC,
    MSGPACK: MSGPACK_CODEC,
    "application/x-msgpack": MSGPACK_CODEC,
    "application/vnd.msgpack": MSGPACK_CODEC,
    JSON: JSON_CODEC,
}


def codec_for(content_type: str | None) -> Codec:
    """The codec a `Content-Type` names; none or empty means JSON."""
    if not content_type:
        return JSON_CODEC
    codec = _BY_CONTENT_TYPE.get(content_type)
    if codec is None:
        codec = _BY_CONTENT_TYPE.get(content_type.split(";", 1)[0].strip().lower())
    if codec is None:
        raise BadRequest(
            f"unsupported Content-Type {content_type[:80]!r}",
            details={"supported": [PROTOBUF, MSGPACK, JSON]},
        )
    return codec
