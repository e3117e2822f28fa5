"""Memory operations: archival memory (list, search, insert, delete, forget a user) and core
memory blocks, per (tenant, agent, user)."""

from __future__ import annotations

from typing import Any

from schemas.errors import BadRequest, NotFound, PayloadTooLarge
from schemas.v1.agent_pb2 import (
    MemoryBlock,
    MemoryBlocksRequest,
    MemoryBlocksResponse,
    MemoryDeleteRequest,
    MemoryDeleteResponse,
    MemoryDeleteUserRequest,
    MemoryDeleteUserResponse,
    MemoryInsertRequest,
    MemoryInsertResponse,
    MemoryListRequest,
    MemoryListResponse,
    MemorySearchRequest,
    MemorySearchResponse,
    MemorySetBlockRequest,
)
from workers.agent import access, convert, memory_tools
from workers.agent.base import Handlers
from workers.agent.definitions import check_id
from workers.agent.runner import definition_of
from workers.runtime import paging as pages
from workers.runtime import validation as check
from workers.runtime.context import Context

MAX_MEMORY_CHARS = 20_000
MAX_METADATA_BYTES = 16 * 1024


class MemoryHandlers(Handlers):
    async def memory_list(self, ctx: Context, req: MemoryListRequest) -> MemoryListResponse:
        user = self.subject_user(ctx, req.user_id)
        row = await self.agent_row(ctx, req.agent_id, "execute")
        page = pages.start(
            ctx.tenant, req.page, {"op": "memory", "agent": row["agent_id"], "user": user}
        )
        rows = await self.memory.list(ctx.tenant, row["agent_id"], user, page.after, page.size + 1)
        kept, token = pages.finish(
            ctx.tenant, page, rows, lambda r: (r["created_at"], r["memory_id"])
        )
        return MemoryListResponse(memories=[convert.memory(r) for r in kept], page=token)

    async def memory_search(self, ctx: Context, req: MemorySearchRequest) -> MemorySearchResponse:
        user = self.subject_user(ctx, req.user_id)
        query = self._memory_text(req.query, "query")
        if req.top_k > 50:
            raise BadRequest("top_k must be 1 to 50", details={"field": "top_k"})
        row = await self.agent_row(ctx, req.agent_id, "execute")
        vector = await memory_tools.embed(
            ctx, self.settings.embedding_model, row["agent_id"], query
        )
        rows = await self.memory.search(ctx.tenant, row["agent_id"], user, vector, req.top_k or 5)
        return MemorySearchResponse(memories=[convert.memory(r, float(r["score"])) for r in rows])

    async def memory_insert(self, ctx: Context, req: MemoryInsertRequest) -> MemoryInsertResponse:
        user = self.subject_user(ctx, req.user_id)
        text = self._memory_text(req.text, "text")
        metadata = check.struct(req.metadata, "metadata", max_bytes=MAX_METADATA_BYTES)
        row = await self.agent_row(ctx, req.agent_id, "execute")
        model = self.settings.embedding_model
        vector = await memory_tools.embed(ctx, model, row["agent_id"], text)
        stored, created = await self.memory.insert(
            ctx.tenant, row["agent_id"], user, text, metadata, vector
        )
        return MemoryInsertResponse(memory=convert.memory(stored), created=created)

    async def memory_delete(self, ctx: Context, req: MemoryDeleteRequest) -> MemoryDeleteResponse:
        user = self.subject_user(ctx, req.user_id)
        check_id(req.memory_id, "memory_id")
        row = await self.agent_row(ctx, req.agent_id, "execute")
        if not await self.memory.delete(ctx.tenant, row["agent_id"], user, req.memory_id):
            raise NotFound("memory not found", details={"field": "memory_id"})
        return MemoryDeleteResponse(deleted=True)

    async def memory_delete_user(
        self, ctx: Context, req: MemoryDeleteUserRequest
    ) -> MemoryDeleteUserResponse:
        check_id(req.user_id, "user_id")
        # A user may forget themselves; forgetting another user needs admin on the agent.
        needed = "execute" if req.user_id == access.user_of(ctx) else "admin"
        row = await self.agent_row(ctx, req.agent_id, needed)
        memories, blocks, sessions = await self.memory.forget_user(
            ctx.tenant, row["agent_id"], req.user_id
        )
        return MemoryDeleteUserResponse(memories=memories, blocks=blocks, sessions=sessions)

    async def memory_blocks(self, ctx: Context, req: MemoryBlocksRequest) -> MemoryBlocksResponse:
        user = self.subject_user(ctx, req.user_id)
        row = await self.agent_row(ctx, req.agent_id, "execute")
        return await self._blocks(ctx, row, user)

    async def memory_set_block(
        self, ctx: Context, req: MemorySetBlockRequest
    ) -> MemoryBlocksResponse:
        user = self.subject_user(ctx, req.user_id)
        if "\x00" in req.value:
            raise BadRequest("value contains a NUL character", details={"field": "value"})
        row = await self.agent_row(ctx, req.agent_id, "execute")
        blocks = definition_of(row).get("memory", {}).get("core_blocks", [])
        block = next((b for b in blocks if b["label"] == req.label), None)
        if block is None:
            raise NotFound(
                "the agent has no core memory block with this label", details={"field": "label"}
            )
        limit = memory_tools.block_limit(block)
        if len(req.value) > limit:
            raise PayloadTooLarge(
                f"value is longer than the block's {limit} characters",
                details={"field": "value", "limit": limit},
            )
        await self.memory.set_block(ctx.tenant, row["agent_id"], user, req.label, req.value)
        return await self._blocks(ctx, row, user)

    async def _blocks(self, ctx: Context, row: Any, user: str) -> MemoryBlocksResponse:
        stored = await self.memory.blocks(ctx.tenant, row["agent_id"], user)
        blocks = definition_of(row).get("memory", {}).get("core_blocks", [])
        return MemoryBlocksResponse(
            blocks=[
                MemoryBlock(
                    label=b["label"],
                    description=b.get("description", ""),
                    value=stored.get(b["label"], b.get("value", "")),
                    limit_chars=memory_tools.block_limit(b),
                )
                for b in blocks
            ]
        )

    def _memory_text(self, value: str, field: str) -> str:
        if not value.strip():
            raise BadRequest(f"{field} is required", details={"field": field})
        if "\x00" in value:
            raise BadRequest(f"{field} contains a NUL character", details={"field": field})
        if len(value) > MAX_MEMORY_CHARS:
            raise PayloadTooLarge(
                f"{field} is longer than {MAX_MEMORY_CHARS} characters",
                details={"field": field, "limit": MAX_MEMORY_CHARS},
            )
        return value
