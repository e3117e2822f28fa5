"""Building answers from retrieved chunks: the generation prompt and the extractive answer.

Generative: the chunks go to the model numbered [1]..[n], with an instruction to cite them
inline and to say so when they do not hold the answer. Extractive (no LLM): the answer is made
of the retrieved chunks' sentences most similar to the question, each followed by its chunk's
marker, in the order of the chunks' ranks; so every sentence is a quote and is cited.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from workers.rag.citations import split_sentences

NO_ANSWER = (
    "I could not find anything relevant to this question in the documents, so I cannot answer it."
)
SYSTEM_PROMPT = (
    "You answer questions using only the numbered passages the user gives. After every "
    "sentence that uses a passage, cite it inline as [n] with the passage's number (several "
    "as [1][3]). Do not use outside knowledge. If the passages do not contain the answer, say "
    "that the documents do not answer the question."
)
REWRITE_PROMPT = (
    "Rewrite the user's question as one standalone search query for a document search engine: "
    "keep every name, number and technical term, drop greetings and filler. Reply with the "
    "query only, on one line."
)
# Sentences shorter than this are headings or fragments, not answers.
_MIN_SENTENCE_CHARS = 20


@dataclass(frozen=True, slots=True)
class Passage:
    """A retrieved chunk as the answer sees it."""

    title: str
    text: str


def generation_messages(question: str, passages: Sequence[Passage]) -> list[dict[str, str]]:
    """Chat messages asking for an answer with inline citations."""
    blocks = [
        f"[{i}] {p.title}\n{p.text}" if p.title else f"[{i}] {p.text}"
        for i, p in enumerate(passages, start=1)
    ]
    user = "Passages:\n\n" + "\n\n".join(blocks) + f"\n\nQuestion: {question}"
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]


def candidate_sentences(passages: Sequence[Passage]) -> list[tuple[int, str]]:
    """(passage index, sentence) for every sentence long enough to be an answer."""
    out: list[tuple[int, str]] = []
    for i, p in enumerate(passages):
        for s in split_sentences(p.text):
            if len(s.text) >= _MIN_SENTENCE_CHARS:
                out.append((i, s.text))
    return out


def extractive_answer(
    candidates: Sequence[tuple[int, str]],
    vectors: npt.NDArray[np.float32],
    query_vector: npt.NDArray[np.float32],
    *,
    max_sentences: int,
    per_passage: int = 2,
) -> str:
    """The `max_sentences` candidates most similar to the query (at most `per_passage` from
    one chunk), ordered by chunk rank then position, each cited `[n]`."""
    if not candidates:
        return ""
    scores = vectors @ query_vector
    order = np.argsort(-scores, kind="stable")
    taken: list[int] = []
    per: dict[int, int] = {}
    for i in order.tolist():
        passage = candidates[i][0]
        if per.get(passage, 0) >= per_passage:
            continue
        taken.append(i)
        per[passage] = per.get(passage, 0) + 1
        if len(taken) == max_sentences:
            break
    taken.sort()  # candidates are in chunk-rank order, then sentence order
    return " ".join(f"{_as_sentence(candidates[i][1])} [{candidates[i][0] + 1}]" for i in taken)


def _as_sentence(text: str) -> str:
    text = " ".join(text.split())
    return text if text[-1:] in ".!?\u3002\uff01\uff1f" else text + "."


def cleaned_rewrite(text: str, *, limit: int) -> str:
    """The model's rewrite as a query: first non-empty line, quotes removed; "" if unusable."""
    for line in text.splitlines():
        line = line.strip().strip("\"'`").strip()
        if line:
            return line[:limit]
    return ""
