"""The prediction-input recorder: a flush returns only once earlier inputs are written."""

from __future__ import annotations

import asyncio
from typing import Any, cast

from workers.ml.recorder import InputRecorder
from workers.ml.runs import RunStore


class SlowRuns:
    """record_inputs that holds until released, remembering what was written."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.written: list[tuple[str, str, int, int]] = []

    async def record_inputs(
        self, tenant: str, name: str, version: int, rows: list[dict[str, Any]], keep: int
    ) -> None:
        await self.release.wait()
        self.written.append((tenant, name, version, len(rows)))


async def test_flush_waits_for_a_flush_already_writing() -> None:
    """A second flush (drift's) returns after the periodic one has written its rows."""
    runs = SlowRuns()
    recorder = InputRecorder(cast(RunStore, runs), window=10, interval=60)
    recorder.add(("acme", "churn", 1), [{"x": 1}, {"x": 2}])
    periodic = asyncio.create_task(recorder.flush())
    await asyncio.sleep(0)  # the periodic flush has taken the buffers and is writing
    drift = asyncio.create_task(recorder.flush())
    await asyncio.sleep(0.01)
    assert not drift.done()
    runs.release.set()
    await asyncio.gather(periodic, drift)
    assert runs.written == [("acme", "churn", 1, 2)]


async def test_flush_keeps_rows_whose_write_failed() -> None:
    """A failed write keeps the rows for the next flush, within the window."""

    class FailingOnce(SlowRuns):
        async def record_inputs(self, *args: Any, **kwargs: Any) -> None:
            if not self.written and not self.release.is_set():
                self.release.set()
                raise ConnectionError("database down")
            await super().record_inputs(*args, **kwargs)

    runs = FailingOnce()
    recorder = InputRecorder(cast(RunStore, runs), window=10, interval=60)
    recorder.add(("acme", "churn", 1), [{"x": 1}])
    await recorder.flush()
    assert runs.written == []
    await recorder.flush()
    assert runs.written == [("acme", "churn", 1, 1)]
