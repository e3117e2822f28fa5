"""Typed rpc handles of schemas/v1/cache.proto, written by `make proto`: do not edit."""

from __future__ import annotations

from typing import Final

from schemas.contracts import Unary
from schemas.v1 import cache_pb2


class CacheService:
    """The `cache` component (aifleet.v1.CacheService)."""

    Get: Final = Unary(
        "cache",
        "get",
        cache_pb2.GetRequest,
        cache_pb2.GetResponse,
    )
    Set: Final = Unary(
        "cache",
        "set",
        cache_pb2.SetRequest,
        cache_pb2.SetResponse,
    )
    Delete: Final = Unary(
        "cache",
        "delete",
        cache_pb2.DeleteRequest,
        cache_pb2.DeleteResponse,
    )
    Invalidate: Final = Unary(
        "cache",
        "invalidate",
        cache_pb2.InvalidateRequest,
        cache_pb2.InvalidateResponse,
    )
    Clear: Final = Unary(
        "cache",
        "clear",
        cache_pb2.ClearRequest,
        cache_pb2.ClearResponse,
    )
    Stats: Final = Unary(
        "cache",
        "stats",
        cache_pb2.StatsRequest,
        cache_pb2.StatsResponse,
    )
