"""NATS micro discovery (`$SRV.PING|INFO|STATS`) for a component's endpoints.

Spoken directly rather than through `nats.micro.Service` because that one serves one request at
a time per endpoint; the wire shapes are nats.micro's own dataclasses, so `nats micro ls/info/
stats` and any micro client read what they expect, with stats counted around the real work.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Awaitable, Callable

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.micro.service import (
    EndpointInfo,
    EndpointStats,
    ServiceInfo,
    ServicePing,
    ServiceStats,
    ServiceVerb,
    control_subject,
)

from workers.runtime.endpoints import Endpoint


class MicroService:
    def __init__(
        self,
        nc: NATS,
        *,
        name: str,
        version: str,
        description: str,
        endpoints: list[Endpoint],
        metadata: dict[str, str],
    ) -> None:
        self.nc = nc
        self.name = name
        self.version = version
        self.description = description
        self.endpoints = endpoints
        self.metadata = metadata
        self.id = nc._nuid.next().decode()
        self.started = dt.datetime.now(dt.UTC).replace(tzinfo=None)
        self._subs: list[Subscription] = []

    async def start(self) -> None:
        answers: dict[ServiceVerb, Callable[[], dict[str, object]]] = {
            ServiceVerb.PING: self.ping,
            ServiceVerb.INFO: self.info,
            ServiceVerb.STATS: self.stats,
        }
        for verb, answer in answers.items():
            for subject in (
                control_subject(verb),
                control_subject(verb, self.name),
                control_subject(verb, self.name, self.id),
            ):
                self._subs.append(await self.nc.subscribe(subject, cb=self._responder(answer)))

    def _responder(
        self, answer: Callable[[], dict[str, object]]
    ) -> Callable[[Msg], Awaitable[None]]:
        async def respond(msg: Msg) -> None:
            if msg.reply:
                await self.nc.publish(msg.reply, json.dumps(answer()).encode())

        return respond

    async def stop(self) -> None:
        for sub in self._subs:
            await sub.unsubscribe()
        self._subs.clear()

    def ping(self) -> dict[str, object]:
        return ServicePing(
            id=self.id, name=self.name, version=self.version, metadata=self.metadata
        ).to_dict()

    def info(self) -> dict[str, object]:
        return ServiceInfo(
            id=self.id,
            name=self.name,
            version=self.version,
            description=self.description,
            metadata=self.metadata,
            endpoints=[
                EndpointInfo(
                    name=ep.rpc.op,
                    subject=ep.subject,
                    queue_group=ep.queue_group,
                    metadata={
                        "template": ep.template,
                        "request": ep.rpc.request.DESCRIPTOR.full_name,
                        "response": ep.rpc.response.DESCRIPTOR.full_name,
                        "streaming": str(ep.rpc.streaming).lower(),
                    },
                )
                for ep in self.endpoints
            ],
        ).to_dict()

    def stats(self) -> dict[str, object]:
        return ServiceStats(
            id=self.id,
            name=self.name,
            version=self.version,
            started=self.started,
            metadata=self.metadata,
            endpoints=[
                EndpointStats(
                    name=ep.rpc.op,
                    subject=ep.subject,
                    queue_group=ep.queue_group,
                    num_requests=ep.num_requests,
                    num_errors=ep.num_errors,
                    processing_time=ep.processing_time,
                    average_processing_time=ep.processing_time // ep.num_requests
                    if ep.num_requests
                    else 0,
                    last_error=ep.last_error,
                )
                for ep in self.endpoints
            ],
        ).to_dict()
