"""Compiled templates kept per worker, keyed by what never goes stale.

A key `(tenant, name, version)` always means the same content: versions are immutable and their
numbers never reused. Labels and `latest` are resolved in SQL on every render, so the cache needs
no invalidation.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from google.protobuf import struct_pb2

from workers.prompt.render import CompiledTemplate


@dataclass(frozen=True, slots=True)
class CachedTemplate:
    template: CompiledTemplate
    config: struct_pb2.Struct
    size: int


class TemplateCache:
    """LRU of compiled templates keyed by (tenant, name, version), bounded in entries and in
    template bytes. Entries never go stale (see the module docstring); one event loop uses it,
    so it needs no lock."""

    def __init__(self, max_entries: int, max_bytes: int) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._entries: OrderedDict[tuple[str, str, int], CachedTemplate] = OrderedDict()
        self._bytes = 0
        self.hits = 0
        self.misses = 0

    def get(self, key: tuple[str, str, int]) -> CachedTemplate | None:
        entry = self._entries.get(key)
        if entry is None:
            self.misses += 1
            return None
        self.hits += 1
        self._entries.move_to_end(key)
        return entry

    def put(self, key: tuple[str, str, int], entry: CachedTemplate) -> None:
        if self.max_entries == 0 or entry.size > self.max_bytes:
            return
        old = self._entries.pop(key, None)
        if old is not None:
            self._bytes -= old.size
        self._entries[key] = entry
        self._bytes += entry.size
        while len(self._entries) > self.max_entries or self._bytes > self.max_bytes:
            _, evicted = self._entries.popitem(last=False)
            self._bytes -= evicted.size

    def __len__(self) -> int:
        return len(self._entries)
