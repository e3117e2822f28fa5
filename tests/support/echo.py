"""A test-only component: echoes requests, streams, sleeps or crashes on demand.

Used by runtime, fault and benchmark runs to exercise the worker kit without a real component's
dependencies.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from schemas import registry
from tests.support import testkit_pb2
from tests.support.testkit_pb2 import EchoReply, EchoRequest
from workers.runtime.component import Component
from workers.runtime.context import Context
from workers.runtime.resources import Resources

registry.register_file(testkit_pb2.DESCRIPTOR)


class EchoService:
    async def echo(self, ctx: Context, req: EchoRequest) -> EchoReply:
        if req.sleep_seconds:
            await asyncio.sleep(req.sleep_seconds)
        if req.crash:
            raise RuntimeError("secret internal detail: /etc/passwd")
        reply = EchoReply(
            text=req.text,
            blob=req.blob,
            number=req.number,
            items=req.items,
            tenant=ctx.tenant,
            counts=req.counts,
        )
        if req.HasField("any"):
            reply.any.CopyFrom(req.any)
        if req.HasField("nested"):
            reply.nested.CopyFrom(req.nested)
        return reply

    async def echo_stream(self, ctx: Context, req: EchoRequest) -> AsyncIterator[EchoReply]:
        for item in req.items:
            if req.sleep_seconds:
                await asyncio.sleep(req.sleep_seconds)
            yield EchoReply(text=item, tenant=ctx.tenant)
        if req.crash:
            raise RuntimeError("secret internal detail mid-stream")


@asynccontextmanager
async def start(resources: Resources) -> AsyncIterator[EchoService]:
    yield EchoService()


component = Component(
    testkit_pb2.DESCRIPTOR.services_by_name["EchoService"],
    start=start,
    description="test echo",
)
