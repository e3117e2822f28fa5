"""The three encodings of one contract (DESIGN §2): protobuf, msgpack and JSON by Content-Type."""

from __future__ import annotations

import base64
import json
from typing import Any

import msgpack
import pytest
from google.protobuf import struct_pb2

from schemas.codec import (
    JSON,
    JSON_CODEC,
    MSGPACK,
    MSGPACK_CODEC,
    PROTOBUF,
    PROTOBUF_CODEC,
    Codec,
    codec_for,
)
from schemas.errors import BadRequest
from schemas.v1.cache_pb2 import ClearRequest, GetResponse, SetRequest
from tests.support.testkit_pb2 import EchoRequest, Nested

CODECS = [PROTOBUF_CODEC, MSGPACK_CODEC, JSON_CODEC]
TEXT_CODECS = [MSGPACK_CODEC, JSON_CODEC]


def value(v: Any) -> struct_pb2.Value:
    out = struct_pb2.Value()
    if v is None:
        out.null_value = struct_pb2.NULL_VALUE
    elif isinstance(v, bool):
        out.bool_value = v
    elif isinstance(v, (int, float)):
        out.number_value = v
    elif isinstance(v, str):
        out.string_value = v
    elif isinstance(v, list):
        out.list_value.extend(v)
    else:
        out.struct_value.update(v)
    return out


def full_request() -> EchoRequest:
    req = EchoRequest(
        text="héllo ✓",
        blob=bytes(range(256)),
        number=-(2**63),
        items=["a", "", "c"],
        sleep_seconds=0.25,
        crash=True,
        nested=Nested(label="inner"),
        counts={"a": 2**62, "b": -1, "": 0},
    )
    req.any.CopyFrom(value({"k": [1, "x", None, True, {"deep": 2.5}]}))
    return req


SINGLE_FIELDS: dict[str, EchoRequest] = {
    "string": EchoRequest(text="some text ✓"),
    "bytes": EchoRequest(blob=b"\x00\xff\x80 not utf-8 \xc3"),
    "int64_max": EchoRequest(number=2**63 - 1),
    "int64_min": EchoRequest(number=-(2**63)),
    "double": EchoRequest(sleep_seconds=1.5),
    "bool": EchoRequest(crash=True),
    "repeated": EchoRequest(items=["one", "", "three"]),
    "map": EchoRequest(counts={"x": 1, "y": -(2**40)}),
    "nested": EchoRequest(nested=Nested(label="n")),
    "nested_empty": EchoRequest(nested=Nested()),
    "value_null": EchoRequest(any=value(None)),
    "value_number": EchoRequest(any=value(3.5)),
    "value_zero": EchoRequest(any=value(0)),
    "value_string": EchoRequest(any=value("s")),
    "value_empty_string": EchoRequest(any=value("")),
    "value_bool": EchoRequest(any=value(False)),
    "value_list": EchoRequest(any=value([1, "two", None, [False]])),
    "value_struct": EchoRequest(any=value({"a": {"b": None}, "c": []})),
    "empty": EchoRequest(),
}


@pytest.mark.parametrize("codec", CODECS, ids=repr)
def test_full_message_round_trips(codec: Codec) -> None:
    """Every field kind at once survives encode → decode unchanged."""
    req = full_request()
    assert codec.decode(EchoRequest, codec.encode(req)) == req


@pytest.mark.parametrize("codec", CODECS, ids=repr)
@pytest.mark.parametrize("name", list(SINGLE_FIELDS))
def test_each_field_kind_round_trips_with_its_presence(codec: Codec, name: str) -> None:
    """Each field kind alone round trips, and a set message field stays set (even to null)."""
    req = SINGLE_FIELDS[name]
    back = codec.decode(EchoRequest, codec.encode(req))
    assert back == req
    assert back.HasField("any") == req.HasField("any")
    assert back.HasField("nested") == req.HasField("nested")


@pytest.mark.parametrize("codec", CODECS, ids=repr)
def test_a_json_null_in_a_oneof_keeps_its_place(codec: Codec) -> None:
    """A cached JSON null comes back as a value, not as an entry with no payload."""
    reply = GetResponse(found=True, value=value(None))
    back = codec.decode(GetResponse, codec.encode(reply))
    assert back.WhichOneof("payload") == "value"
    assert back == reply


