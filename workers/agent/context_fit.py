"""Whether a turn's messages fit the context budget without counting them: then
`prompt.build_context` would return them all, and the turn skips that call.

The bound holds for every tokenizer the prompt component counts with: a BPE token (o200k_base,
cl100k_base) is at least one byte of UTF-8, so a text has at most as many tokens as bytes; a
chat message adds its framing (3 tokens, 1 more with a name) and the reply's priming is 3
tokens; a non-OpenAI model's estimate multiplies a count by at most 10
(AIFLEET_PROMPT_APPROX_FACTOR's upper limit), rounded up. A turn over this bound goes through
`build_context` as before, which keeps the system prompt and the newest turns.
"""

from __future__ import annotations

from collections.abc import Sequence

from schemas.v1.common_pb2 import ChatMessage

MAX_FACTOR = 10  # the prompt component's largest approximation factor
FRAMING = 4  # tokens per message beyond its texts (3, and 1 for a name), unscaled
PRIMING = 3


def _most_tokens(role: str, content: str, name: str) -> int:
    texts = len(role.encode()) + len(content.encode()) + len(name.encode())
    return MAX_FACTOR * (FRAMING + texts) + 1  # + 1: the estimate rounds up


def surely_fits(system_prompt: str, messages: Sequence[ChatMessage], budget: int) -> bool:
    """True when the system prompt and every message take at most `budget` tokens by any
    tokenizer the prompt component may use (False says nothing: count them)."""
    total = MAX_FACTOR * PRIMING + 1
    if system_prompt:
        total += _most_tokens("system", system_prompt, "")
    for m in messages:
        if total > budget:
            return False
        total += _most_tokens(m.role, m.content, m.name)
    return total <= budget
