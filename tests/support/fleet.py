"""Running workers inside a test: real NATS, real stores, the real runtime."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from workers.runtime.component import Component
from workers.runtime.config import Settings
from workers.runtime.worker import Worker


def worker_settings(nats_url: str, **overrides: Any) -> Settings:
    """Settings for a test worker; unlike production, nothing is read from the environment."""
    values: dict[str, Any] = {"nats_url": nats_url, "drain_timeout": 5.0, **overrides}
    return Settings.model_validate(values)


@asynccontextmanager
async def running_worker(
    components: list[Component], nats_url: str, **overrides: Any
) -> AsyncIterator[Worker]:
    """A started worker, stopped (gracefully) when the block ends."""
    worker = Worker(components, worker_settings(nats_url, **overrides))
    await worker.start()
    try:
        yield worker
    finally:
        await worker.stop()
