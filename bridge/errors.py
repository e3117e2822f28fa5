"""Errors over HTTP: always the fleet's one `aifleet.v1.Error` shape, as JSON.

A worker's error keeps its status and body; the bridge's own refusals (auth, limits, routing)
use the same shape. The few statuses only HTTP has (405, 408, 415) get codes of their own.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from nats.aio.msg import Msg
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from schemas.codec import JSON_CODEC
from schemas.errors import BadRequest, Internal, NotFound, ServiceError
from schemas.v1.common_pb2 import Error
from subjects import HEADER_ERROR, HEADER_ERROR_CODE, HEADER_REQUEST_ID

JSON = "application/json"


class MethodNotAllowed(ServiceError):
    status, code = 405, "METHOD_NOT_ALLOWED"


class RequestTimeout(ServiceError):
    status, code = 408, "REQUEST_TIMEOUT"


class UnsupportedMediaType(ServiceError):
    status, code = 415, "UNSUPPORTED_MEDIA_TYPE"


# Statuses whose connection is closed after the answer: the client may still be sending a body
# the bridge will not read.
_CLOSE = frozenset({408, 413})


def error_body(error: ServiceError) -> bytes:
    """The `Error` in the proto3 JSON mapping. Built directly (details is a Struct: a JSON
    object), which keeps refusals such as 429 cheap; the codec is the fallback."""
    body: dict[str, object] = {"code": error.code, "message": error.message}
    if error.details:
        body["details"] = error.details
    body["retryable"] = error.retryable
    try:
        return json.dumps(body, allow_nan=False).encode()
    except (TypeError, ValueError):
        return JSON_CODEC.encode(error.to_proto())


def error_response(error: ServiceError, headers: Mapping[str, str] | None = None) -> Response:
    out = dict(headers or {})
    if error.status in _CLOSE:
        out["Connection"] = "close"
    return Response(error_body(error), status_code=error.status, media_type=JSON, headers=out)


def _from_http(exc: HTTPException) -> ServiceError:
    if exc.status_code == 404:
        return NotFound("no route for this path")
    if exc.status_code == 405:
        return MethodNotAllowed("method not allowed on this path")
    if exc.status_code < 500:
        return BadRequest(str(exc.detail)[:200] or "bad request")
    return Internal("internal error")


def raise_for_reply(msg: Msg) -> None:
    """An error reply becomes the worker's `ServiceError` (status and `Error` kept)."""
    headers = msg.headers or {}
    code = headers.get(HEADER_ERROR_CODE)
    if code is None:
        return
    status = int(code) if code.isdigit() and 400 <= int(code) <= 599 else 500
    try:
        err = JSON_CODEC.decode(Error, msg.data)
    except BadRequest:
        err = Error(code="", message=headers.get(HEADER_ERROR, "error"))
    raise ServiceError.from_proto(err, status)


async def http_exception_handler(request: Request, exc: Exception) -> Response:
    """Starlette's own 404/405 and friends, in the Error shape."""
    assert isinstance(exc, HTTPException)
    error = _from_http(exc)
    headers = dict(exc.headers or {})
    request_id = request.headers.get(HEADER_REQUEST_ID)
    if request_id:
        headers[HEADER_REQUEST_ID] = request_id[:128]
    return error_response(error, headers)


async def service_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ServiceError)
    return error_response(exc)
