"""Test doubles for handlers, shipped with the kit (as `structlog.testing` is with structlog).

`context()` builds a real `Context` whose calls to other components are answered from a script
and whose events and jobs are recorded instead of published, so a handler's logic can be tested
without servers:

    ctx, seen = testing.context(
        tenant="acme",
        replies={
            GatewayService.Embed: EmbedResponse(...),               # this reply,
            CacheService.Get: lambda req: GetResponse(found=False), # a function of the request,
            RagService.Search: Unavailable("down"),                 # or an error to raise
        },
    )
    reply = await service.query(ctx, QueryRequest(query="..."))
    assert seen.calls[0].method is GatewayService.Embed
    assert [e.event for e in seen.events] == [RAG_QUERY_ANSWERED]

A call of a method with no scripted reply raises `Unavailable`, as a call to a component that is
not running would. Integration tests against real servers remain the proof that it all works.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from google.protobuf.message import Message

from schemas.contracts import Method, Req, Res, Streaming, Unary
from schemas.errors import Unavailable
from subjects import HEADER_REQUEST_ID, HEADER_USER_ID
from subjects.events import EventName
from workers.runtime.client import Client
from workers.runtime.context import Context
from workers.runtime.events import EventPublisher

# A scripted reply: the message itself, an error to raise, or a function of the request
# (sync or async). Streaming methods take a list of messages or a function returning one.
Reply = Message | BaseException | Iterable[Message] | Callable[[Any], Any]


@dataclass(frozen=True, slots=True)
class Call:
    method: Method[Any, Any]
    request: Message
    headers: dict[str, str]


@dataclass(frozen=True, slots=True)
class Emitted:
    tenant: str
    event: EventName
    message: Message
    msg_id: str | None


@dataclass(frozen=True, slots=True)
class Enqueued:
    tenant: str
    method: Method[Any, Any]
    request: Message
    msg_id: str


@dataclass
class Seen:
    """What a handler did through its context, in order."""

    calls: list[Call] = field(default_factory=list)
    events: list[Emitted] = field(default_factory=list)
    jobs: list[Enqueued] = field(default_factory=list)


class ScriptedClient(Client):
    """Answers calls from a script of replies per method, recording each call."""

    def __init__(self, replies: Mapping[Method[Any, Any], Reply], seen: Seen) -> None:
        self._replies = dict(replies)
        self._seen = seen

    def script(self, method: Method[Any, Any], reply: Reply) -> None:
        """Set (or replace) the reply of one method."""
        self._replies[method] = reply

    async def call_rpc(
        self,
        tenant: str,
        method: Unary[Req, Res],
        request: Req,
        *,
        headers: dict[str, str] | None = None,
        timeout: float | None = None,
    ) -> Res:
        reply = await self._answer(method, request, headers)
        if not isinstance(reply, method.response):
            raise TypeError(f"scripted reply of {method} is a {type(reply).__name__}")
        return reply

    async def stream_rpc(
        self,
        tenant: str,
        method: Streaming[Req, Res],
        request: Req,
        *,
        headers: dict[str, str] | None = None,
        timeout: float | None = None,
    ) -> AsyncIterator[Res]:
        replies = await self._answer(method, request, headers)
        items = [replies] if isinstance(replies, Message) else replies
        for item in items:
            if isinstance(item, BaseException):
                raise item
            if not isinstance(item, method.response):
                raise TypeError(f"scripted reply of {method} is a {type(item).__name__}")
            yield item

    async def _answer(
        self, method: Method[Any, Any], request: Message, headers: dict[str, str] | None
    ) -> Any:
        self._seen.calls.append(Call(method, method.check(request), dict(headers or {})))
        if method not in self._replies:
            raise Unavailable(f"no scripted reply for {method}")
        reply = self._replies[method]
        if isinstance(reply, BaseException):
            raise reply
        if callable(reply) and not isinstance(reply, Message):
            reply = reply(request)
            if inspect.isawaitable(reply):
                reply = await reply
            if isinstance(reply, BaseException):
                raise reply
        return reply


class RecordingEvents(EventPublisher):
    """Records events and jobs instead of publishing them."""

    def __init__(self, seen: Seen) -> None:
        self._seen = seen
        self._sequence = 0

    async def publish(
        self,
        tenant: str,
        event: EventName,
        type_name: str,
        payload: bytes,
        headers: dict[str, str] | None = None,
        *,
        msg_id: str | None = None,
    ) -> int:
        raise TypeError("RecordingEvents records messages: publish them with emit")

    async def emit(
        self,
        tenant: str,
        event: EventName,
        message: Message,
        headers: dict[str, str] | None = None,
        *,
        msg_id: str | None = None,
    ) -> int:
        self._seen.events.append(Emitted(tenant, event, message, msg_id))
        return self._next()

    async def enqueue(
        self,
        tenant: str,
        method: Method[Any, Any],
        request: Message,
        headers: dict[str, str] | None = None,
        *,
        msg_id: str,
    ) -> int:
        self._seen.jobs.append(Enqueued(tenant, method, method.check(request), msg_id))
        return self._next()

    def _next(self) -> int:
        self._sequence += 1
        return self._sequence


def context(
    *,
    tenant: str = "acme",
    component: str = "test",
    op: str = "op",
    user: str | None = None,
    request_id: str | None = None,
    timeout: float = 30.0,
    replies: Mapping[Method[Any, Any], Reply] | None = None,
    headers: Mapping[str, str] | None = None,
    message_id: str | None = None,
    attempt: int = 1,
) -> tuple[Context, Seen]:
    """A `Context` for calling a handler directly, and the record of what it did."""
    seen = Seen()
    all_headers = dict(headers or {})
    if user is not None:
        all_headers[HEADER_USER_ID] = user
    if request_id is not None:
        all_headers[HEADER_REQUEST_ID] = request_id
    ctx = Context(
        tenant=tenant,
        component=component,
        op=op,
        headers=all_headers,
        deadline=time.monotonic() + timeout,
        client=ScriptedClient(replies or {}, seen),
        events=RecordingEvents(seen),
        message_id=message_id,
        attempt=attempt,
    )
    return ctx, seen


def scripted(ctx: Context) -> ScriptedClient:
    """The scripted client behind a context from `context()`, to change replies mid-test."""
    client = ctx._client  # the double's own context: reaching in is the point
    if not isinstance(client, ScriptedClient):
        raise TypeError("not a context made by workers.runtime.testing.context()")
    return client
