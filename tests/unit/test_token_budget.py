"""Concurrent model runs share a budget of padded tokens: small runs side by side, a full run
alone, first come first served."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from workers.gateway.embedding import TokenBudget


def holder(
    budget: TokenBudget, tokens: int, inside: threading.Event, leave: threading.Event
) -> threading.Thread:
    """A thread that holds `tokens` until `leave` is set; `inside` is set once it holds them."""

    def run() -> None:
        with budget.hold(tokens):
            inside.set()
            leave.wait(10)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.005)


def test_small_runs_hold_the_budget_side_by_side() -> None:
    """Two runs whose tokens fit together run at the same time."""
    budget = TokenBudget(2048)
    leave = threading.Event()
    first, second = threading.Event(), threading.Event()
    threads = [holder(budget, 512, first, leave), holder(budget, 768, second, leave)]
    assert first.wait(5)
    assert second.wait(5)
    leave.set()
    for t in threads:
        t.join(5)


def test_a_full_run_waits_until_the_others_are_done() -> None:
    """A run needing the whole budget starts only once the running ones have given it back."""
    budget = TokenBudget(2048)
    leave_small, leave_full = threading.Event(), threading.Event()
    small, full = threading.Event(), threading.Event()
    threads = [holder(budget, 256, small, leave_small)]
    assert small.wait(5)
    threads.append(holder(budget, 2048, full, leave_full))
    assert not full.wait(0.2)
    leave_small.set()
    assert full.wait(5)
    leave_full.set()
    for t in threads:
        t.join(5)


def test_a_waiting_large_run_is_not_overtaken() -> None:
    """A small run arriving after a waiting large one waits behind it, though it would fit."""
    budget = TokenBudget(2048)
    leaves = [threading.Event() for _ in range(3)]
    entered = [threading.Event() for _ in range(3)]
    threads = [holder(budget, 1024, entered[0], leaves[0])]
    assert entered[0].wait(5)
    threads.append(holder(budget, 2048, entered[1], leaves[1]))
    until(lambda: budget.waiting == 1)  # the large run is queued first
    threads.append(holder(budget, 512, entered[2], leaves[2]))
    assert not entered[2].wait(0.2)
    leaves[0].set()
    assert entered[1].wait(5)
    assert not entered[2].is_set()
    leaves[1].set()
    assert entered[2].wait(5)
    leaves[2].set()
    for t in threads:
        t.join(5)


def test_a_run_larger_than_the_budget_holds_all_of_it() -> None:
    """Tokens over the budget are capped, so such a run still starts (alone)."""
    budget = TokenBudget(2048)
    with budget.hold(10_000):
        pass
    with budget.hold(2048):
        pass
