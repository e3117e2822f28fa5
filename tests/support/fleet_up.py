"""`aifleet up` as a user runs it, in a process of its own: its environment and its stop."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal

from tests.support.run_worker import REPO_ROOT

# Variables that would point the fleet at servers or providers other than its embedded ones.
_FOREIGN = ("AIFLEET_", "NATS_", "DATABASE_", "REDIS_", "OPENAI_", "ANTHROPIC_")


def clean_env() -> dict[str, str]:
    """This process's environment without any configuration of the fleet, able to import the
    repository."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_FOREIGN)}
    env["PYTHONPATH"] = str(REPO_ROOT)
    return env


async def interrupt(up: asyncio.subprocess.Process, timeout: float = 30) -> None:
    """Ctrl-C (SIGINT), as a user stops it; killed if it has not stopped within `timeout`."""
    with contextlib.suppress(ProcessLookupError):
        up.send_signal(signal.SIGINT)
    try:
        await asyncio.wait_for(up.wait(), timeout=timeout)
    except TimeoutError:
        up.kill()
        await up.wait()
