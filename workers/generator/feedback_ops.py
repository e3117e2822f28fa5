"""Ratings and feedback of agents and tools, per version: the resource is read from the agent
component as the caller first (so a user needs read on it, and a missing id is 404)."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import TYPE_CHECKING, Any

from schemas.errors import BadRequest
from schemas.v1.agent_pb2 import GetAgentRequest, ToolGetRequest
from schemas.v1.agent_rpc import AgentService
from schemas.v1.common_pb2 import PageRequest
from schemas.v1.generator_pb2 import (
    AgentFeedbackRequest,
    FeedbackResponse,
    RateAgentRequest,
    RateToolRequest,
    Rating,
    RatingResponse,
    ToolFeedbackRequest,
    VersionRatings,
)
from workers.generator.store import RatingRow
from workers.runtime import paging
from workers.runtime import validation as check
from workers.runtime.context import Context

if TYPE_CHECKING:
    from workers.generator.store import GeneratorStore

MAX_COMMENT_BYTES = 4096
MAX_METADATA_BYTES = 16 * 1024
FLAT = 0.05  # averages closer than this are "flat"


class FeedbackHandlers:
    store: GeneratorStore

    async def rate_agent(self, ctx: Context, req: RateAgentRequest) -> RatingResponse:
        return await self._rate(ctx, "agent", req.agent_id, req)

    async def rate_tool(self, ctx: Context, req: RateToolRequest) -> RatingResponse:
        return await self._rate(ctx, "tool", req.tool_id, req)

    async def agent_feedback(self, ctx: Context, req: AgentFeedbackRequest) -> FeedbackResponse:
        return await self._feedback(ctx, "agent", req.agent_id, req.page)

    async def tool_feedback(self, ctx: Context, req: ToolFeedbackRequest) -> FeedbackResponse:
        return await self._feedback(ctx, "tool", req.tool_id, req.page)

    async def _rate(
        self, ctx: Context, kind: str, resource_id: str, req: RateAgentRequest | RateToolRequest
    ) -> RatingResponse:
        check.identifier(resource_id, f"{kind}_id")
        check.integer(req.rating, "rating", minimum=1, maximum=5)
        comment = check.text(req.feedback, "feedback", max_bytes=MAX_COMMENT_BYTES)
        metadata = check.struct(req.metadata, "metadata", max_bytes=MAX_METADATA_BYTES)
        version = await _version(ctx, kind, resource_id)
        row = await self.store.add_rating(
            ctx.tenant,
            RatingRow(
                rating_id="r-" + uuid.uuid4().hex,
                resource_type=kind,
                resource_id=resource_id,
                version=version,
                rating=req.rating,
                feedback=comment,
                metadata=metadata,
                user_id=ctx.user_id or "",
                created_at=dt.datetime.now(dt.UTC),
            ),
        )
        return RatingResponse(rating=_rating(row))

    async def _feedback(
        self, ctx: Context, kind: str, resource_id: str, page_request: PageRequest
    ) -> FeedbackResponse:
        check.identifier(resource_id, f"{kind}_id")
        page = paging.start(ctx.tenant, page_request, {"op": "feedback", kind: resource_id})
        after = None
        if page.after is not None:
            if len(page.after) != 2 or not isinstance(page.after[0], dt.datetime):
                raise BadRequest("page_token is invalid", details={"field": paging.FIELD})
            after = (page.after[0], str(page.after[1]))
        await _version(ctx, kind, resource_id)
        stats = await self.store.stats(ctx.tenant, kind, resource_id)
        rows = await self.store.comments(
            ctx.tenant, kind, resource_id, after=after, limit=page.size + 1
        )
        kept, token = paging.finish(ctx.tenant, page, rows, lambda r: (r.created_at, r.rating_id))
        return FeedbackResponse(
            total=stats.total,
            average=stats.average,
            distribution=stats.distribution,
            versions=[VersionRatings(version=v, total=n, average=a) for v, n, a in stats.versions],
            trend=trend([a for _, _, a in stats.versions]),
            recent=[_rating(r) for r in kept],
            page=token,
        )


def trend(averages: list[float]) -> str:
    """The latest version's average against the one before it."""
    if len(averages) < 2:
        return ""
    change = averages[-1] - averages[-2]
    return "flat" if abs(change) < FLAT else ("up" if change > 0 else "down")


async def _version(ctx: Context, kind: str, resource_id: str) -> int:
    """The resource's current version, read as the caller (403 without read, 404 missing)."""
    if kind == "agent":
        agent = await ctx.call(AgentService.GetAgent, GetAgentRequest(agent_id=resource_id))
        return agent.agent.version
    tool = await ctx.call(AgentService.ToolGet, ToolGetRequest(tool_id=resource_id))
    return tool.tool.version


def _rating(row: RatingRow) -> Rating:
    rating = Rating(
        rating_id=row.rating_id,
        resource_type=row.resource_type,
        resource_id=row.resource_id,
        version=row.version,
        rating=row.rating,
        feedback=row.feedback,
        user_id=row.user_id,
    )
    metadata: dict[str, Any] = row.metadata
    rating.metadata.update(metadata)
    rating.created_at.FromDatetime(row.created_at)
    return rating
