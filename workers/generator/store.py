"""The generator's SQL: schema `generator` (drafts and ratings), every statement filtered by
tenant."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

import asyncpg

from schemas.v1.generator_pb2 import DraftApprovedEvent
from subjects.events import GENERATOR_DRAFT_APPROVED
from workers.runtime.context import Context
from workers.runtime.outbox import Outbox, StagedEvent

SCHEMA = "generator"


@dataclass(frozen=True)
class DraftRow:
    draft_id: str
    kind: str
    prompt: str
    llm_model: str
    additional_config: dict[str, Any]
    spec: dict[str, Any]
    status: str
    version: int
    resource_id: str
    feedback: list[str]
    cached: bool
    model_calls: int
    created_by: str
    approved_by: str
    created_at: dt.datetime
    updated_at: dt.datetime


@dataclass(frozen=True)
class RatingRow:
    rating_id: str
    resource_type: str
    resource_id: str
    version: int
    rating: int
    feedback: str
    metadata: dict[str, Any]
    user_id: str
    created_at: dt.datetime


@dataclass(frozen=True)
class RatingStats:
    total: int
    average: float
    distribution: list[int]  # counts of 1..5
    versions: list[tuple[int, int, float]]  # (version, total, average), oldest first


def _draft(row: asyncpg.Record) -> DraftRow:
    values = dict(row)
    del values["tenant"]
    for key in ("additional_config", "spec", "feedback"):
        values[key] = json.loads(values[key])
    return DraftRow(**values)


def _rating(row: asyncpg.Record) -> RatingRow:
    values = dict(row)
    del values["tenant"]
    values["metadata"] = json.loads(values["metadata"])
    return RatingRow(**values)


@dataclass(frozen=True)
class NewDraft:
    draft_id: str
    kind: str
    prompt: str
    llm_model: str
    additional_config: dict[str, Any]
    spec: dict[str, Any]
    resource_id: str
    cached: bool
    model_calls: int
    created_by: str


class GeneratorStore:
    def __init__(self, pool: asyncpg.Pool, outbox: Outbox) -> None:
        self.pool = pool
        self.outbox = outbox

    async def insert_draft(self, tenant: str, new: NewDraft) -> DraftRow:
        row = await self.pool.fetchrow(
            "INSERT INTO generator.drafts (tenant, draft_id, kind, prompt, llm_model,"
            " additional_config, spec, resource_id, cached, model_calls, created_by)"
            " VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7::jsonb, $8, $9, $10, $11)"
            " RETURNING *",
            tenant,
            new.draft_id,
            new.kind,
            new.prompt,
            new.llm_model,
            json.dumps(new.additional_config),
            json.dumps(new.spec),
            new.resource_id,
            new.cached,
            new.model_calls,
            new.created_by,
        )
        return _draft(row)

    async def draft(self, tenant: str, draft_id: str, user: str) -> DraftRow | None:
        """The draft, when the tenant has it and (for a user) the user made it."""
        row = await self.pool.fetchrow(
            "SELECT * FROM generator.drafts WHERE tenant = $1 AND draft_id = $2"
            " AND ($3 = '' OR created_by = $3)",
            tenant,
            draft_id,
            user,
        )
        return _draft(row) if row else None

    async def drafts(
        self,
        tenant: str,
        user: str,
        kind: str,
        status: str,
        *,
        after: tuple[dt.datetime, str] | None,
        limit: int,
    ) -> list[DraftRow]:
        """Newest first from after the keyset position (created_at, draft_id)."""
        rows = await self.pool.fetch(
            "SELECT * FROM generator.drafts WHERE tenant = $1"
            " AND ($2 = '' OR created_by = $2) AND ($3 = '' OR kind = $3)"
            " AND ($4 = '' OR status = $4)"
            " AND ($5::timestamptz IS NULL OR (created_at, draft_id) < ($5, $6))"
            " ORDER BY created_at DESC, draft_id DESC LIMIT $7",
            tenant,
            user,
            kind,
            status,
            after[0] if after else None,
            after[1] if after else "",
            limit,
        )
        return [_draft(r) for r in rows]

    async def approve(self, ctx: Context, draft_id: str) -> tuple[DraftRow, StagedEvent | None]:
        """Mark approved, with the draft_approved event staged in the same transaction the
        first time only (a repeated approval keeps the first approver and stages nothing)."""
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                "UPDATE generator.drafts SET status = 'approved', updated_at = now(),"
                " approved_by = $3 WHERE tenant = $1 AND draft_id = $2 AND status = 'pending'"
                " RETURNING *",
                ctx.tenant,
                draft_id,
                ctx.user_id or "",
            )
            if row is None:
                again = await conn.fetchrow(
                    "SELECT * FROM generator.drafts WHERE tenant = $1 AND draft_id = $2",
                    ctx.tenant,
                    draft_id,
                )
                return _draft(again), None
            draft = _draft(row)
            event = DraftApprovedEvent(
                draft_id=draft.draft_id,
                kind=draft.kind,
                resource_id=draft.resource_id,
                version=draft.version,
                approved_by=draft.approved_by,
            )
            staged = await self.outbox.stage(
                conn,
                ctx,
                GENERATOR_DRAFT_APPROVED,
                event,
                msg_id=f"generator-approved:{ctx.tenant}:{draft_id}",
            )
        return draft, staged

    async def regenerated(
        self,
        tenant: str,
        draft_id: str,
        *,
        version: int,
        spec: dict[str, Any],
        feedback: list[str],
        model_calls: int,
    ) -> DraftRow | None:
        """The draft with its new spec, if it is still pending at `version` (else None)."""
        row = await self.pool.fetchrow(
            "UPDATE generator.drafts SET spec = $4::jsonb, feedback = $5::jsonb,"
            " model_calls = $6, cached = false, version = version + 1, updated_at = now()"
            " WHERE tenant = $1 AND draft_id = $2 AND version = $3 AND status = 'pending'"
            " RETURNING *",
            tenant,
            draft_id,
            version,
            json.dumps(spec),
            json.dumps(feedback),
            model_calls,
        )
        return _draft(row) if row else None

    async def add_rating(self, tenant: str, rating: RatingRow) -> RatingRow:
        row = await self.pool.fetchrow(
            "INSERT INTO generator.ratings (tenant, rating_id, resource_type, resource_id,"
            " version, rating, feedback, metadata, user_id)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb, $9)"
            " RETURNING *",
            tenant,
            rating.rating_id,
            rating.resource_type,
            rating.resource_id,
            rating.version,
            rating.rating,
            rating.feedback,
            json.dumps(rating.metadata),
            rating.user_id,
        )
        return _rating(row)

    async def stats(self, tenant: str, kind: str, resource_id: str) -> RatingStats:
        rows = await self.pool.fetch(
            "SELECT version, rating, count(*) AS n FROM generator.ratings"
            " WHERE tenant = $1 AND resource_type = $2 AND resource_id = $3"
            " GROUP BY version, rating ORDER BY version",
            tenant,
            kind,
            resource_id,
        )
        distribution = [0] * 5
        by_version: dict[int, list[int]] = {}
        for r in rows:
            distribution[r["rating"] - 1] += r["n"]
            sums = by_version.setdefault(r["version"], [0, 0])
            sums[0] += r["n"]
            sums[1] += r["n"] * r["rating"]
        total = sum(distribution)
        points = sum(n * (i + 1) for i, n in enumerate(distribution))
        return RatingStats(
            total=total,
            average=points / total if total else 0.0,
            distribution=distribution,
            versions=[(v, n, s / n) for v, (n, s) in sorted(by_version.items())],
        )

    async def comments(
        self,
        tenant: str,
        kind: str,
        resource_id: str,
        *,
        after: tuple[dt.datetime, str] | None,
        limit: int,
    ) -> list[RatingRow]:
        """Ratings with a comment, newest first from after (created_at, rating_id)."""
        rows = await self.pool.fetch(
            "SELECT * FROM generator.ratings"
            " WHERE tenant = $1 AND resource_type = $2 AND resource_id = $3 AND feedback <> ''"
            " AND ($4::timestamptz IS NULL OR (created_at, rating_id) < ($4, $5))"
            " ORDER BY created_at DESC, rating_id DESC LIMIT $6",
            tenant,
            kind,
            resource_id,
            after[0] if after else None,
            after[1] if after else "",
            limit,
        )
        return [_rating(r) for r in rows]
