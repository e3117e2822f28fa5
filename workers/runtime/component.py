"""A component: its contract (a proto service) and how to start its handlers.

    component = Component(CacheService.DESCRIPTOR, start=start_cache)

`start` is an async context manager receiving the process `Resources` and yielding an object
with one method per rpc (`async def get(self, ctx, req) -> GetResponse`); whatever it opened is
closed when the worker stops. The runtime checks at start that every rpc has its handler.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from google.protobuf.descriptor import ServiceDescriptor

from schemas.registry import Rpc, component_name, rpcs_of
from subjects.events import EventName

if TYPE_CHECKING:
    from workers.runtime.resources import Resources

Starter = Callable[["Resources"], AbstractAsyncContextManager[object]]


@dataclass(frozen=True)
class Component:
    service: ServiceDescriptor
    start: Starter
    # Ops that are also consumed as JetStream jobs from ai.v1.*.job.<component>.<op>.
    jobs: frozenset[str] = field(default_factory=frozenset)
    description: str = ""
    # Events consumed from AI_EVENTS through the durable consumer `<component>-events`:
    # `{GATEWAY_LLM_OPERATION: "<op>"}` (names from subjects/events.py); the op's request
    # message decodes the event body.
    events: Mapping[EventName, str] = field(default_factory=dict, hash=False)
    # Blocking start-up work needing no server (importing a heavy library, loading a model): run
    # in a thread while the process connects, so it overlaps with the servers coming up instead
    # of adding to the start. Must be idempotent; `start` still works if it never ran.
    preload: Callable[[], None] | None = field(default=None, hash=False)

    @property
    def name(self) -> str:
        return component_name(self.service)

    @property
    def rpcs(self) -> dict[str, Rpc]:
        return rpcs_of(self.service)

    def __post_init__(self) -> None:
        unknown = set(self.jobs) - set(self.rpcs)
        if unknown:
            raise ValueError(f"{self.name}: jobs {sorted(unknown)} are not rpcs of its service")
        for event, op in self.events.items():
            if not isinstance(event, EventName):
                raise TypeError(f"{self.name}: consumed event {event!r} is not an EventName")
            rpc = self.rpcs.get(op)
            if rpc is None or rpc.streaming:
                raise ValueError(f"{self.name}: event {event} needs a unary rpc, not {op!r}")


def preload(components: Sequence[Component]) -> asyncio.Future[list[None]]:
    """Start every component's `preload` in a thread now; await the result before `start`."""
    return asyncio.gather(*(asyncio.to_thread(c.preload) for c in components if c.preload))
