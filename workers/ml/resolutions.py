"""Which version a model reference names (`name@alias`, `name/version`), kept per worker for at
most `AIFLEET_ML_ALIAS_CACHE_SECONDS`.

Resolving the reference in PostgreSQL on every prediction was most of what a one-row predict
added to the model's own time. A resolution is now kept for a short bound (1 s by default) and
forgotten sooner when the model's aliases move or versions are deleted: at once on the replica
that made the change (after its commit), and on every other replica when the
`ml.alias_moved` / `ml.model_deleted` event reaches it (a core subscription to every tenant's
events). An event that does not arrive (its publish left to the outbox's flusher, a reconnect)
leaves a replica on the previous version for at most the bound, never longer. Keys hold the
tenant, so nothing is shared between tenants; only found versions are kept, so a model
deployed after a miss is seen at once. A bound of 0 resolves every call in SQL.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

from google.protobuf.message import DecodeError
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from schemas.errors import BadRequest
from schemas.v1.ml_pb2 import MlAliasMovedEvent, MlModelDeletedEvent
from subjects import listen_subject, tenant_of
from subjects.events import ML_ALIAS_MOVED, ML_MODEL_DELETED
from workers.ml.reference import ModelRef
from workers.ml.store import Serving

Key = tuple[str, str, int | None, str | None]  # tenant, name, version, alias


class Resolutions:
    def __init__(
        self,
        seconds: float,
        *,
        max_entries: int = 4096,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.seconds = seconds
        self.max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[Key, tuple[float, Serving]] = OrderedDict()
        # Bumped by every invalidation: a lookup that began before one is not kept.
        self.epoch = 0

    def get(self, tenant: str, ref: ModelRef) -> Serving | None:
        key = (tenant, ref.name, ref.version, ref.alias)
        entry = self._entries.get(key)
        if entry is None:
            return None
        if self._clock() >= entry[0]:
            del self._entries[key]
            return None
        return entry[1]

    def put(self, tenant: str, ref: ModelRef, found: Serving, epoch: int) -> None:
        """Keep what a lookup begun at `epoch` found, unless something moved meanwhile."""
        if self.seconds <= 0 or epoch != self.epoch:
            return
        key = (tenant, ref.name, ref.version, ref.alias)
        self._entries[key] = (self._clock() + self.seconds, found)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def forget(self, tenant: str, name: str | None = None) -> None:
        """Drop every resolution of a model (None: of every model of the tenant)."""
        self.epoch += 1
        for key in [k for k in self._entries if k[0] == tenant and name in (None, k[1])]:
            del self._entries[key]

    async def follow(self, nc: NATS) -> list[Subscription]:
        """Forget on every replica's change: the registry's events, from every tenant."""
        return [
            await nc.subscribe(listen_subject("evt", "ml", ML_ALIAS_MOVED.event), cb=self._moved),
            await nc.subscribe(
                listen_subject("evt", "ml", ML_MODEL_DELETED.event), cb=self._deleted
            ),
        ]

    async def _moved(self, msg: Msg) -> None:
        self._on_event(msg, MlAliasMovedEvent)

    async def _deleted(self, msg: Msg) -> None:
        self._on_event(msg, MlModelDeletedEvent)

    def _on_event(
        self, msg: Msg, kind: type[MlAliasMovedEvent] | type[MlModelDeletedEvent]
    ) -> None:
        try:
            tenant = tenant_of(msg.subject)
        except BadRequest:  # not a tenant's subject: nothing to forget
            return
        try:
            name: str | None = kind.FromString(msg.data).name or None
        except DecodeError:  # unreadable: forget the whole tenant rather than guess
            name = None
        self.forget(tenant, name)
