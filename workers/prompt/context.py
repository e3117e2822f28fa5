"""`build_context`: the messages that fit a token budget (the policy is in docs/architecture.md).

The system prompt and the newest turn are required; then documents (most relevant first), then
older turns (newest first), as many as fit by exact count, so the kept history is always a
contiguous suffix of whole turns.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from schemas.errors import Unprocessable
from schemas.v1 import prompt_pb2
from schemas.v1.common_pb2 import ChatMessage
from schemas.v1.prompt_pb2 import BuildContextRequest, BuildContextResponse
from workers.prompt import tokens

DOCUMENTS_HEADER = "Documents:"
_YIELD_EVERY_CHARS = 256 * 1024


def documents_content(documents: Sequence[prompt_pb2.ContextDocument]) -> str:
    """The one system message the kept documents are sent as."""
    blocks = [f"[{d.id or i + 1}]\n{d.content}" for i, d in enumerate(documents)]
    return DOCUMENTS_HEADER + "\n\n" + "\n\n".join(blocks)


def turns_of(messages: Sequence[ChatMessage]) -> list[range]:
    """Turns as index ranges: a turn starts at each `user` message (and at message 0)."""
    starts = [0] + [i for i, m in enumerate(messages) if m.role == "user" and i > 0]
    ends = [*starts[1:], len(messages)]
    return [range(a, b) for a, b in zip(starts, ends, strict=True)]


async def build_context(
    req: BuildContextRequest, counter: tokens.ModelCounter
) -> BuildContextResponse:
    """Keep the system prompt and the newest turn, then as many documents (most relevant
    first) and then as many older turns (newest first) as fit; never more than the budget."""
    budget = req.budget_tokens
    counted = 0

    async def message_tokens(role: str, content: str, name: str = "") -> int:
        nonlocal counted
        counted += len(content)
        if counted >= _YIELD_EVERY_CHARS:  # counting holds the GIL: let other requests in
            counted = 0
            await asyncio.sleep(0)
        return counter.message(role, content, name)

    system = await message_tokens("system", req.system_prompt) if req.system_prompt else 0
    per_message = [await message_tokens(m.role, m.content, m.name) for m in req.messages]
    turns = turns_of(req.messages)
    newest = turns[-1]
    required = counter.priming + system + sum(per_message[i] for i in newest)
    if required > budget:
        raise Unprocessable(
            "the system prompt and the newest turn alone exceed the budget",
            details={
                "required_tokens": required,
                "budget_tokens": budget,
                "tokenizer": counter.description,
            },
        )
    room = budget - required

    # Documents: the longest prefix that fits. Blocks are counted one by one to estimate it,
    # then the joined message is counted exactly, and the prefix shortened or lengthened until
    # it is the longest that fits by the exact count.
    docs = list(req.documents)
    kept_docs = 0
    docs_tokens = 0
    if docs:
        base = await message_tokens("system", DOCUMENTS_HEADER)
        estimate = base
        for d in docs:
            block = counter.text(f"\n\n[{d.id or kept_docs + 1}]\n") + counter.text(d.content)
            if estimate + block > room:
                break
            estimate += block
            kept_docs += 1
        while kept_docs:
            docs_tokens = await message_tokens("system", documents_content(docs[:kept_docs]))
            if docs_tokens <= room:
                break
            kept_docs -= 1
            docs_tokens = 0
        # The estimate may also be high by a token or two: take one more while it fits.
        while kept_docs < len(docs):
            more = await message_tokens("system", documents_content(docs[: kept_docs + 1]))
            if more > room:
                break
            kept_docs, docs_tokens = kept_docs + 1, more
    room -= docs_tokens

    # Older turns, newest first, while they fit: the kept history is always a suffix.
    first_kept = newest.start
    for turn in reversed(turns[:-1]):
        cost = sum(per_message[i] for i in turn)
        if cost > room:
            break
        room -= cost
        first_kept = turn.start

    reply = BuildContextResponse(
        budget_tokens=budget, tokenizer=counter.description, exact=counter.exact
    )
    if req.system_prompt:
        reply.messages.add(role="system", content=req.system_prompt)
        reply.message_tokens.append(system)
    if kept_docs:
        reply.messages.add(role="system", content=documents_content(docs[:kept_docs]))
        reply.message_tokens.append(docs_tokens)
    for i in range(first_kept, len(req.messages)):
        reply.messages.append(req.messages[i])
        reply.message_tokens.append(per_message[i])
    reply.dropped_message_indexes.extend(range(first_kept))
    reply.dropped_document_indexes.extend(range(kept_docs, len(docs)))
    reply.dropped_tokens = sum(per_message[:first_kept])
    reply.total_tokens = counter.priming + sum(reply.message_tokens)
    if reply.total_tokens > budget:  # cannot happen by construction; never answer over budget
        raise AssertionError("build_context exceeded its budget")
    return reply
