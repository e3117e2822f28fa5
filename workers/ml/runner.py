"""Running a training in a child process (workers/ml/trainer.py): the spec in, progress and
the result out, killed at the time limit.

Children are forked by multiprocessing's forkserver with the trainer module preloaded: the
server pays the imports once (`warm_up`, run at the worker's start), each training then starts
in milliseconds. The child's exceptions become a `TrainingFailed` with a short reason; an
unexpected crash is logged, and callers never see a trace.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import multiprocessing
from collections.abc import Awaitable, Callable
from multiprocessing.connection import Connection
from typing import Any

from workers.runtime.logs import get_logger

OnProgress = Callable[[str, float], Awaitable[None]]
log = get_logger(component="ml")
_context = multiprocessing.get_context("forkserver")
_context.set_forkserver_preload(["workers.ml.trainer"])


class TrainingFailed(Exception):
    """The training cannot succeed with this request and data (not worth a retry)."""

    def __init__(self, message: str, field: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.field = field


def warm_up() -> None:
    """Start the forkserver (it imports scikit-learn, skops and pyarrow: seconds) now."""
    from multiprocessing import forkserver

    forkserver.ensure_running()


async def run_training(
    spec: dict[str, Any], *, timeout: float, on_progress: OnProgress
) -> dict[str, Any]:
    """Train in a child process; the result as the trainer sent it (see trainer.py)."""
    from workers.ml import trainer

    receive, send = _context.Pipe(duplex=False)
    process = _context.Process(
        target=trainer.main, args=(json.dumps(spec), send), name="aifleet-ml-trainer", daemon=True
    )
    await asyncio.to_thread(process.start)
    send.close()
    outcome: dict[str, Any] | None = None
    try:
        async with asyncio.timeout(timeout):
            while (message := await _receive(receive)) is not None:
                if "progress" in message:
                    await on_progress(message["progress"]["stage"], message["progress"]["progress"])
                else:
                    outcome = message
            await asyncio.to_thread(process.join)
    except TimeoutError:
        raise TrainingFailed(f"the training took longer than its limit of {timeout:g} s") from None
    finally:
        receive.close()
        if process.exitcode is None:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await asyncio.to_thread(process.join)
        process.close()
    if outcome is not None and "error" in outcome:
        raise TrainingFailed(outcome["error"]["message"], outcome["error"].get("field", ""))
    if outcome is None or "done" not in outcome:
        log.error("training process failed", outcome=str(outcome)[:200])
        raise TrainingFailed("the training process ended without a result")
    result: dict[str, Any] = outcome["done"]
    return result


async def _receive(conn: Connection) -> dict[str, Any] | None:
    """The next message from the child, or None once it closed its end."""
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()
    fd = conn.fileno()

    def readable() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(fd, readable)
    try:
        await ready
    finally:
        loop.remove_reader(fd)
    try:
        raw = conn.recv_bytes()
    except EOFError:
        return None
    message: dict[str, Any] = json.loads(raw)
    return message