def test_msgpack_uses_native_bytes_and_integers() -> None:
    """msgpack carries bytes as binary and int64 as integers, keyed by .proto field names."""
    req = EchoRequest(blob=b"\x00\xff", number=2**62, items=["a"], counts={"k": 7})
    data = msgpack.unpackb(MSGPACK_CODEC.encode(req), raw=False)
    assert data["blob"] == b"\x00\xff"
    assert data["number"] == 2**62
    assert data["items"] == ["a"]
    assert data["counts"] == {"k": 7}


def test_json_uses_the_proto3_mapping() -> None:
    """JSON: base64 bytes, int64 as a string, .proto field names, defaults printed."""
    req = EchoRequest(blob=b"\x00\xff", number=2**62, sleep_seconds=0.5)
    data = json.loads(JSON_CODEC.encode(req))
    assert data["blob"] == base64.b64encode(b"\x00\xff").decode()
    assert data["number"] == str(2**62)
    assert data["sleep_seconds"] == 0.5
    assert data["text"] == ""
    assert data["crash"] is False


def test_hand_written_bodies_decode() -> None:
    """What another language's client writes by hand decodes to the same message."""
    expected = EchoRequest(text="hi", number=5, blob=b"ab", items=["x"], counts={"c": 2})
    expected.any.CopyFrom(value({"a": 1}))
    as_json = (
        b'{"text":"hi","number":5,"blob":"YWI=","items":["x"],"counts":{"c":"2"},"any":{"a":1}}'
    )
    assert JSON_CODEC.decode(EchoRequest, as_json) == expected
    as_msgpack = msgpack.packb(
        {
            "text": "hi",
            "number": 5,
            "blob": b"ab",
            "items": ["x"],
            "counts": {"c": 2},
            "any": {"a": 1},
        }
    )
    assert MSGPACK_CODEC.decode(EchoRequest, as_msgpack) == expected


@pytest.mark.parametrize("codec", CODECS, ids=repr)
def test_empty_body_is_the_default_message(codec: Codec) -> None:
    """`nats req subject ''` sends an empty body: it decodes as the empty request."""
    assert codec.decode(EchoRequest, b"") == EchoRequest()


BAD_JSON = {
    "unknown_field": b'{"text": "x", "colour": "red"}',
    "unknown_nested_field": b'{"nested": {"label": "a", "extra": 1}}',
    "int_for_string": b'{"text": 5}',
    "string_for_int64": b'{"number": "five"}',
    "float_for_int64": b'{"number": 1.5}',
    "int64_out_of_range": b'{"number": 1e30}',
    "string_for_bool": b'{"crash": "yes"}',
    "string_for_double": b'{"sleep_seconds": "soon"}',
    "string_for_repeated": b'{"items": "ab"}',
    "int_in_repeated": b'{"items": [1]}',
    "list_for_map": b'{"counts": [1]}',
    "bad_map_value": b'{"counts": {"a": "x"}}',
    "string_for_nested": b'{"nested": "x"}',
    "array_body": b"[]",
    "array_body_with_item": b'[{"text": "x"}]',
    "string_body": b'"text"',
    "empty_string_body": b'""',
    "number_body": b"5",
    "null_body": b"null",
    "true_body": b"true",
    "truncated": b'{"text": "x"',
    "not_json": b"text=x",
    "invalid_utf8": b'{"text": "\xff"}',
    "deeply_nested": b"[" * 100_000,
}

BAD_MSGPACK: dict[str, bytes] = {
    "unknown_field": msgpack.packb({"text": "x", "colour": "red"}),
    "unknown_nested_field": msgpack.packb({"nested": {"label": "a", "extra": 1}}),
    "int_for_string": msgpack.packb({"text": 5}),
    "string_for_int64": msgpack.packb({"number": "five"}),
    "float_for_int64": msgpack.packb({"number": 1.5}),
    "bool_for_int64": msgpack.packb({"number": True}),
    "int64_out_of_range": msgpack.packb({"number": 2**63}),
    "string_for_bytes": msgpack.packb({"blob": "text"}, use_bin_type=True),
    "string_for_double": msgpack.packb({"sleep_seconds": "soon"}),
    "string_for_repeated": msgpack.packb({"items": "ab"}),
    "int_in_repeated": msgpack.packb({"items": [1]}),
    "list_for_map": msgpack.packb({"counts": [1]}),
    "bad_map_value": msgpack.packb({"counts": {"a": "x"}}),
    "int_map_key": msgpack.packb({"counts": {1: 1}}),
    "string_for_nested": msgpack.packb({"nested": "x"}),
    "bytes_for_value": msgpack.packb({"any": b"x"}, use_bin_type=True),
    "integer_key": msgpack.packb({1: "x"}),
    "array_body": msgpack.packb([]),
    "array_body_with_item": msgpack.packb([{"text": "x"}]),
    "string_body": msgpack.packb("text"),
    "number_body": msgpack.packb(5),
    "nil_body": msgpack.packb(None),
    "reserved_byte": b"\xc1",
    "truncated": msgpack.packb({"text": "xyz"})[:-1],
    "trailing_data": msgpack.packb({}) + msgpack.packb({}),
    "invalid_utf8_key": b"\x81\xa2\xff\xfe\x01",
}


