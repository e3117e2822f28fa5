"""Search and query results cached through the cache component (`cache.get` / `cache.set`).

The key is `rag:<kind>:<corpus version>:<sha256 of the request>` in the tenant's own keyspace
(the cache component scopes every key by the tenant of the subject). Any write to the tenant's
documents increments the corpus version in the write's transaction, so every earlier entry is
unreachable at once; they expire by TTL. A cache that cannot be reached is a miss (logged),
never an error of the search.
"""

from __future__ import annotations

import hashlib

from google.protobuf.message import Message

from schemas.errors import ServiceError
from schemas.v1.cache_pb2 import GetRequest, SetRequest
from schemas.v1.cache_rpc import CacheService
from workers.runtime.context import Context

PREFIX = "rag:"


def cache_key(kind: str, corpus_version: int, request: Message, *extra: str) -> str:
    digest = hashlib.sha256(request.SerializeToString(deterministic=True))
    for part in extra:
        digest.update(b"\x00" + part.encode())
    return f"{PREFIX}{kind}:{corpus_version}:{digest.hexdigest()}"


class ResultsCache:
    def __init__(self, ttl_seconds: float) -> None:
        self.ttl_seconds = ttl_seconds

    @property
    def enabled(self) -> bool:
        return self.ttl_seconds > 0

    async def get(self, ctx: Context, key: str) -> bytes | None:
        if not self.enabled:
            return None
        try:
            reply = await ctx.call(CacheService.Get, GetRequest(key=key))
        except ServiceError as exc:
            ctx.log.warning("results cache read failed", error=exc.code)
            return None
        return reply.raw if reply.found and reply.WhichOneof("payload") == "raw" else None

    async def put(self, ctx: Context, key: str, value: bytes) -> None:
        if not self.enabled:
            return
        try:
            await ctx.call(
                CacheService.Set, SetRequest(key=key, raw=value, ttl_seconds=self.ttl_seconds)
            )
        except ServiceError as exc:
            ctx.log.warning("results cache write failed", error=exc.code)
