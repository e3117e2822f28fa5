"""Streaming rpcs as Server-Sent Events.

The first reply decides the HTTP status: an error (no responders, deadline, the worker's own)
is a plain error response. After it, each reply is a `message` event (`id:` its sequence
number, `data:` its JSON), a failure is an `error` event carrying the `Error`, and a final
`end` event always closes the stream (another surface, such as the OpenAI one, writes the
replies as events of its own). A client that goes away cancels the response, and closing the
reply iterator unsubscribes from the inbox.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Callable

from nats.aio.msg import Msg
from starlette.responses import Response, StreamingResponse

from bridge.errors import error_body, raise_for_reply
from schemas.errors import ServiceError
from subjects import HEADER_ERROR_CODE, HEADER_STREAM_END, HEADER_STREAM_SEQ

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


Events = Callable[[AsyncGenerator[Msg, None]], AsyncIterator[bytes]]


async def sse_response(
    stream: AsyncIterator[Msg], out: dict[str, str], events: Events | None = None
) -> Response:
    """The first reply decides the HTTP status; every later one is an event of a 200 stream,
    written by `events` (the bridge's own `message`/`error`/`end` events by default)."""
    try:
        first = await anext(stream)
        raise_for_reply(first)
    except BaseException:
        await stream.aclose()  # type: ignore[attr-defined]
        raise
    return StreamingResponse(
        (events or _events)(replies(first, stream)),
        media_type="text/event-stream",
        headers={**out, **SSE_HEADERS},
    )


async def replies(first: Msg, stream: AsyncIterator[Msg]) -> AsyncGenerator[Msg, None]:
    """`first` and the later replies that carry data, to the end of the stream; a failure
    (the worker's error reply, the deadline) is raised as its `ServiceError`. Closing this
    generator closes the stream, which unsubscribes from the inbox."""
    msg: Msg | None = first
    try:
        while msg is not None:
            headers = msg.headers or {}
            if headers.get(HEADER_ERROR_CODE):
                raise_for_reply(msg)
            if msg.data:
                yield msg
            if headers.get(HEADER_STREAM_END):
                break
            try:
                msg = await anext(stream)
            except StopAsyncIteration:
                msg = None
    finally:
        with contextlib.suppress(Exception):
            await stream.aclose()  # type: ignore[attr-defined]


async def _events(messages: AsyncGenerator[Msg, None]) -> AsyncIterator[bytes]:
    async with contextlib.aclosing(messages):
        try:
            async for msg in messages:
                yield _event("message", msg.data, (msg.headers or {}).get(HEADER_STREAM_SEQ))
        except ServiceError as exc:
            yield _event("error", error_body(exc))
    yield _event("end", b"{}")


def _event(name: str, data: bytes, seq: str | None = None) -> bytes:
    lines = [b"event: " + name.encode()]
    if seq:
        lines.append(b"id: " + seq.encode())
    lines += [b"data: " + line for line in data.splitlines() or [b""]]
    return b"\n".join(lines) + b"\n\n"
