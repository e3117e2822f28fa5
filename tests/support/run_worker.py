"""A worker in a process of its own, for fault tests that kill it or send it SIGTERM.

    python -m tests.support.run_worker tests.support.jobs [workers.cache.service ...]

Serves the `component` of each named module with settings from the environment (`NATS_URL`,
`DATABASE_URL`, `REDIS_URL`, `AIFLEET_*`), exactly as `aifleet worker` does, and prints a line
`ready` on stdout once the worker is ready. SIGTERM stops it gracefully (exit code 0).

`WorkerProcess` starts one from a test and waits for that line.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import os
import signal
import sys
from collections.abc import Mapping
from pathlib import Path

from workers.runtime.component import Component
from workers.runtime.config import Settings
from workers.runtime.logs import configure as configure_logging
from workers.runtime.worker import Worker

READY = "ready"
REPO_ROOT = Path(__file__).resolve().parents[2]


def load_components(modules: list[str]) -> list[Component]:
    components = []
    for name in modules:
        component = getattr(importlib.import_module(name), "component", None)
        if not isinstance(component, Component):
            raise SystemExit(f"{name} has no `component`")
        components.append(component)
    return components


async def serve(components: list[Component], settings: Settings) -> None:
    worker = Worker(components, settings)
    running = asyncio.create_task(worker.run())
    ready = asyncio.create_task(worker.ready.wait())
    await asyncio.wait({running, ready}, return_when=asyncio.FIRST_COMPLETED)
    if ready.done():
        print(READY, flush=True)
    else:
        ready.cancel()
    await running


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: python -m tests.support.run_worker MODULE [MODULE...]", file=sys.stderr)
        return 2
    from aifleet.launch import run

    settings = Settings()
    configure_logging(settings.log_level, settings.log_format)
    run(serve(load_components(argv), settings))
    return 0


class WorkerProcess:
    """`python -m tests.support.run_worker` as a child process of the test."""

    def __init__(self, modules: list[str], env: Mapping[str, str], log_path: Path) -> None:
        self.modules = modules
        self.env = env
        self.log_path = log_path
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self, timeout: float = 30.0) -> WorkerProcess:
        """Start the process and return once it printed `ready`; fail if it exits first."""
        env = {**os.environ, **self.env, "PYTHONUNBUFFERED": "1"}
        with self.log_path.open("ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "tests.support.run_worker",
                *self.modules,
                cwd=REPO_ROOT,
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=log,
            )
        assert self.proc.stdout is not None
        try:
            async with asyncio.timeout(timeout):
                while True:
                    line = await self.proc.stdout.readline()
                    if not line:
                        code = await self.proc.wait()
                        raise RuntimeError(f"worker exited with {code} before ready: {self.log()}")
                    if line.decode().strip() == READY:
                        return self
        except TimeoutError:
            self.kill()
            raise RuntimeError(f"worker not ready within {timeout:g}s: {self.log()}") from None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def kill(self) -> None:
        """SIGKILL: no cleanup, no acks, no drain."""
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGKILL)

    def terminate(self) -> None:
        """SIGTERM: the graceful stop."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)

    async def wait(self, timeout: float) -> int:
        assert self.proc is not None
        async with asyncio.timeout(timeout):
            return await self.proc.wait()

    async def close(self) -> None:
        """Kill the process if it still runs and reap it (test teardown)."""
        if self.proc is not None:
            self.kill()
            await self.proc.wait()

    def log(self) -> str:
        """The tail of the worker's stderr (its structlog lines)."""
        lines = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(lines[-20:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
