"""Typed handles of rpcs, so a call between components names its operation by the contract.

`make proto` writes `schemas/v1/<name>_rpc.py` beside each `<name>_pb2.py`: one class per proto
service whose attributes are its rpcs, e.g. `CacheService.Get: Unary[GetRequest, GetResponse]`.

    reply = await ctx.call(CacheService.Get, GetRequest(key="k"))   # reply: GetResponse

The response type comes from the contract, and a request of another type is a type error for
mypy and a `TypeError` at run time: no component or op name strings in handlers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

from google.protobuf.message import Message

Req = TypeVar("Req", bound=Message)
Res = TypeVar("Res", bound=Message)


@dataclass(frozen=True, slots=True)
class Method(Generic[Req, Res]):
    """One rpc of one component: where it is served and what it takes and returns."""

    component: str
    op: str
    request: type[Req]
    response: type[Res]

    def check(self, request: Message) -> Req:
        """The request, if it is this rpc's request message; `TypeError` otherwise."""
        if type(request) is not self.request:
            raise TypeError(
                f"{self.component}.{self.op} takes {self.request.DESCRIPTOR.full_name}, "
                f"not {type(request).__name__}"
            )
        return request

    def __str__(self) -> str:
        return f"{self.component}.{self.op}"


@dataclass(frozen=True, slots=True)
class Unary(Method[Req, Res]):
    """An rpc with one reply."""


@dataclass(frozen=True, slots=True)
class Streaming(Method[Req, Res]):
    """A server-streaming rpc: several replies, then the end of the stream."""
