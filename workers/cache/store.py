"""Cache storage on the Redis protocol (Redis, Valkey, Dragonfly).

Every key lives under the tenant's prefix (`subjects.cache_key_prefix`), so no operation can
name another tenant's entry; pattern removal walks only that prefix with SCAN + UNLINK (never
KEYS, which blocks the server). Hit and miss counters share the tenant's hash slot, and a read
and its counter update are one round trip (a Lua script).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import redis.asyncio

from subjects import cache_key_prefix, cache_stats_key

_GET = """
local v = redis.call('GET', KEYS[1])
if v then
  redis.call('HINCRBY', KEYS[2], 'hits', 1)
  return {v, redis.call('PTTL', KEYS[1])}
end
redis.call('HINCRBY', KEYS[2], 'misses', 1)
return false
"""


class CacheStore:
    def __init__(self, client: redis.asyncio.Redis, *, scan_count: int = 1000) -> None:
        self._redis = client
        self._get = client.register_script(_GET)
        self._scan_count = scan_count

    async def get(self, tenant: str, key: str) -> tuple[bytes, int] | None:
        """The stored bytes and milliseconds to expiry (0: never), or None on a miss."""
        found = await self._get(keys=[cache_key_prefix(tenant) + key, cache_stats_key(tenant)])
        if not found:
            return None
        data, pttl = found
        return bytes(data), max(int(pttl), 0)

    async def set(
        self, tenant: str, key: str, data: bytes, *, ttl_ms: int, only_if_absent: bool
    ) -> bool:
        stored = await self._redis.set(
            cache_key_prefix(tenant) + key, data, px=ttl_ms or None, nx=only_if_absent
        )
        return bool(stored)

    async def delete(self, tenant: str, key: str) -> bool:
        return bool(await self._redis.unlink(cache_key_prefix(tenant) + key))

    async def invalidate(self, tenant: str, pattern: str) -> int:
        """Remove the tenant's entries whose key matches `pattern` (Redis glob)."""
        removed = 0
        batch: list[bytes] = []
        async for name in self._scan(cache_key_prefix(tenant) + pattern):
            batch.append(name)
            if len(batch) >= self._scan_count:
                removed += await self._redis.unlink(*batch)
                batch.clear()
        if batch:
            removed += await self._redis.unlink(*batch)
        return removed

    async def clear(self, tenant: str) -> int:
        removed = await self.invalidate(tenant, "*")
        await self._redis.unlink(cache_stats_key(tenant))
        return removed

    async def stats(self, tenant: str) -> tuple[int, int, int]:
        """(hits, misses, live keys). Counting keys walks the tenant's prefix with SCAN."""
        hits, misses = await self._redis.hmget(cache_stats_key(tenant), ["hits", "misses"])
        keys = 0
        async for _ in self._scan(cache_key_prefix(tenant) + "*"):
            keys += 1
        return int(hits or 0), int(misses or 0), keys

    async def _scan(self, match: str) -> AsyncIterator[bytes]:
        async for name in self._redis.scan_iter(match=match, count=self._scan_count):
            yield name
