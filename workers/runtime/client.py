"""Calling components over NATS from Python: the CLI, tests, and handlers (through `ctx.call`).

Any language does the same with a plain NATS request; this only adds the codec, the error
mapping (an error reply raises the same `ServiceError` the worker raised) and streaming.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import TypeVar

from google.protobuf.message import Message
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout

from schemas.codec import PROTOBUF_CODEC, Codec
from schemas.contracts import Req, Res, Streaming, Unary
from schemas.errors import BadRequest, DeadlineExceeded, ServiceError, Unavailable
from schemas.v1.common_pb2 import Error
from subjects import (
    HEADER_CONTENT_TYPE,
    HEADER_ERROR,
    HEADER_ERROR_CODE,
    HEADER_STREAM_END,
    HEADER_TIMEOUT_MS,
    request_subject,
)

M = TypeVar("M", bound=Message)


def raise_for_error(msg: Msg, codec: Codec) -> None:
    """Raise the `ServiceError` an error reply carries; do nothing for a success reply."""
    headers = msg.headers or {}
    code = headers.get(HEADER_ERROR_CODE)
    if code is None:
        return
    try:
        err = codec.decode(Error, msg.data)
    except BadRequest:
        err = Error(code="", message=headers.get(HEADER_ERROR, ""))
    raise ServiceError.from_proto(err, int(code) if code.isdigit() else 500)


class Client:
    def __init__(self, nc: NATS, *, codec: Codec = PROTOBUF_CODEC, timeout: float = 10.0) -> None:
        self.nc = nc
        self.codec = codec
        self.timeout = timeout

    def _headers(self, headers: dict[str, str] | None, timeout: float) -> dict[str, str]:
        out = dict(headers or {})
        out[HEADER_CONTENT_TYPE] = self.codec.content_type
        out.setdefault(HEADER_TIMEOUT_MS, str(int(timeout * 1000)))
        return out

    async def call(
        self,
        tenant: str,
        component: str,
        op: str,
        request: Message,
        response: type[M],
        *,
        headers: dict[str, str] | None = None,
        timeout: float | None = None,
    ) -> M:
        """One request-reply; raises `ServiceError` (503 no responders, 504 timeout, or the
        worker's own error)."""
        timeout = self.timeout if timeout is None else timeout
        msg = await self.request(
            request_subject(tenant, component, op),
            self.codec.encode(request),
            self._headers(headers, timeout),
            timeout,
        )
        raise_for_error(msg, self.codec)
        return self.codec.decode(response, msg.data)

    async def call_rpc(
        self,
        tenant: str,
        method: Unary[Req, Res],
        request: Req,
        *,
        headers: dict[str, str] | None = None,
        timeout: float | None = None,
    ) -> Res:
        """`call` named by the contract: `await client.call_rpc(t, CacheService.Get, req)`."""
        return await self.call(
            tenant,
            method.component,
            method.op,
            method.check(request),
            method.response,
            headers=headers,
            timeout=timeout,
        )

    def stream_rpc(
        self,
        tenant: str,
        method: Streaming[Req, Res],
        request: Req,
        *,
        headers: dict[str, str] | None = None,
        timeout: float | None = None,
    ) -> AsyncIterator[Res]:
        """`stream` named by the contract."""
        return self.stream(
            tenant,
            method.component,
            method.op,
            method.check(request),
            method.response,
            headers=headers,
            timeout=timeout,
        )

    async def request(
        self, subject: str, body: bytes, headers: dict[str, str], timeout: float
    ) -> Msg:
        """A raw request with the fleet's mapping of NATS failures to errors."""
        if timeout <= 0:
            raise DeadlineExceeded("deadline already passed")
        try:
            return await self.nc.request(subject, body, timeout=timeout, headers=headers)
        except NoRespondersError as exc:
            raise Unavailable("no worker is serving this operation") from exc
        except (TimeoutError, NatsTimeout) as exc:
            raise DeadlineExceeded(f"no reply within {timeout:g}s") from exc

    async def stream(
        self,
        tenant: str,
        component: str,
        op: str,
        request: Message,
        response: type[M],
        *,
        headers: dict[str, str] | None = None,
        timeout: float | None = None,
    ) -> AsyncIterator[M]:
        """A streaming call: yields each reply until the end-of-stream message."""
        timeout = self.timeout if timeout is None else timeout
        async for msg in self.stream_raw(
            request_subject(tenant, component, op),
            self.codec.encode(request),
            self._headers(headers, timeout),
            timeout,
        ):
            raise_for_error(msg, self.codec)
            if msg.data or not (msg.headers or {}).get(HEADER_STREAM_END):
                yield self.codec.decode(response, msg.data)

    async def stream_raw(
        self, subject: str, body: bytes, headers: dict[str, str], timeout: float
    ) -> AsyncIterator[Msg]:
        """Raw stream messages, the last one included; unsubscribes when the caller stops."""
        inbox = self.nc.new_inbox()
        sub = await self.nc.subscribe(inbox)
        deadline = time.monotonic() + timeout
        try:
            await self.nc.publish(subject, body, reply=inbox, headers=headers)
            first = True
            while True:
                remaining = deadline - time.monotonic()
                try:
                    msg = await sub.next_msg(timeout=max(remaining, 0.001))
                except NatsTimeout as exc:
                    raise DeadlineExceeded(f"stream incomplete after {timeout:g}s") from exc
                if first and msg.headers and msg.headers.get("Status") == "503":
                    raise Unavailable("no worker is serving this operation")
                first = False
                yield msg
                if (msg.headers or {}).get(HEADER_STREAM_END) or (msg.headers or {}).get(
                    HEADER_ERROR_CODE
                ):
                    return
        finally:
            await sub.unsubscribe()
