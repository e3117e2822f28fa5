"""What every benchmark process agrees on: subjects, payloads, headers."""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any, TypeVar

import msgpack

from subjects import listen_subject, request_subject

T = TypeVar("T")

TENANT = "bench"
ECHO_SUBJECT = request_subject(TENANT, "echo", "echo")
# Raw nats-py listens on the same wildcard the runtime derives for the echo component.
ECHO_LISTEN = listen_subject("req", "echo", "echo")
ECHO_QUEUE = "echo"
CACHE_GET_SUBJECT = request_subject(TENANT, "cache", "get")
CACHE_SET_SUBJECT = request_subject(TENANT, "cache", "set")
CACHE_KEY = "bench-key"

MSGPACK_HEADERS = {"Content-Type": "application/msgpack"}

# An EchoRequest in the msgpack mapping (proto3 JSON names, native values): ~200 bytes.
ECHO_FIELDS: dict[str, Any] = {
    "text": "The quick brown fox jumps over the lazy dog; " * 2,
    "blob": bytes(range(32)),
    "number": 1_234_567_890_123,
    "items": ["alpha", "beta", "gamma", "delta"],
    "counts": {"tokens": 128, "chunks": 4},
}
ECHO_BODY: bytes = msgpack.packb(ECHO_FIELDS, use_bin_type=True)

# The cached value a cache.get returns (raw bytes, ~200 B like the echo payload).
CACHE_VALUE = bytes(range(256))[:200]
CACHE_SET_BODY: bytes = msgpack.packb({"key": CACHE_KEY, "raw": CACHE_VALUE}, use_bin_type=True)
CACHE_GET_BODY: bytes = msgpack.packb({"key": CACHE_KEY}, use_bin_type=True)


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Every benchmark process runs on uvloop, like the `aifleet` CLI does."""
    import uvloop

    result: T = uvloop.run(coro)
    return result
