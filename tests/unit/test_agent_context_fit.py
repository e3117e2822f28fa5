"""The agent's no-count check of the context budget agrees with prompt.build_context: what it
says fits, build_context returns whole, for exact and approximate tokenizers."""

from __future__ import annotations

import random

import pytest

from schemas.v1.common_pb2 import ChatMessage
from schemas.v1.prompt_pb2 import BuildContextRequest
from workers.agent.context_fit import MAX_FACTOR, surely_fits
from workers.prompt import tokens
from workers.prompt.context import build_context

WORDS = ["hello", "über", "数据", "🙂", "tokens", "a", " ", "\n", "naïve", "x" * 40]


def conversation(rng: random.Random) -> tuple[str, list[ChatMessage]]:
    def text() -> str:
        return "".join(rng.choice(WORDS) for _ in range(rng.randint(0, 30)))

    messages = []
    for i in range(rng.randint(1, 8)):
        role = "user" if i % 2 == 0 else rng.choice(["assistant", "tool"])
        name = "n" * rng.randint(0, 3) if role == "user" else ""
        messages.append(ChatMessage(role=role, content=text(), name=name))
    messages.append(ChatMessage(role="user", content=text() or "q"))
    return rng.choice(["", "Be brief.", text()]), messages


@pytest.mark.parametrize(
    ("model", "factor"), [("gpt-4o", 1.3), ("claude-x", 1.3), ("claude-x", float(MAX_FACTOR))]
)
async def test_what_surely_fits_is_returned_whole_by_build_context(
    model: str, factor: float
) -> None:
    """Over random conversations and budgets: each one said to fit comes back complete and
    within the budget, and some do (the check is not vacuous)."""
    rng = random.Random(7)
    counter = tokens.counter_for(model, approx_factor=factor)
    said_fit = 0
    for _ in range(300):
        system, messages = conversation(rng)
        budget = rng.choice([64, 500, 2000, 8000, 20000])
        if not surely_fits(system, messages, budget):
            continue
        said_fit += 1
        req = BuildContextRequest(
            model=model, budget_tokens=budget, system_prompt=system, messages=messages
        )
        fitted = await build_context(req, counter)
        expected = ([ChatMessage(role="system", content=system)] if system else []) + messages
        assert list(fitted.messages) == expected
        assert fitted.total_tokens <= budget
    assert said_fit > 50


def test_a_history_over_the_budget_is_left_to_build_context() -> None:
    """Long texts against a small budget: not said to fit."""
    messages = [ChatMessage(role="user", content="word " * 200)]
    assert not surely_fits("Be brief.", messages, 500)
    assert surely_fits("Be brief.", [ChatMessage(role="user", content="hi")], 500)