@pytest.mark.parametrize("name", list(BAD_JSON))
def test_bad_json_is_a_bad_request(name: str) -> None:
    """Unknown fields, wrong types, non-object bodies and malformed text are a 400."""
    with pytest.raises(BadRequest) as raised:
        JSON_CODEC.decode(EchoRequest, BAD_JSON[name])
    assert raised.value.status == 400


@pytest.mark.parametrize("name", list(BAD_MSGPACK))
def test_bad_msgpack_is_a_bad_request(name: str) -> None:
    """Unknown fields, wrong types, non-map bodies and malformed bytes are a 400."""
    with pytest.raises(BadRequest) as raised:
        MSGPACK_CODEC.decode(EchoRequest, BAD_MSGPACK[name])
    assert raised.value.status == 400


@pytest.mark.parametrize("codec", TEXT_CODECS, ids=repr)
@pytest.mark.parametrize("body", [[], "x", 0, None, [{"x": 1}]], ids=repr)
def test_a_non_map_body_of_a_fieldless_request_is_a_bad_request(codec: Codec, body: Any) -> None:
    """Even a request without fields (ClearRequest) must be sent as a map/object."""
    raw = json.dumps(body).encode() if codec is JSON_CODEC else msgpack.packb(body)
    with pytest.raises(BadRequest):
        codec.decode(ClearRequest, raw)


@pytest.mark.parametrize(
    "body", [b"\xff\xff\xff", b"\x0a\x05ab", b"\x0a\x02\xff\xfe", b"\x08"], ids=repr
)
def test_malformed_protobuf_is_a_bad_request(body: bytes) -> None:
    """Truncated fields, bad varints and invalid UTF-8 in a string are a 400."""
    with pytest.raises(BadRequest):
        PROTOBUF_CODEC.decode(EchoRequest, body)


def test_bad_request_message_has_no_exception_repr() -> None:
    """The 400 text is short and never an exception repr or a traceback."""
    with pytest.raises(BadRequest) as raised:
        MSGPACK_CODEC.decode(SetRequest, msgpack.packb({"key": 1}))
    message = raised.value.message
    assert "Traceback" not in message
    assert "\n" not in message
    assert len(message) < 300


