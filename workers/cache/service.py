"""Cache handlers: validate, store, answer, and tell the fleet what was invalidated."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from schemas.errors import BadRequest, PayloadTooLarge
from schemas.v1 import cache_pb2
from schemas.v1.cache_pb2 import (
    CacheInvalidatedEvent,
    ClearRequest,
    ClearResponse,
    DeleteRequest,
    DeleteResponse,
    GetRequest,
    GetResponse,
    InvalidateRequest,
    InvalidateResponse,
    SetRequest,
    SetResponse,
    StatsRequest,
    StatsResponse,
)
from subjects.events import CACHE_INVALIDATED
from workers.cache.store import CacheStore
from workers.runtime import validation as check
from workers.runtime.component import Component
from workers.runtime.config import load_settings
from workers.runtime.context import Context
from workers.runtime.resources import Resources

# Stored values carry their kind in the first byte: a JSON value (as a serialized
# google.protobuf.Value) or raw bytes.
_VALUE, _RAW = b"v", b"r"
_MAX_KEY_BYTES = 512


class CacheSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="AIFLEET_CACHE_", extra="ignore", frozen=True)

    max_value_bytes: int = Field(1024 * 1024, ge=1, description="largest stored value")
    default_ttl_seconds: float = Field(0.0, ge=0, description="TTL when a set names none; 0 = none")
    max_ttl_seconds: float = Field(365 * 86_400.0, gt=0)


def _check_key(key: str, field: str = "key") -> str:
    """A key: printable, at most 512 bytes (a key, not a body: too long is a 400)."""
    check.text(key, field, required=True, multiline=False)
    if len(key.encode()) > _MAX_KEY_BYTES:
        raise BadRequest(f"{field} is longer than {_MAX_KEY_BYTES} bytes", details={"field": field})
    return key


class CacheService:
    def __init__(self, store: CacheStore, settings: CacheSettings) -> None:
        self.store = store
        self.settings = settings

    async def get(self, ctx: Context, req: GetRequest) -> GetResponse:
        found = await self.store.get(ctx.tenant, _check_key(req.key))
        if found is None:
            return GetResponse(found=False)
        data, ttl_ms = found
        reply = GetResponse(found=True, ttl_ms=ttl_ms)
        if data[:1] == _RAW:
            reply.raw = data[1:]
        else:
            reply.value.ParseFromString(data[1:])
        return reply

    async def set(self, ctx: Context, req: SetRequest) -> SetResponse:
        key = _check_key(req.key)
        which = req.WhichOneof("payload")
        if which is None:
            raise BadRequest("one of value or raw is required", details={"field": "value"})
        data = _RAW + req.raw if which == "raw" else _VALUE + req.value.SerializeToString()
        if len(data) - 1 > self.settings.max_value_bytes:
            raise PayloadTooLarge(
                "value is larger than the cache accepts",
                details={"limit_bytes": self.settings.max_value_bytes},
            )
        stored = await self.store.set(
            ctx.tenant,
            key,
            data,
            ttl_ms=self._ttl_ms(req.ttl_seconds),
            only_if_absent=req.only_if_absent,
        )
        return SetResponse(stored=stored)

    async def delete(self, ctx: Context, req: DeleteRequest) -> DeleteResponse:
        deleted = await self.store.delete(ctx.tenant, _check_key(req.key))
        if deleted:
            await ctx.emit(
                CACHE_INVALIDATED,
                CacheInvalidatedEvent(reason="delete", pattern=req.key, removed=1),
            )
        return DeleteResponse(deleted=deleted)

    async def invalidate(self, ctx: Context, req: InvalidateRequest) -> InvalidateResponse:
        removed = await self.store.invalidate(ctx.tenant, _check_key(req.pattern, "pattern"))
        if removed:
            await ctx.emit(
                CACHE_INVALIDATED,
                CacheInvalidatedEvent(reason="invalidate", pattern=req.pattern, removed=removed),
            )
        return InvalidateResponse(removed=removed)

    async def clear(self, ctx: Context, req: ClearRequest) -> ClearResponse:
        removed = await self.store.clear(ctx.tenant)
        await ctx.emit(
            CACHE_INVALIDATED, CacheInvalidatedEvent(reason="clear", pattern="*", removed=removed)
        )
        return ClearResponse(removed=removed)

    async def stats(self, ctx: Context, req: StatsRequest) -> StatsResponse:
        hits, misses, keys = await self.store.stats(ctx.tenant)
        return StatsResponse(hits=hits, misses=misses, keys=keys)

    def _ttl_ms(self, ttl_seconds: float) -> int:
        check.number(ttl_seconds, "ttl_seconds", minimum=0, maximum=self.settings.max_ttl_seconds)
        ttl = ttl_seconds or self.settings.default_ttl_seconds
        return max(1, math.ceil(ttl * 1000)) if ttl else 0


@asynccontextmanager
async def start(resources: Resources) -> AsyncIterator[CacheService]:
    yield CacheService(CacheStore(resources.redis()), load_settings(CacheSettings))


component = Component(
    cache_pb2.DESCRIPTOR.services_by_name["CacheService"],
    start=start,
    description="Tenant-scoped cache on the Redis protocol",
)
