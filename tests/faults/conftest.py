"""Fixtures of the fault tests: worker processes that a test may kill, reaped afterwards."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path

import pytest

from tests.support.run_worker import WorkerProcess

Spawn = Callable[[list[str], Mapping[str, str]], Awaitable[WorkerProcess]]


@pytest.fixture
async def spawn_worker(tmp_path: Path) -> AsyncIterator[Spawn]:
    """`await spawn_worker([module, ...], env)` starts `tests.support.run_worker` and waits for
    it to be ready; every process still running at the end of the test is killed and reaped."""
    started: list[WorkerProcess] = []

    async def spawn(modules: list[str], env: Mapping[str, str]) -> WorkerProcess:
        proc = WorkerProcess(modules, env, tmp_path / f"worker-{len(started)}.log")
        started.append(proc)
        return await proc.start()

    try:
        yield spawn
    finally:
        for proc in started:
            await proc.close()
