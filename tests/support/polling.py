"""Waiting for a condition with a deadline instead of sleeping a fixed time."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


async def eventually(
    probe: Callable[[], Awaitable[T]],
    *,
    timeout: float,
    what: str,
    interval: float = 0.05,
) -> T:
    """Call `probe` until it returns something truthy and return that; fail after `timeout`.

    The deadline only matters when the test is about to fail, so it is generous: a loaded
    machine slows the condition down without failing the test.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = await probe()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"not within {timeout:g}s: {what} (last probe: {value!r})")
        await asyncio.sleep(interval)
