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

import asyncio
import json
import math
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from nats.aio.msg import Msg
from opentelemetry.trace import SpanKind, Status, StatusCode
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from bridge.auth import Caller, DevAuth, JwtAuth
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
from schemas.registry import Rpc
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


@dataclass(slots=True)
class Exchange:
    """One HTTP request on its way through the forwarder: what every route needs of it."""

    scope: Scope
    receive: Receive
    headers: Headers
    started: float
    out: dict[str, str]  # response headers: X-Request-ID, Retry-After, ...
    tracing: bool = False
    caller: Caller | None = None
    deadline: float = 0.0


Respond = Callable[[Exchange], Awaitable[Response]]
Render = Callable[[ServiceError, dict[str, str]], Response]


class Forwarder:
    """The endpoint of every rpc route; `serve`, `admit`, `request` and `stream` let other
    endpoints (the OpenAI surface) go through the same auth, limits, deadline and tracing."""

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
        async def respond(ex: Exchange) -> Response:
            return await self._respond(binding, path, ex)

        await self.serve(
            binding.method, binding.openapi_path, binding.rpc, scope, receive, send, respond
        )

    async def serve(
        self,
        method: str,
        route: str,
        rpc: Rpc,
        scope: Scope,
        receive: Receive,
        send: Send,
        respond: Respond,
        render: Render = error_response,
    ) -> None:
        """Answer one request with `respond`; a refusal or failure is answered by `render`."""
        started = time.monotonic()
        # One pass over the raw headers; names are lower case in ASGI; the first of a repeated
        # header wins.
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in reversed(scope["headers"])}
        given = headers.get(_REQUEST_ID_KEY)
        request_id = given if given and _REQUEST_ID.match(given) else uuid.uuid4().hex
        ex = Exchange(scope, receive, headers, started, {HEADER_REQUEST_ID: request_id})
        if not self.tracing:
            await self._serve(ex, send, route, respond, render)
            return
        with tracer.start_as_current_span(
            f"{method} {route}",
            context=_extract(headers),
            kind=SpanKind.SERVER,
            attributes={
                "http.request.method": method,
                "http.route": route,
                "rpc.system": "aifleet",
                "rpc.service": rpc.method.containing_service.full_name,
                "rpc.method": rpc.method.name,
            },
        ) as span:
            ex.tracing = True
            status = await self._serve(ex, send, route, respond, render)
            span.set_attribute("http.response.status_code", status)
            if status >= 500:
                span.set_status(Status(StatusCode.ERROR))

    async def _serve(
        self, ex: Exchange, send: Send, route: str, respond: Respond, render: Render
    ) -> int:
        try:
            response = await respond(ex)
        except ClientGone:
            return 499
        except ServiceError as exc:
            if isinstance(exc, RateLimited):
                ex.out["Retry-After"] = _retry_after(exc)
            elif isinstance(exc, Unauthenticated):
                ex.out["WWW-Authenticate"] = 'Bearer realm="aifleet"'
            response = render(exc, ex.out)
        except Exception as exc:
            self.log.error("bridge request failed", route=route, exc_info=exc)
            response = render(Internal("internal error"), ex.out)
        await response(ex.scope, ex.receive, send)
        return response.status_code

    async def admit(self, ex: Exchange, *, takes_body: bool) -> bytes:
        """Authenticate (401/403), spend a token of the tenant's rate (429), set the deadline,
        then read the body (413/408/415), or refuse one on a route that takes none."""
        caller = ex.caller = self.auth.authenticate(ex.headers)
        try:
            self.limiter.take(caller.tenant)
        except RateLimited:
            # Held before it is answered: a client that ignores Retry-After and retries at once
            # gets one rejection per connection per delay, so its flood cannot take the event
            # loop (and the other tenants' latency) with it. A sleep costs no CPU.
            await asyncio.sleep(self.settings.rate_limit_delay)
            raise
        deadline = ex.deadline = ex.started + _timeout(ex.headers, self.settings.request_timeout)
        if takes_body:
            _check_content_type(ex.headers)
            return await read_body(
                ex.headers,
                ex.receive,
                limit=self.settings.max_body_bytes,
                timeout=min(self.settings.body_timeout, deadline - time.monotonic()),
            )
        if _has_body(ex.headers):
            raise BadRequest(f"{ex.scope['method']} {ex.scope['path'][:200]} takes no body")
        return b""

    async def request(self, ex: Exchange, rpc: Rpc, payload: bytes) -> Msg:
        """The admitted caller's JSON request to `rpc`; an error reply raises its error."""
        client = await self.client()
        subject, headers, remaining = self._outgoing(ex, rpc)
        reply = await client.request(subject, payload, headers, remaining)
        raise_for_reply(reply)
        return reply

    async def stream(self, ex: Exchange, rpc: Rpc, payload: bytes) -> AsyncIterator[Msg]:
        """The replies of a streaming `rpc`, raw (closing the iterator unsubscribes)."""
        client = await self.client()
        subject, headers, remaining = self._outgoing(ex, rpc)
        return client.stream_raw(subject, payload, headers, remaining)

    def _outgoing(self, ex: Exchange, rpc: Rpc) -> tuple[str, dict[str, str], float]:
        """Subject, NATS headers and time left of a request of the admitted caller."""
        caller = ex.caller
        assert caller is not None, "admit() first"
        remaining = ex.deadline - time.monotonic()
        nats_headers = {
            HEADER_CONTENT_TYPE: JSON,
            HEADER_REQUEST_ID: ex.out[HEADER_REQUEST_ID],
            HEADER_TIMEOUT_MS: str(max(1, int(remaining * 1000))),
        }
        if caller.user:
            nats_headers[HEADER_USER_ID] = caller.user
        if ex.tracing:
            inject(nats_headers)
        else:
            for name in TRACE_HEADERS:
                value = ex.headers.get(name)
                if value:
                    nats_headers[name] = value
        return request_subject(caller.tenant, rpc.component, rpc.op), nats_headers, remaining

    async def _respond(self, binding: Binding, path: dict[str, str], ex: Exchange) -> Response:
        body = await self.admit(ex, takes_body=binding.takes_body)
        payload = request_payload(binding, path, ex.scope.get("query_string", b""), body)
        if binding.rpc.streaming:
            return await sse_response(await self.stream(ex, binding.rpc, payload), ex.out)
        data = (await self.request(ex, binding.rpc, payload)).data
        status = binding.status
        if binding.accepted_field and json.loads(data).get(binding.accepted_field):
            status = 202  # the work was queued: the reply names the job and what to poll
        if binding.response_body:
            data = _field(data, binding.response_body)
        return JsonReply(data, ex.out, status)


class JsonReply(Response):
    """A successful JSON reply sent as two ASGI messages, skipping Response's header assembly
    (the success path of every unary call, so its cost counts). 204 carries no body at all."""

    def __init__(self, body: bytes, headers: dict[str, str], status: int = 200) -> None:
        self.status_code = status
        self.body = b"" if status == 204 else body
        self.extra = headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in self.extra.items()]
        if self.status_code != 204:
            length = b"%d" % len(self.body)
            raw += [(b"content-type", b"application/json"), (b"content-length", length)]
        await send({"type": "http.response.start", "status": self.status_code, "headers": raw})
        await send({"type": "http.response.body", "body": self.body})


def _retry_after(error: RateLimited) -> str:
    """Retry-After of a 429: the gateway's `retry_after_s` if given, else the limiter's ms."""
    seconds = error.details.get("retry_after_s")
    if isinstance(seconds, int | float):
        return str(max(1, math.ceil(seconds)))
    return retry_after(error)


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