@pytest.mark.parametrize(
    ("content_type", "expected"),
    [
        (None, JSON_CODEC),
        ("", JSON_CODEC),
        (JSON, JSON_CODEC),
        (MSGPACK, MSGPACK_CODEC),
        (PROTOBUF, PROTOBUF_CODEC),
        ("application/json; charset=utf-8", JSON_CODEC),
        ("application/json;charset=UTF-8", JSON_CODEC),
        ("Application/JSON", JSON_CODEC),
        ("application/msgpack; charset=binary", MSGPACK_CODEC),
        ("application/x-msgpack", MSGPACK_CODEC),
        ("application/vnd.msgpack", MSGPACK_CODEC),
        ("application/x-protobuf", PROTOBUF_CODEC),
        ("application/vnd.google.protobuf", PROTOBUF_CODEC),
    ],
)
def test_content_type_picks_the_codec(content_type: str | None, expected: Codec) -> None:
    """No header means JSON; parameters such as charset and letter case are accepted."""
    assert codec_for(content_type) is expected


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/xml", "application/cbor", "json", "*/*"]
)
def test_unsupported_content_type_is_a_bad_request(content_type: str) -> None:
    """An unknown Content-Type is a 400 listing what is supported."""
    with pytest.raises(BadRequest) as raised:
        codec_for(content_type)
    assert raised.value.status == 400
    assert raised.value.details["supported"] == [PROTOBUF, MSGPACK, JSON]


@pytest.mark.parametrize("codec", CODECS, ids=repr)
def test_content_type_of_each_codec_selects_it_again(codec: Codec) -> None:
    """A reply's Content-Type names the codec that decodes it."""
    assert codec_for(codec.content_type) is codec


@pytest.mark.parametrize("text", ["!!!", "a", "aGk=x", "a b"])
def test_json_rejects_malformed_base64_in_bytes_fields(text: str) -> None:
    """A bytes field whose base64 does not decode is a 400, not silently empty or truncated."""
    with pytest.raises(BadRequest):
        JSON_CODEC.decode(EchoRequest, json.dumps({"blob": text}).encode())


@pytest.mark.parametrize(
    ("text", "expected"), [("aGk=", b"hi"), ("aGk", b"hi"), ("-_8=", b"\xfb\xff")]
)
def test_json_accepts_padded_unpadded_and_url_safe_base64(text: str, expected: bytes) -> None:
    """The proto3 JSON mapping's base64 variants all decode to the same bytes."""
    assert JSON_CODEC.decode(EchoRequest, json.dumps({"blob": text}).encode()).blob == expected


JSON_VALUES: list[Any] = [
    {},
    {"a": 1, "b": 2.5, "c": "x", "d": True, "e": None},
    {"nested": {"deep": {"list": [1, "two", None, False, {"k": []}]}}},
    {"big": 2**60, "neg": -3, "unicode": "数据 🙂", "empty": ""},
]


@pytest.mark.parametrize("plain", JSON_VALUES, ids=repr)
def test_msgpack_structs_decode_as_json_format_parses_them(plain: dict[str, Any]) -> None:
    """A Struct field (and a repeated one) decodes to what json_format.ParseDict gives."""
    from google.protobuf import json_format

    from schemas.v1.ml_pb2 import PredictBatchRequest

    body = msgpack.packb({"model_id": "m", "features_list": [plain, plain]})
    decoded = MSGPACK_CODEC.decode(PredictBatchRequest, body)
    expected = struct_pb2.Struct()
    json_format.ParseDict(plain, expected)
    assert list(decoded.features_list) == [expected, expected]


@pytest.mark.parametrize(
    "bad",
    [{"x": b"bytes"}, {1: "int key"}, {"x": {"y": b"deep bytes"}}, "not a map", [1, 2]],
    ids=repr,
)
def test_a_struct_json_format_refuses_is_still_a_bad_request(bad: Any) -> None:
    """Values a Struct cannot hold are a 400, as before the fast path."""
    from schemas.v1.ml_pb2 import PredictRequest

    with pytest.raises(BadRequest):
        MSGPACK_CODEC.decode(PredictRequest, msgpack.packb({"model_id": "m", "features": bad}))


@pytest.mark.parametrize("plain", [*JSON_VALUES, {"list": [[1, [2, [3]]]]}], ids=repr)
def test_msgpack_encodes_structs_and_values_as_message_to_dict(plain: dict[str, Any]) -> None:
    """Struct, Value and ListValue fields encode to json_format.MessageToDict's values."""
    from google.protobuf import json_format

    from schemas.v1.ml_pb2 import MlPrediction, PredictBatchRequest

    req = PredictBatchRequest(model_id="m")
    json_format.ParseDict(plain, req.features_list.add())
    packed = msgpack.unpackb(MSGPACK_CODEC.encode(req))
    assert packed["features_list"] == [json_format.MessageToDict(req.features_list[0])]
    one: Any
    for one in (None, True, 2.5, "s", [1, "a", None], {"k": {"n": 1}}):
        out = MlPrediction()
        json_format.ParseDict(one, out.prediction)
        one_packed = msgpack.unpackb(MSGPACK_CODEC.encode(out))
        assert one_packed["prediction"] == json_format.MessageToDict(out.prediction)


def test_a_non_finite_number_in_a_value_is_refused_on_encoding() -> None:
    """As json_format: NaN and infinities have no JSON form."""
    from schemas.v1.ml_pb2 import MlPrediction

    for number in (float("nan"), float("inf")):
        out = MlPrediction()
        out.prediction.number_value = number
        with pytest.raises(ValueError, match="Fail to serialize"):
            MSGPACK_CODEC.encode(out)
