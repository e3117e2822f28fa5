"""Loaded models, per worker: an LRU bounded by the artifacts' unpacked size, keyed by
(tenant, name, version).

A key always means the same artifact (versions are immutable and their numbers never reused),
so an entry never goes stale; which version an alias names is asked of PostgreSQL on every
request, so a moved alias takes effect on every replica at once. Concurrent requests for a model
not loaded yet share one load.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workers.ml import artifacts
from workers.ml.signature import Signature

Key = tuple[str, str, int]


# A one-row predict cheaper than this (CPU seconds) runs on the event loop. In a thread it
# would hold the GIL about as long anyway (scikit-learn's per-call checks are Python; the
# interpreter switches threads every 5 ms), and the hand-off costs two more wake-ups, each
# waiting for a core on a busy machine. Slower models (a forest's trees) keep their thread.
INLINE_SECONDS = 0.005


@dataclass
class PredictTime:
    """A model's recent CPU time per one-row predict, exponentially weighted; None until the
    first one is measured (in a thread)."""

    seconds: float | None = None

    def add(self, seconds: float) -> None:
        self.seconds = seconds if self.seconds is None else 0.8 * self.seconds + 0.2 * seconds

    @property
    def inline(self) -> bool:
        return self.seconds is not None and self.seconds < INLINE_SECONDS


@dataclass(frozen=True)
class LoadedModel:
    pipeline: Any
    signature: Signature
    size: int  # the artifact's unpacked bytes, the cache's measure of it
    one_row: PredictTime = field(default_factory=PredictTime, compare=False)

    @property
    def classifier(self) -> bool:
        return hasattr(self.pipeline, "predict_proba") and bool(self.signature.classes)


class ModelCache:
    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[Key, LoadedModel] = OrderedDict()
        self._loading: dict[Key, asyncio.Future[LoadedModel]] = {}
        self._bytes = 0
        self.hits = 0
        self.loads = 0

    @property
    def bytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: Key) -> bool:
        return key in self._entries

    async def get(self, key: Key, load: Callable[[], Awaitable[LoadedModel]]) -> LoadedModel:
        entry = self._entries.get(key)
        if entry is not None:
            self.hits += 1
            self._entries.move_to_end(key)
            return entry
        pending = self._loading.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[LoadedModel] = asyncio.get_running_loop().create_future()
        self._loading[key] = future
        try:
            model = await load()
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: waiters get it, nobody else must
            raise
        finally:
            self._loading.pop(key, None)
        self.loads += 1
        future.set_result(model)
        self._put(key, model)
        return model

    def drop(self, tenant: str, name: str, version: int | None = None) -> None:
        """Forget a deleted version (or every version of a deleted model)."""
        for key in [k for k in self._entries if k[:2] == (tenant, name)]:
            if version is None or key[2] == version:
                self._bytes -= self._entries.pop(key).size

    def _put(self, key: Key, model: LoadedModel) -> None:
        if model.size > self.max_bytes:
            return
        self._entries[key] = model
        self._bytes += model.size
        while self._bytes > self.max_bytes:
            _, evicted = self._entries.popitem(last=False)
            self._bytes -= evicted.size


def load_file(path: Path, sha256: str, signature: Signature, max_bytes: int) -> LoadedModel:
    """Check and load a downloaded artifact (blocking: run it in a thread)."""
    pipeline = artifacts.load(path, sha256=sha256, max_bytes=max_bytes)
    return LoadedModel(pipeline, signature, artifacts.unpacked_bytes(path))


def scratch_dir() -> tempfile.TemporaryDirectory[str]:
    return tempfile.TemporaryDirectory(prefix="aifleet-ml-")
