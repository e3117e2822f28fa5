"""The handler test kit: scripted replies of other components, recorded events and jobs."""

from __future__ import annotations

import pytest

from schemas.errors import Unavailable
from schemas.v1.cache_pb2 import (
    CacheInvalidatedEvent,
    DeleteRequest,
    GetRequest,
    GetResponse,
    SetRequest,
    SetResponse,
)
from schemas.v1.cache_rpc import CacheService
from schemas.v1.gateway_pb2 import GenerateChunk, GenerateRequest
from schemas.v1.gateway_rpc import GatewayService
from subjects import HEADER_TIMEOUT_MS, HEADER_USER_ID
from subjects.events import CACHE_INVALIDATED, GATEWAY_LLM_OPERATION
from workers.runtime import testing


async def test_calls_are_answered_by_message_function_or_error() -> None:
    """A scripted reply may be the message, a (sync or async) function of the request, or an
    error, which the call raises as a real call would."""

    async def later(req: SetRequest) -> SetResponse:
        return SetResponse(stored=req.key == "k")

    ctx, seen = testing.context(
        replies={
            CacheService.Get: lambda req: GetResponse(found=req.key == "hit"),
            CacheService.Set: later,
            CacheService.Delete: Unavailable("cache down"),
        }
    )
    assert (await ctx.call(CacheService.Get, GetRequest(key="hit"))).found
    assert not (await ctx.call(CacheService.Get, GetRequest(key="miss"))).found
    assert (await ctx.call(CacheService.Set, SetRequest(key="k"))).stored
    with pytest.raises(Unavailable, match="cache down"):
        await ctx.call(CacheService.Delete, DeleteRequest(key="k"))
    assert [c.method for c in seen.calls] == [
        CacheService.Get,
        CacheService.Get,
        CacheService.Set,
        CacheService.Delete,
    ]


async def test_a_method_without_a_reply_is_unavailable() -> None:
    """As a call to a component that is not running: 503."""
    ctx, _ = testing.context()
    with pytest.raises(Unavailable):
        await ctx.call(CacheService.Get, GetRequest(key="k"))


async def test_calls_carry_the_callers_user_and_deadline() -> None:
    """What a real call forwards is recorded: the user and the remaining time."""
    ctx, seen = testing.context(user="u1", timeout=5.0, replies={CacheService.Get: GetResponse()})
    await ctx.call(CacheService.Get, GetRequest(key="k"))
    headers = seen.calls[0].headers
    assert headers[HEADER_USER_ID] == "u1"
    assert 0 < int(headers[HEADER_TIMEOUT_MS]) <= 5000


async def test_streaming_calls_yield_the_scripted_items() -> None:
    chunks = [GenerateChunk(delta="a"), GenerateChunk(delta="b")]
    ctx, _ = testing.context(replies={GatewayService.GenerateStream: chunks})
    got = [c.delta async for c in ctx.stream(GatewayService.GenerateStream, GenerateRequest())]
    assert got == ["a", "b"]


async def test_a_reply_of_the_wrong_type_is_a_test_error() -> None:
    """A script that answers with another message fails loudly, not silently."""
    ctx, _ = testing.context(replies={CacheService.Get: SetResponse()})
    with pytest.raises(TypeError):
        await ctx.call(CacheService.Get, GetRequest(key="k"))


async def test_events_and_jobs_are_recorded_not_published() -> None:
    ctx, seen = testing.context(tenant="t1", component="cache")
    event = CacheInvalidatedEvent(reason="clear")
    await ctx.emit(CACHE_INVALIDATED, event, msg_id="m1")
    await ctx.enqueue(CacheService.Set, SetRequest(key="k"), msg_id="j1")
    assert [(e.tenant, e.event, e.message, e.msg_id) for e in seen.events] == [
        ("t1", CACHE_INVALIDATED, event, "m1")
    ]
    assert [(j.method, j.request, j.msg_id) for j in seen.jobs] == [
        (CacheService.Set, SetRequest(key="k"), "j1")
    ]


async def test_a_component_cannot_emit_another_components_event() -> None:
    ctx, _ = testing.context(component="cache")
    with pytest.raises(ValueError, match=r"cannot publish gateway\.llm_operation"):
        await ctx.emit(GATEWAY_LLM_OPERATION, CacheInvalidatedEvent())


async def test_replies_can_change_mid_test() -> None:
    ctx, _ = testing.context(replies={CacheService.Get: GetResponse(found=False)})
    testing.scripted(ctx).script(CacheService.Get, GetResponse(found=True))
    assert (await ctx.call(CacheService.Get, GetRequest(key="k"))).found
