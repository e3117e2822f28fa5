"""The response cache: exact hits through the cache component, semantic hits through pgvector.

Exact: the key is a hash of the model and every parameter that shapes a reply, stored in the
tenant's own cache (the cache component scopes by the subject's tenant). Semantic (opt-in per
request): the last user message is embedded with the local MiniLM model and compared with
earlier ones of the same tenant *and* the same context (model, parameters, earlier messages);
the tenant is a condition of the similarity query, never a filter applied afterwards.

The cache is an optimisation: when it is unavailable (or, for the semantic cache, no PostgreSQL is
configured) the call goes to the model, logged.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import numpy as np

from schemas.errors import ServiceError
from schemas.v1.cache_pb2 import GetRequest, SetRequest
from schemas.v1.cache_rpc import CacheService
from schemas.v1.gateway_pb2 import CacheControl, CacheHit, GenerateResponse
from subjects import GATEWAY_CACHE_KEY_PREFIX
from workers.gateway.chat import cache_identity, semantic_parts
from workers.gateway.config import GatewaySettings
from workers.gateway.embedding import MiniLM
from workers.gateway.store import SemanticCache
from workers.runtime.config import ConfigurationError
from workers.runtime.context import Context
from workers.runtime.failures import dependency_errors

SemanticStore = Callable[[], Awaitable[SemanticCache]]
T = TypeVar("T")


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class ResponseCache:
    def __init__(
        self, settings: GatewaySettings, semantic: SemanticStore, embedder: Callable[[], MiniLM]
    ) -> None:
        self._settings = settings
        self._semantic = semantic
        self._embedder = embedder

    def enabled(self, control: CacheControl) -> bool:
        return not control.skip and (
            self._settings.cache_ttl_seconds > 0 or control.ttl_seconds > 0 or control.semantic
        )

    async def find(
        self, ctx: Context, alias: str, params: dict[str, Any], control: CacheControl
    ) -> GenerateResponse | None:
        """A stored reply for this request (exact first, then by meaning if asked), marked as
        cached; None on a miss or when the cache cannot be reached."""
        if not self.enabled(control):
            return None
        key = GATEWAY_CACHE_KEY_PREFIX + _digest(cache_identity(alias, params))
        found = await self._quietly(ctx, ctx.call(CacheService.Get, GetRequest(key=key)))
        if found is not None and found.found and found.raw:
            return _as_hit(found.raw, CacheHit(kind="exact", similarity=1.0))
        if not control.semantic:
            return None
        parts = semantic_parts(alias, params)
        if parts is None:
            return None
        threshold = control.similarity_threshold or self._settings.semantic_threshold
        near = await self._quietly(ctx, self._nearest(ctx.tenant, parts, threshold))
        if near is None:
            return None
        data, similarity = near
        return _as_hit(data, CacheHit(kind="semantic", similarity=similarity))

    async def keep(
        self,
        ctx: Context,
        alias: str,
        params: dict[str, Any],
        control: CacheControl,
        reply: GenerateResponse,
    ) -> None:
        """Store a fresh reply for later identical (and, if asked, similar) requests."""
        if not self.enabled(control) or reply.finish_reason not in ("stop", "tool_calls"):
            return
        data = reply.SerializeToString()
        ttl = control.ttl_seconds or self._settings.cache_ttl_seconds
        if ttl:
            key = GATEWAY_CACHE_KEY_PREFIX + _digest(cache_identity(alias, params))
            request = SetRequest(key=key, raw=data, ttl_seconds=ttl)
            await self._quietly(ctx, ctx.call(CacheService.Set, request))
        parts = semantic_parts(alias, params) if control.semantic else None
        if parts is not None:
            semantic_ttl = control.ttl_seconds or self._settings.semantic_ttl_seconds
            await self._quietly(ctx, self._remember(ctx.tenant, parts, data, semantic_ttl))

    async def _nearest(
        self, tenant: str, parts: tuple[str, str], threshold: float
    ) -> tuple[bytes, float] | None:
        scope, text = parts
        store, vector = await asyncio.gather(self._semantic(), self._vector(text))
        found: tuple[bytes, float] | None = await store.lookup(
            tenant, _digest(scope), vector, threshold
        )
        return found

    async def _remember(self, tenant: str, parts: tuple[str, str], data: bytes, ttl: int) -> None:
        scope, text = parts
        store, vector = await asyncio.gather(self._semantic(), self._vector(text))
        await store.store(tenant, _digest(scope), vector, data, ttl)

    async def _vector(self, text: str) -> np.ndarray:
        vectors = await asyncio.to_thread(lambda: self._embedder().embed([text]))
        return np.asarray(vectors[0], dtype=np.float32)

    @staticmethod
    async def _quietly(ctx: Context, work: Awaitable[T]) -> T | None:
        try:
            return await work
        except (ServiceError, ConfigurationError, *dependency_errors()) as exc:  # type: ignore[misc]
            ctx.log.warning("response cache unavailable", error=repr(exc))
            return None


def _as_hit(data: bytes, hit: CacheHit) -> GenerateResponse:
    reply = GenerateResponse.FromString(data)
    hit.saved_cost_usd = reply.cost_usd
    reply.cache.CopyFrom(hit)
    reply.cost_usd = 0.0
    return reply
