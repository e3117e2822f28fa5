"""Per-tenant request, token and spend limits, shared by every gateway replica through Redis.

Windows are fixed: the UTC minute for requests and tokens, the UTC day or month for spend. A
request is admitted when none of the tenant's counters has reached its limit, and admission
counts the request in the same Lua call, so N replicas together admit at most the limit. Tokens
and spend are only known after the call; they are added then, so the request that crosses a
token or spend limit completes and the next one is refused (the usual gateway semantics: a
limit is never checked against a guess of what a reply will cost).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import redis.asyncio

from schemas.errors import RateLimited
from subjects import gateway_usage_prefix
from workers.gateway.config import TenantLimits

_ADMIT = """
local rpm = tonumber(redis.call('GET', KEYS[1]) or '0')
local tpm = tonumber(redis.call('GET', KEYS[2]) or '0')
local spent = tonumber(redis.call('GET', KEYS[3]) or '0')
if tonumber(ARGV[1]) > 0 and rpm >= tonumber(ARGV[1]) then return {'requests_per_minute'} end
if tonumber(ARGV[2]) > 0 and tpm >= tonumber(ARGV[2]) then return {'tokens_per_minute'} end
if tonumber(ARGV[3]) > 0 and spent >= tonumber(ARGV[3]) then return {'budget_usd'} end
redis.call('INCR', KEYS[1])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return {''}
"""

_RECORD = """
if tonumber(ARGV[1]) > 0 then
  redis.call('INCRBY', KEYS[1], ARGV[1])
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
end
if tonumber(ARGV[2]) > 0 then
  redis.call('INCRBYFLOAT', KEYS[2], ARGV[2])
  redis.call('PEXPIRE', KEYS[2], ARGV[4])
end
return 1
"""


@dataclass(frozen=True)
class Usage:
    requests_this_minute: int
    tokens_this_minute: int
    spent_usd: float
    minute_resets_in_s: float
    period_resets_in_s: float


@dataclass(frozen=True)
class _Windows:
    requests: str
    tokens: str
    spend: str
    minute_left_s: float
    period_left_s: float


def _windows(tenant: str, period: str, now: float) -> _Windows:
    prefix = gateway_usage_prefix(tenant)
    minute = int(now // 60)
    moment = datetime.fromtimestamp(now, UTC)
    if period == "day":
        label = moment.strftime("d%Y%m%d")
        end = datetime(moment.year, moment.month, moment.day, tzinfo=UTC) + timedelta(days=1)
    else:
        label = moment.strftime("m%Y%m")
        end = datetime(moment.year + moment.month // 12, moment.month % 12 + 1, 1, tzinfo=UTC)
    return _Windows(
        f"{prefix}requests:{minute}",
        f"{prefix}tokens:{minute}",
        f"{prefix}spend:{label}",
        (minute + 1) * 60 - now,
        end.timestamp() - now,
    )


class TenantQuota:
    def __init__(self, client: redis.asyncio.Redis) -> None:
        self._admit = client.register_script(_ADMIT)
        self._record = client.register_script(_RECORD)
        self._redis = client

    async def admit(self, tenant: str, limits: TenantLimits) -> None:
        """Count one request, or raise 429 naming the exhausted limit and when it resets.
        Requests are counted without limits too, so `rate_limits` always shows the usage."""
        w = _windows(tenant, limits.budget_period, time.time())
        (exhausted,) = await self._admit(
            keys=[w.requests, w.tokens, w.spend],
            args=[
                limits.requests_per_minute,
                limits.tokens_per_minute,
                repr(float(limits.budget_usd)),
                int(w.minute_left_s * 1000) + 5000,
            ],
        )
        name = exhausted.decode() if isinstance(exhausted, bytes) else str(exhausted)
        if name:
            retry = w.period_left_s if name == "budget_usd" else w.minute_left_s
            raise RateLimited(
                f"the tenant's {name.replace('_', ' ')} limit is reached",
                details={"limit": name, "retry_after_s": round(retry, 3)},
            )

    async def record(self, tenant: str, limits: TenantLimits, tokens: int, cost_usd: float) -> None:
        """Add what a finished call used to the tenant's windows (also without limits, so
        `rate_limits` always shows the usage)."""
        if tokens <= 0 and cost_usd <= 0:
            return
        w = _windows(tenant, limits.budget_period, time.time())
        await self._record(
            keys=[w.tokens, w.spend],
            args=[
                max(tokens, 0),
                repr(max(cost_usd, 0.0)),
                int(w.minute_left_s * 1000) + 5000,
                int(w.period_left_s * 1000) + 86_400_000,
            ],
        )

    async def usage(self, tenant: str, limits: TenantLimits) -> Usage:
        w = _windows(tenant, limits.budget_period, time.time())
        requests, tokens, spent = await self._redis.mget([w.requests, w.tokens, w.spend])
        return Usage(
            int(requests or 0),
            int(tokens or 0),
            float(spent or 0),
            round(w.minute_left_s, 3),
            round(w.period_left_s, 3),
        )
