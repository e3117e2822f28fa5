"""A component: its contract (a proto service) and how to start its handlers.

    component = Component(CacheService.DESCRIPTOR, start=start_cache)

`start` is an async context manager receiving the process `Resources` and yielding an object
with one method per rpc (`async def get(self, ctx, req) -> GetResponse`); whatever it opened is
closed when the worker stops. The runtime checks at start that every rpc has its handler.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from google.protobuf.descriptor import ServiceDescriptor

from schemas.registry import Rpc, component_name, rpcs_of
from subjects import is_valid_name

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
    # `{"<publisher>.<event>": "<op>"}`; the op's request message decodes the event body.
    events: Mapping[str, str] = field(default_factory=dict, hash=False)

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
        for key, op in self.events.items():
            source, _, event = key.partition(".")
            if not (is_valid_name(source) and is_valid_name(event)):
                raise ValueError(f"{self.name}: consumed event {key!r} is not <component>.<event>")
            rpc = self.rpcs.get(op)
            if rpc is None or rpc.streaming:
                raise ValueError(f"{self.name}: event {key} needs a unary rpc, not {op!r}")
