"""Recent prediction inputs, kept for drift: buffered per version in the worker and written
every `drift_flush_seconds` (never on the request's path), each version keeping its newest
`drift_window` rows in PostgreSQL. A buffer holds at most a window's rows per version, so a
database that is down costs memory that is bounded, then the oldest inputs."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Sequence
from typing import Any

from workers.ml.runs import RunStore
from workers.runtime.logs import get_logger

log = get_logger(component="ml")
Key = tuple[str, str, int]


class InputRecorder:
    def __init__(self, runs: RunStore, *, window: int, interval: float) -> None:
        self.runs = runs
        self.window = window
        self.interval = interval
        self._buffers: dict[Key, deque[dict[str, Any]]] = {}
        self._task: asyncio.Task[None] | None = None
        # One flush at a time: a caller that needs the inputs written (drift) must wait for a
        # periodic flush already writing them, not return at once with empty buffers.
        self._flushing = asyncio.Lock()

    def add(self, key: Key, rows: Sequence[dict[str, Any]]) -> None:
        if self.window == 0:
            return
        buffer = self._buffers.get(key)
        if buffer is None:
            buffer = self._buffers[key] = deque(maxlen=self.window)
        buffer.extend(rows)

    async def flush(self) -> None:
        """Write what is buffered; returns once everything buffered before the call is written
        (or kept for the next flush after a failure)."""
        async with self._flushing:
            buffers, self._buffers = self._buffers, {}
            for (tenant, name, version), rows in buffers.items():
                try:
                    await self.runs.record_inputs(
                        tenant, name, version, list(rows), keep=self.window
                    )
                except Exception as exc:  # kept for the next flush, within the window
                    log.warning("prediction inputs not recorded", error=type(exc).__name__)
                    self.add((tenant, name, version), list(rows))

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="ml-input-recorder")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.flush()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self.flush()
