"""Parsing in a child process: a time limit that really stops a hanging parser, a memory cap.

A thread cannot be killed, and a parser stuck in a C extension or a pathological loop ignores
every signal Python could send it; a process can be killed. Each parse runs in a child forked
from a forkserver that has already imported every parser (a fork, not a fresh interpreter: a
few milliseconds, see benchmarks/README.md), with its address space capped (RLIMIT_AS), and
reports progress and its result over a pipe. At the deadline the child is SIGKILLed.

The child gets the path of a temporary copy of the file, which the caller created: a client's
file name is never a path anywhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import multiprocessing.connection
import multiprocessing.process
import os
import sys
import threading
import time
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from schemas.errors import ServiceError, Unprocessable
from workers.ingestion.document import StructuredDocument
from workers.ingestion.errors import UnsupportedType, unreadable
from workers.ingestion.limits import ParseLimits
from workers.ingestion.parsers import ParseOptions
from workers.ingestion.sniff import Detected

if TYPE_CHECKING:
    from workers.ingestion.pipeline import Pipeline

OnProgress = Callable[[int, int], Any]
_ERRORS: dict[str, type[ServiceError]] = {"415": UnsupportedType, "422": Unprocessable}


PRELOAD = ("workers.ingestion.pipeline", "workers.ingestion.sandbox", "workers.ingestion.warm")


def prestart() -> None:
    """Start the forkserver (and import every parser in it) ahead of the first file: ~2 s a
    worker would otherwise spend on its first parse. Idempotent; blocking (a preload)."""
    from multiprocessing import forkserver

    multiprocessing.get_context("forkserver").set_forkserver_preload(list(PRELOAD))
    forkserver.ensure_running()


@dataclass(frozen=True)
class SandboxLimits:
    timeout: float = 120.0
    memory_bytes: int = 2 * 1024**3
    # Children running at once; more parses wait their turn (the time limit starts then).
    parallel: int = 2
    # Seconds between progress messages from a child (its first and last page always report).
    progress_interval: float = 0.2


class ParseSandbox:
    def __init__(self, limits: SandboxLimits, parse_limits: ParseLimits) -> None:
        self.limits = limits
        self.parse_limits = parse_limits
        self._context = multiprocessing.get_context("forkserver")
        # Import the parsers once, in the forkserver; every child inherits them.
        self._slots = asyncio.Semaphore(limits.parallel)
        self._context.set_forkserver_preload(
            ["workers.ingestion.pipeline", "workers.ingestion.sandbox"]
        )

    async def detect(self, path: Path, *, file_name: str, content_type: str) -> Detected:
        result = await self._run(("detect", str(path), file_name, content_type), None)
        assert isinstance(result, Detected)
        return result

    async def process(
        self,
        path: Path,
        detected: Detected,
        options: ParseOptions,
        on_progress: OnProgress | None = None,
        *,
        pipelines: Mapping[str, Pipeline] | None = None,
    ) -> StructuredDocument:
        """Parse, clean and structure the file in a child; `pipelines` replaces the default
        stages (they are pickled by reference: module-level functions only)."""
        task = ("process", str(path), detected, options, self.parse_limits, pipelines)
        result = await self._run(task, on_progress)
        assert isinstance(result, StructuredDocument)
        return result

    async def _run(self, task: tuple[Any, ...], on_progress: OnProgress | None) -> Any:
        async with self._slots:
            return await self._run_child(task, on_progress)

    async def _run_child(self, task: tuple[Any, ...], on_progress: OnProgress | None) -> Any:
        receiver, sender = self._context.Pipe(duplex=False)
        child = self._context.Process(
            target=_child,
            args=(sender, task, self.limits.memory_bytes, self.limits.progress_interval),
            daemon=True,
        )
        try:
            await asyncio.to_thread(_start, child)
        finally:
            sender.close()
        try:
            async with asyncio.timeout(self.limits.timeout):
                while True:
                    message = await asyncio.to_thread(_receive, receiver)
                    if message is None:
                        await asyncio.to_thread(child.join, 5.0)
                        raise unreadable(
                            "the parser stopped unexpectedly", exit_code=child.exitcode
                        )
                    kind = message[0]
                    if kind == "progress":
                        if on_progress is not None:
                            outcome = on_progress(message[1], message[2])
                            if asyncio.iscoroutine(outcome):
                                await outcome
                    elif kind == "error":
                        _, status, text, details = message
                        raise _ERRORS.get(status, Unprocessable)(text, details=details)
                    else:
                        return message[1]
        except TimeoutError:
            raise unreadable(
                f"parsing took longer than {self.limits.timeout:g} s",
                limit_seconds=self.limits.timeout,
            ) from None
        finally:
            if child.is_alive():
                child.kill()
            await asyncio.to_thread(child.join, 5.0)
            receiver.close()
            child.close()


_MAIN_SWAP = threading.Lock()
_NO_MAIN = types.ModuleType("__main__")


def _start(child: multiprocessing.process.BaseProcess) -> None:
    """Start a child without the parent's `__main__`. multiprocessing re-runs the parent's main
    module in every child it starts (for `aifleet`, the whole CLI: ~0.3 s per file); the child
    only runs this module, which the forkserver has imported already. So the start (which
    records what the main module is) sees an empty one."""
    with _MAIN_SWAP:
        main = sys.modules["__main__"]
        sys.modules["__main__"] = _NO_MAIN
        try:
            child.start()
        finally:
            sys.modules["__main__"] = main


def _receive(connection: multiprocessing.connection.Connection) -> Any:
    try:
        return connection.recv()
    except (EOFError, OSError):
        return None


def _child(
    sender: multiprocessing.connection.Connection,
    task: tuple[Any, ...],
    memory: int,
    interval: float,
) -> None:
    """Runs in the child: cap memory, do the task, send the outcome."""
    import resource

    from workers.ingestion.pipeline import PIPELINES, detect_file, process_file

    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    last = [0.0]

    def progress(done: int, total: int) -> None:
        now = time.monotonic()
        if done in (0, total) or now - last[0] >= interval:
            last[0] = now
            sender.send(("progress", done, total))

    try:
        if task[0] == "detect":
            result: Any = detect_file(Path(task[1]), file_name=task[2], content_type=task[3])
        else:
            pipelines = task[5] if task[5] is not None else PIPELINES
            result = process_file(Path(task[1]), task[2], task[3], task[4], progress, pipelines)
        sender.send(("done", result))
    except ServiceError as exc:
        sender.send(("error", str(exc.status), exc.message, exc.details or None))
    except MemoryError:
        sender.send(("error", "422", "the file needs more memory to parse than allowed", None))
    except RecursionError:
        sender.send(("error", "422", "the file is nested too deeply to parse", None))
    except Exception as exc:  # a parser bug on a hostile file: report, never a traceback
        sender.send(("error", "422", f"the parser failed ({type(exc).__name__})", None))
    finally:
        sender.close()
        os._exit(0)  # no atexit handlers or finalizers of the inherited state
