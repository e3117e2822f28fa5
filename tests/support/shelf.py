"""A test-only component whose REST routes answer 201, 202 and 204 (`aifleet.v1.http_status`).

Shelves live in memory per tenant, so the bridge tests can show that a create is 201 with its
body, an accepted request 202 with its id, a delete 204 with no body, and that errors keep
their own status.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from google.protobuf.empty_pb2 import Empty

from schemas import registry
from schemas.errors import BadRequest, Conflict, NotFound
from tests.support import testkit_pb2
from tests.support.testkit_pb2 import CreateShelfRequest, Shelf, ShelfRef, SortAccepted
from workers.runtime.component import Component
from workers.runtime.context import Context
from workers.runtime.resources import Resources

registry.register_file(testkit_pb2.DESCRIPTOR)
MAX_NAME = 64


class ShelfService:
    def __init__(self) -> None:
        self.shelves: dict[tuple[str, str], Shelf] = {}

    def _find(self, ctx: Context, name: str) -> Shelf:
        shelf = self.shelves.get((ctx.tenant, name))
        if shelf is None:
            raise NotFound(f"no shelf {name[:MAX_NAME]!r}", details={"field": "name"})
        return shelf

    async def create_shelf(self, ctx: Context, req: CreateShelfRequest) -> Shelf:
        if not 0 < len(req.name) <= MAX_NAME:
            raise BadRequest(f"name must have 1-{MAX_NAME} characters", details={"field": "name"})
        if (ctx.tenant, req.name) in self.shelves:
            raise Conflict(f"shelf {req.name!r} exists", details={"field": "name"})
        shelf = self.shelves[ctx.tenant, req.name] = Shelf(name=req.name, items=req.items)
        return shelf

    async def get_shelf(self, ctx: Context, req: ShelfRef) -> Shelf:
        return self._find(ctx, req.name)

    async def sort_shelf(self, ctx: Context, req: ShelfRef) -> SortAccepted:
        shelf = self._find(ctx, req.name)
        sort_id = uuid.uuid4().hex
        shelf.pending_sorts.append(sort_id)
        return SortAccepted(sort_id=sort_id)

    async def delete_shelf(self, ctx: Context, req: ShelfRef) -> Empty:
        self._find(ctx, req.name)
        del self.shelves[ctx.tenant, req.name]
        return Empty()


@asynccontextmanager
async def start(resources: Resources) -> AsyncIterator[ShelfService]:
    yield ShelfService()


component = Component(
    testkit_pb2.DESCRIPTOR.services_by_name["ShelfService"],
    start=start,
    description="test shelves",
)
