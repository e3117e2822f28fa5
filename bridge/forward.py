"""One REST call: authenticate, limit, map, forward to `ai.v1.<tenant>.req.<component>.<op>`.

The order is chosen so that nothing is read or published for a caller who is refused: the
token (and tenant) first, then the tenant's rate, then the body (size and time), then the
mapping into the request message; only a request that passed all of it reaches NATS. The reply
JSON is returned as the worker wrote it; an error reply keeps the worker's status and `Error`;
no responders is 503 at once and a missed deadline is 504. Streaming rpcs answer as
Server-Sent Events: one `message` event per reply, an `error` event if the stream fails, and
always a final `end` event. A client that goes away cancels the response, which unsubscribes
from the reply inbox.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from opentelemetry.trace import SpanKind, Status, StatusCode
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from bridge.auth import DevAuth, JwtAuth
from bridge.config import BridgeSettings
from bridge.errors import JSON, UnsupportedMediaType, error_response, raise_for_reply
from bridge.limits import ClientGone, RateLimiter, read_body, retry_after
from bridge.mapping import request_payload
from bridge.routes import Binding
from bridge.sse import sse_response
from schemas.errors import (
    BadRequest,
    Internal,
    RateLimited,
    ServiceError,
    Unauthenticated,
)
from subjects import (
    HEADER_CONTENT_TYPE,
    HEADER_REQUEST_ID,
    HEADER_TIMEOUT_MS,
    HEADER_USER_ID,
    request_subject,
)
from workers.runtime.client import Client
from workers.runtime.logs import get_logger
from workers.runtime.telemetry import TRACE_HEADERS, inject, tracer, tracing_enabled

_REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}\Z")
_REQUEST_ID_KEY = HEADER_REQUEST_ID.lower()
_TIMEOUT_KEY = HEADER_TIMEOUT_MS.lower()
Headers = dict[str, str]  # request headers: lower-case name -> value


class Forwarder:
    """The endpoint of every rpc route."""

    def __init__(
        self,
        settings: BridgeSettings,
        auth: DevAuth | JwtAuth,
        limiter: RateLimiter,
        client: Callable[[], Awaitable[Client]],
    ) -> None:
        self.settings = settings
        self.auth = auth
        self.limiter = limiter
        self.client = client
        self.log = get_logger(component="bridge")
        # Decided once, like the worker runtime does at start: install an SDK tracer provider
        # before creating the app for the bridge to record spans.
        self.tracing = tracing_enabled()

    async def __call__(
        self, binding: Binding, path: dict[str, str], scope: Scope, receive: Receive, send: Send
    ) -> None:
        started = time.monotonic()
        # One pass over the raw headers; names are lower case in ASGI; the first of a repeated
        # header wins.
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in reversed(scope["headers"])}
        given = headers.get(_REQUEST_ID_KEY)
        request_id = given if given and _REQUEST_ID.match(given) else uuid.uuid4().hex
        if not self.tracing:
            await self._serve(
                binding, path, scope, receive, send, headers, request_id, started, False
            )
            return
        with tracer.start_as_current_span(
            f"{binding.method} {binding.openapi_path}",
            context=_extract(headers),
            kind=SpanKind.SERVER,
            attributes={
                "http.request.method": binding.method,
                "http.route": binding.openapi_path,
                "rpc.system": "aifleet",
                "rpc.service": binding.rpc.method.containing_service.full_name,
                "rpc.method": binding.rpc.method.name,
            },
        ) as span:
            status = await self._serve(
                binding, path, scope, receive, send, headers, request_id, started, True
            )
            span.set_attribute("http.response.status_code", status)
            if status >= 500:
                span.set_status(Status(StatusCode.ERROR))

    async def _serve(
        self,
        binding: Binding,
        path: dict[str, str],
        scope: Scope,
        receive: Receive,
        send: Send,
        headers: Headers,
        request_id: str,
        started: float,
        tracing: bool,
    ) -> int:
        out = {HEADER_REQUEST_ID: request_id}
        try:
            response = await self._respond(
                binding, path, scope, receive, headers, request_id, started, out, tracing
            )
        except ClientGone:
            return 499
        except ServiceError as exc:
            if isinstance(exc, RateLimited):
                out["Retry-After"] = retry_after(exc)
            elif isinstance(exc, Unauthenticated):
                out["WWW-Authenticate"] = 'Bearer realm="aifleet"'
            response = error_response(exc, out)
        except Exception as exc:
            self.log.error("bridge request failed", route=binding.template, exc_info=exc)
            response = error_response(Internal("internal error"), out)
        await response(scope, receive, send)
        return response.status_code

    async def _respond(
        self,
        binding: Binding,
        path: dict[str, str],
        scope: Scope,
        receive: Receive,
        headers: Headers,
        request_id: str,
        started: float,
        out: dict[str, str],
        tracing: bool,
    ) -> Response:
        caller = self.auth.authenticate(headers)
        self.limiter.take(caller.tenant)
        deadline = started + _timeout(headers, self.settings.request_timeout)
        body = b""
        if binding.takes_body:
            _check_content_type(headers)
            body = await read_body(
                headers,
                receive,
                limit=self.settings.max_body_bytes,
                timeout=min(self.settings.body_timeout, deadline - time.monotonic()),
            )
        elif _has_body(headers):
            raise BadRequest(f"{binding.method} {binding.openapi_path} takes no body")
        payload = request_payload(binding, path, scope.get("query_string", b""), body)
        client = await self.client()
        subject = request_subject(caller.tenant, binding.rpc.component, binding.rpc.op)
        remaining = deadline - time.monotonic()
        nats_headers = {
            HEADER_CONTENT_TYPE: JSON,
            HEADER_REQUEST_ID: request_id,
            HEADER_TIMEOUT_MS: str(max(1, int(remaining * 1000))),
        }
        if caller.user:
            nats_headers[HEADER_USER_ID] = caller.user
        if tracing:
            inject(nats_headers)
        else:
            for name in TRACE_HEADERS:
                value = headers.get(name)
                if value:
                    nats_headers[name] = value
        if binding.rpc.streaming:
            stream = client.stream_raw(subject, payload, nats_headers, remaining)
            return await sse_response(stream, out)
        reply = await client.request(subject, payload, nats_headers, remaining)
        raise_for_reply(reply)
        data = reply.data
        if binding.response_body:
            data = _field(data, binding.response_body)
        return JsonReply(data, out)


class JsonReply(Response):
    """A 200 JSON reply sent as two ASGI messages, skipping Response's header assembly (the
    success path of every unary call, so its cost counts)."""

    def __init__(self, body: bytes, headers: dict[str, str]) -> None:
        self.status_code = 200
        self.body = body
        self.extra = headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(self.body))]
        raw += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in self.extra.items()]
        await send({"type": "http.response.start", "status": 200, "headers": raw})
        await send({"type": "http.response.body", "body": self.body})


def _extract(headers: Headers) -> Any:
    from opentelemetry import propagate

    carrier = {name: headers[name] for name in TRACE_HEADERS if name in headers}
    return propagate.extract(carrier) if carrier else None


def _timeout(headers: Headers, default: float) -> float:
    """The bridge's deadline, shortened (never lengthened) by an `Aifleet-Timeout-Ms` header."""
    raw = headers.get(_TIMEOUT_KEY)
    if raw is None:
        return default
    if not raw.isdigit() or int(raw) == 0:
        raise BadRequest(f"{HEADER_TIMEOUT_MS} must be a positive integer")
    return min(default, int(raw) / 1000)


def _check_content_type(headers: Headers) -> None:
    kind = headers.get("content-type")
    if kind and kind.split(";", 1)[0].strip().lower() != JSON:
        raise UnsupportedMediaType(
            "the bridge takes application/json bodies", details={"supported": [JSON]}
        )


def _has_body(headers: Headers) -> bool:
    length = headers.get("content-length")
    return (length is not None and length.strip() not in ("", "0")) or (
        "transfer-encoding" in headers
    )


def _field(data: bytes, name: str) -> bytes:
    value = json.loads(data).get(name)
    return json.dumps(value, separators=(",", ":")).encode()
