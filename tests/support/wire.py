"""Raw requests in each of the three encodings, and checks of the fleet's error replies, as a
client in another language would see them (plain json/msgpack libraries, no codec)."""

from __future__ import annotations

import json
from typing import Any

import msgpack
from google.protobuf import json_format
from google.protobuf.message import Message
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from schemas.registry import rpc
from schemas.v1.common_pb2 import Error
from subjects import HEADER_CONTENT_TYPE, HEADER_ERROR, HEADER_ERROR_CODE

# No Content-Type means JSON, as a `nats req` by hand sends it.
CONTENT_TYPES = {"json": None, "msgpack": "application/msgpack", "protobuf": "application/protobuf"}


def encode(fmt: str, component: str, op: str, body: Any) -> bytes:
    """`body` (a dict of the request's fields) in the encoding `fmt`."""
    if fmt == "json":
        return json.dumps(body).encode()
    if fmt == "msgpack":
        packed: bytes = msgpack.packb(body, use_bin_type=True)
        return packed
    found = rpc(component, op)
    assert found is not None
    message: Message = found.request()
    json_format.ParseDict(body, message)
    return message.SerializeToString()


async def send(
    conn: NATS, tenant: str, component: str, op: str, fmt: str, data: bytes, timeout: float = 10
) -> Msg:
    """One request on the raw subject (the tenant token is not validated here)."""
    content_type = CONTENT_TYPES[fmt]
    headers = {HEADER_CONTENT_TYPE: content_type} if content_type else None
    subject = f"ai.v1.{tenant}.req.{component}.{op}"
    return await conn.request(subject, data, timeout=timeout, headers=headers)


def error_of(fmt: str, msg: Msg) -> tuple[str, str, bool]:
    """(code, message, retryable) decoded with the plain library of the request's encoding."""
    if fmt == "protobuf":
        err = Error.FromString(msg.data)
        return err.code, err.message, err.retryable
    data = json.loads(msg.data) if fmt == "json" else msgpack.unpackb(msg.data)
    return data["code"], data["message"], data["retryable"]


def assert_error(msg: Msg, fmt: str, status: int, code: str) -> str:
    """The reply is the documented error (headers and body agree, nothing internal leaks);
    returns its message."""
    headers = msg.headers or {}
    assert headers.get(HEADER_ERROR_CODE) == str(status), (headers, msg.data[:300])
    got_code, message, retryable = error_of(fmt, msg)
    assert got_code == code
    assert retryable is False
    assert message
    assert headers.get(HEADER_ERROR) == " ".join(message.split())[:200]
    assert "Traceback" not in message
    assert "Error(" not in message
    return message
