"""Hybrid retrieval: validate, embed the query, run both legs in one statement, fuse with
RRF, apply the threshold, rerank, cut to top_k; results cached by the tenant's corpus version.

Scores (documented in rag.proto): hybrid orders by the RRF score; vector mode by the cosine
similarity; keyword mode by the keyword leg's RRF term 1 / (k + rank). `threshold` always
applies to the cosine similarity of the chunk to the query, the one score with a meaning of its
own; a chunk the keyword leg found has its similarity computed too, so the threshold treats
both legs alike.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import numpy as np
from google.protobuf.message import Message

from schemas.errors import BadRequest
from schemas.v1.rag_pb2 import SearchRequest, SearchResponse, SearchResult
from workers.rag import search_sql
from workers.rag.documents import result_message
from workers.rag.embedder import Embedder, Vectors
from workers.rag.filters import compile_filters
from workers.rag.fusion import reciprocal_rank_fusion
from workers.rag.records import Hit
from workers.rag.rerank import Candidate, MmrReranker
from workers.rag.results_cache import ResultsCache, cache_key
from workers.rag.search_sql import VectorSql
from workers.rag.settings import RagSettings
from workers.runtime import validation as check
from workers.runtime.context import Context

MODES = ("hybrid", "vector", "keyword")
RERANK = ("none", "mmr")
MAX_QUERY_CHARS = 4096
MAX_TOP_K = 100
# Quotes (phrases) and `-word` (exclusion) mean the query uses websearch syntax: taken as
# written. A plain question is OR-ed (see search_sql.py), "or" in it included.
_WEBSEARCH_SYNTAX = ('"', " -")


@dataclass
class Plan:
    """A validated search."""

    text: str
    vector: Vectors | None
    top_k: int
    threshold: float | None
    filters: dict[str, Any]
    mode: str
    rerank: str
    skip_cache: bool
    distinct: bool = False
    # The request as a message for the cache key (defaults filled in).
    key: Message = field(default_factory=SearchRequest)


@dataclass(frozen=True)
class Retrieved:
    results: list[SearchResult]
    embeddings: list[Vectors]  # of each result, when asked for
    query_vector: Vectors | None
    corpus_version: int
    cached: bool
    mode: str


def plan_search(
    settings: RagSettings,
    *,
    text: str,
    vector: Sequence[float],
    top_k: int,
    default_top_k: int,
    threshold: float | None,
    filters: Any,
    mode: str,
    rerank: str,
    skip_cache: bool,
    text_field: str = "query_text",
) -> Plan:
    check.text(text, text_field, max_chars=MAX_QUERY_CHARS)
    query_vector: Vectors | None = None
    if vector:
        if len(vector) != settings.embedding_dimensions:
            raise BadRequest(
                f"query_embedding has {len(vector)} dimensions; the index holds"
                f" {settings.embedding_dimensions}",
                details={
                    "field": "query_embedding",
                    "dimensions": len(vector),
                    "expected": settings.embedding_dimensions,
                },
            )
        array = np.asarray(vector, dtype=np.float32)
        norm = float(np.linalg.norm(array))
        if not math.isfinite(norm) or norm == 0:
            raise BadRequest(
                "query_embedding must be finite and non-zero", details={"field": "query_embedding"}
            )
        query_vector = array / norm
    if not text.strip() and query_vector is None:
        raise BadRequest(f"give {text_field} or query_embedding", details={"field": text_field})
    k = top_k or default_top_k
    check.integer(k, "top_k", minimum=1, maximum=MAX_TOP_K)
    if threshold is not None:
        check.number(threshold, "threshold", minimum=-1.0, maximum=1.0)
    plain_filters = check.struct(filters, "metadata_filters", max_bytes=16 * 1024)
    compile_filters(plain_filters, column="m", first_param=1)  # refuse bad filters now
    chosen = check.choice(mode or "hybrid", "mode", MODES)
    if chosen == "keyword" and not text.strip():
        raise BadRequest("keyword mode needs query_text", details={"field": text_field})
    if not text.strip():
        chosen = "vector"
    return Plan(
        text=text,
        vector=query_vector,
        top_k=k,
        threshold=threshold,
        filters=plain_filters,
        mode=chosen,
        rerank=check.choice(rerank or "none", "rerank", RERANK),
        skip_cache=skip_cache,
    )


class Retriever:
    def __init__(
        self, pool: asyncpg.Pool, settings: RagSettings, embedder: Embedder, cache: ResultsCache
    ) -> None:
        self.pool = pool
        self.settings = settings
        self.embedder = embedder
        self.cache = cache
        self.vector_sql = VectorSql(settings.embedding_dimensions)
        self.mmr = MmrReranker(settings.mmr_lambda)

    def plan(self, req: SearchRequest) -> Plan:
        plan = plan_search(
            self.settings,
            text=req.query_text,
            vector=req.query_embedding,
            top_k=req.top_k,
            default_top_k=10,
            threshold=req.threshold if req.HasField("threshold") else None,
            filters=req.metadata_filters,
            mode=req.mode,
            rerank=req.rerank,
            skip_cache=req.skip_cache,
        )
        plan.distinct = req.distinct_documents
        key = SearchRequest()
        key.CopyFrom(req)
        key.top_k, key.mode, key.rerank, key.skip_cache = plan.top_k, plan.mode, plan.rerank, False
        plan.key = key
        return plan

    async def search(self, ctx: Context, req: SearchRequest) -> SearchResponse:
        plan = self.plan(req)
        use_cache = self.cache.enabled and not plan.skip_cache
        key = ""
        if use_cache:
            version = await corpus_version(self.pool, ctx.tenant)
            key = cache_key("search", version, plan.key, self.embedder.model)
            found = await self.cache.get(ctx, key)
            if found is not None:
                reply = SearchResponse.FromString(found)
                reply.cached = True
                return reply
        got = await self.retrieve(ctx, plan)
        reply = SearchResponse(
            results=got.results, corpus_version=got.corpus_version, mode=got.mode
        )
        if use_cache:
            fresh = cache_key("search", got.corpus_version, plan.key, self.embedder.model)
            await self.cache.put(ctx, fresh, reply.SerializeToString())
        return reply

    async def retrieve(self, ctx: Context, plan: Plan, *, embeddings: bool = False) -> Retrieved:
        vector = plan.vector
        needs_vector = plan.mode != "keyword" or plan.threshold is not None or embeddings
        if vector is None and needs_vector:
            vector = (await self.embedder.embed(ctx, [plan.text]))[0]
        candidates = max(self.settings.candidates, plan.top_k * (3 if plan.distinct else 1))
        hits, version = await search_sql.search(
            self.pool,
            ctx.tenant,
            self.settings.text_search_config,
            vector_sql=self.vector_sql,
            model=self.embedder.model,
            query_vector=vector.tolist() if vector is not None else None,
            query_text=plan.text,
            as_written=any(s in f" {plan.text}" for s in _WEBSEARCH_SYNTAX),
            candidates=candidates,
            filters=plan.filters,
            vector_leg=plan.mode != "keyword",
            keyword_leg=plan.mode != "vector",
            embeddings=embeddings or plan.rerank == "mmr",
            ef_search=max(self.settings.hnsw_ef_search, plan.top_k),
            keyword_candidates=max(self.settings.keyword_candidates, candidates),
        )
        ranked = self._rank(plan, hits)
        if plan.threshold is not None:
            ranked = [
                (h, s)
                for h, s in ranked
                if h.similarity is not None and h.similarity >= plan.threshold
            ]
        if plan.rerank == "mmr" and vector is not None and ranked:
            pool = [
                Candidate(h.text, np.asarray(h.embedding, dtype=np.float32), s) for h, s in ranked
            ]
            order = self.mmr.rerank(plan.text, vector, pool, plan.top_k)
            ranked = [ranked[i] for i in order]
        ranked = ranked[: plan.top_k]
        return Retrieved(
            results=[result_message(h, s) for h, s in ranked],
            embeddings=[np.asarray(h.embedding, dtype=np.float32) for h, _ in ranked]
            if embeddings
            else [],
            query_vector=vector,
            corpus_version=version,
            cached=False,
            mode=plan.mode,
        )

    def _rank(self, plan: Plan, hits: list[Hit]) -> list[tuple[Hit, float]]:
        """Fuse the legs' rankings. With `distinct`, each leg ranks documents (by their best
        chunk in it) and the fused document is shown by its best chunk of either leg."""
        by_key: dict[Any, Hit] = {}
        legs: dict[str, list[Any]] = {}
        for leg, rank_of in (("vector", _vector_rank), ("keyword", _keyword_rank)):
            if (leg == "vector" and plan.mode == "keyword") or (
                leg == "keyword" and plan.mode == "vector"
            ):
                continue
            ranking: list[Any] = []
            for h in sorted((h for h in hits if rank_of(h)), key=rank_of):
                key = h.document_id if plan.distinct else h.id
                if plan.distinct and key in ranking:
                    continue
                ranking.append(key)
                best = by_key.get(key)
                if best is None or rank_of(h) < min(
                    r for r in (_vector_rank(best), _keyword_rank(best)) if r
                ):
                    by_key[key] = h
            legs[leg] = ranking
        weights = {"vector": 1.0, "keyword": self.settings.keyword_weight}
        fused = reciprocal_rank_fusion(legs, k=self.settings.rrf_k, weights=weights)
        if plan.mode == "vector":
            return [(by_key[f.key], by_key[f.key].similarity or 0.0) for f in fused]
        if plan.mode == "keyword":  # the leg's own term, whatever the weight
            k = self.settings.rrf_k
            return [(by_key[f.key], 1.0 / (k + f.ranks["keyword"])) for f in fused]
        return [(by_key[f.key], f.score) for f in fused]


def _vector_rank(hit: Hit) -> int:
    return hit.vector_rank or 0


def _keyword_rank(hit: Hit) -> int:
    return hit.keyword_rank or 0


async def corpus_version(pool: asyncpg.Pool, tenant: str) -> int:
    found = await pool.fetchval("SELECT version FROM rag.corpora WHERE tenant = $1", tenant)
    return int(found or 0)
