"""build_context, property style: over many random conversations the budget is never exceeded,
the system prompt and the newest turn are always kept, and what is dropped is reported."""

from __future__ import annotations

import random

import pytest

from schemas.errors import Unprocessable
from schemas.v1.common_pb2 import ChatMessage
from schemas.v1.prompt_pb2 import BuildContextRequest, ContextDocument
from workers.prompt import tokens
from workers.prompt.context import build_context, documents_content, turns_of

WORDS = ["the", "cat", "sat", "on", "a", "mat", "über", "数据", "🚀", "{{x}}", "\n", "token"]
ROLES_AFTER_USER = ["assistant", "assistant", "tool", "system", "developer"]


def random_text(rng: random.Random, most: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(0, most)))


def random_request(rng: random.Random, model: str) -> BuildContextRequest:
    messages: list[ChatMessage] = []
    if rng.random() < 0.2:  # a conversation may open with an assistant greeting
        messages.append(ChatMessage(role="assistant", content=random_text(rng, 20)))
    for _ in range(rng.randint(1, 12)):
        messages.append(
            ChatMessage(
                role="user",
                content=random_text(rng, 60),
                name=rng.choice(["", "", "ada", "bob_2"]),
            )
        )
        for _ in range(rng.randint(0, 3)):
            messages.append(
                ChatMessage(role=rng.choice(ROLES_AFTER_USER), content=random_text(rng, 80))
            )
    documents = [
        ContextDocument(id=rng.choice(["", f"doc-{i}"]), content=random_text(rng, 50) or "x")
        for i in range(rng.choice([0, 0, 1, 3, 6]))
    ]
    return BuildContextRequest(
        model=model,
        budget_tokens=1,  # set by the caller
        system_prompt=random_text(rng, 40) if rng.random() < 0.8 else "",
        messages=messages,
        documents=documents,
    )


def essentials(req: BuildContextRequest, counter: tokens.ModelCounter) -> int:
    """What the system prompt and the newest turn cost, counted independently."""
    last_user = max((i for i, m in enumerate(req.messages) if m.role == "user"), default=0)
    total = counter.priming
    if req.system_prompt:
        total += counter.message("system", req.system_prompt)
    for m in req.messages[last_user:]:
        total += counter.message(m.role, m.content, m.name)
    return total


def everything(req: BuildContextRequest, counter: tokens.ModelCounter) -> int:
    total = counter.priming + sum(counter.message(m.role, m.content, m.name) for m in req.messages)
    if req.system_prompt:
        total += counter.message("system", req.system_prompt)
    if req.documents:
        total += counter.message("system", documents_content(req.documents))
    return total


@pytest.mark.parametrize("model", ["gpt-4o", "gpt-3.5-turbo", "claude-3-opus"])
async def test_random_conversations_never_exceed_the_budget(model: str) -> None:
    """300 random conversations with random budgets, from too small to ample: every answer
    is within budget, keeps the essentials, drops a prefix of whole turns (oldest first, only
    as many as needed), drops documents from the end only when they cannot fit, and reports
    counts that an independent recount confirms."""
    rng = random.Random(f"context-{model}")
    counter = tokens.counter_for(model, approx_factor=1.3)
    answered = refused = 0
    for case in range(300):
        req = random_request(rng, model)
        need, full = essentials(req, counter), everything(req, counter)
        req.budget_tokens = rng.randint(max(1, need - 20), full + 20)
        where = f"case {case}, budget {req.budget_tokens}, essentials {need}"
        if need > req.budget_tokens:
            with pytest.raises(Unprocessable) as raised:
                await build_context(req, counter)
            assert raised.value.details["required_tokens"] == need, where
            refused += 1
            continue
        reply = await build_context(req, counter)
        answered += 1

        # Never over budget, and the reported counts are the true ones.
        assert reply.total_tokens <= req.budget_tokens, where
        assert len(reply.message_tokens) == len(reply.messages), where
        for m, n in zip(reply.messages, reply.message_tokens, strict=True):
            assert counter.message(m.role, m.content, m.name) == n, where
        assert reply.total_tokens == counter.priming + sum(reply.message_tokens), where

        out = list(reply.messages)
        if req.system_prompt:
            assert (out[0].role, out[0].content) == ("system", req.system_prompt), where
            out = out[1:]
        docs = list(req.documents)
        dropped_docs = list(reply.dropped_document_indexes)
        kept_docs = len(docs) - len(dropped_docs)
        assert dropped_docs == list(range(kept_docs, len(docs))), where
        if kept_docs:
            assert out[0].content == documents_content(docs[:kept_docs]), where
            out = out[1:]

        # Kept history is a suffix of whole turns; the newest turn is always in it.
        dropped = list(reply.dropped_message_indexes)
        first_kept = len(dropped)
        assert dropped == list(range(first_kept)), where
        assert out == list(req.messages[first_kept:]), where
        starts = [t.start for t in turns_of(req.messages)]
        assert first_kept in starts, where
        assert first_kept <= starts[-1], where
        assert reply.dropped_tokens == sum(
            counter.message(m.role, m.content, m.name) for m in req.messages[:first_kept]
        ), where

        # Only as much as needed: the newest dropped turn would not have fit.
        if first_kept:
            previous = max(s for s in starts if s < first_kept)
            extra = sum(
                counter.message(m.role, m.content, m.name)
                for m in req.messages[previous:first_kept]
            )
            assert reply.total_tokens + extra > req.budget_tokens, where
        # Documents come before older turns: a document is dropped only when it would not fit
        # even with every older turn gone.
        if dropped_docs:
            with_one_more = need + counter.message(
                "system", documents_content(docs[: kept_docs + 1])
            )
            assert with_one_more > req.budget_tokens, where
        # An ample budget drops nothing.
        if full <= req.budget_tokens:
            assert (dropped, dropped_docs) == ([], []), where
    assert answered > 100
    assert refused > 5


async def test_a_conversation_without_user_messages_is_one_turn() -> None:
    """With no `user` message the whole conversation is the newest turn: kept whole or 422."""
    counter = tokens.counter_for("gpt-4o", approx_factor=1.3)
    msgs = [ChatMessage(role="assistant", content="hello " * 20) for _ in range(3)]
    assert [list(t) for t in turns_of(msgs)] == [[0, 1, 2]]
    req = BuildContextRequest(model="gpt-4o", budget_tokens=1000, messages=msgs)
    reply = await build_context(req, counter)
    assert list(reply.messages) == msgs
    req.budget_tokens = reply.total_tokens - 1
    with pytest.raises(Unprocessable):
        await build_context(req, counter)


async def test_the_exact_budget_is_usable() -> None:
    """A budget equal to everything's cost keeps everything; one token less drops a turn."""
    counter = tokens.counter_for("gpt-4o", approx_factor=1.3)
    msgs = [
        ChatMessage(role="user", content="first question"),
        ChatMessage(role="assistant", content="first answer"),
        ChatMessage(role="user", content="second question"),
    ]
    req = BuildContextRequest(model="gpt-4o", budget_tokens=1, system_prompt="sys", messages=msgs)
    req.budget_tokens = everything(req, counter)
    reply = await build_context(req, counter)
    assert (reply.total_tokens, list(reply.dropped_message_indexes)) == (req.budget_tokens, [])
    req.budget_tokens -= 1
    reply = await build_context(req, counter)
    assert list(reply.dropped_message_indexes) == [0, 1]
