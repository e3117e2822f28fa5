"""Groundedness: is each answer sentence supported by the chunks it cites?

A sentence's support is the highest cosine similarity between its embedding (markers removed)
and an embedding of a cited chunk or of one of that chunk's sentences: comparing with the
chunk's sentences catches a claim copied or paraphrased from one line of a long chunk, which a
whole-chunk vector dilutes. A sentence citing nothing is compared with every retrieved chunk
(reported, but never counted as grounded: an uncited claim is what the check is for). The
score is the share of grounded sentences.

Embeddings are unit vectors (cosine = dot product), computed by the caller through the gateway.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

Vector = npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class Evidence:
    """What one retrieved chunk offers as support: its own vector and its sentences'."""

    vectors: npt.NDArray[np.float32]  # rows: the chunk, then each of its sentences


@dataclass(frozen=True, slots=True)
class Judgement:
    support: float
    best_result: int  # index of the retrieved chunk that gave the support, -1 for none
    grounded: bool


def judge(
    sentence: Vector, cited: Sequence[int], evidence: Sequence[Evidence], threshold: float
) -> Judgement:
    """Support of one sentence from the chunks `cited` (indexes into `evidence`)."""
    pool = list(cited) if cited else list(range(len(evidence)))
    best, best_index = -1.0, -1
    for i in pool:
        if not 0 <= i < len(evidence) or evidence[i].vectors.size == 0:
            continue
        score = float(np.max(evidence[i].vectors @ sentence))
        if score > best:
            best, best_index = score, i
    if best_index < 0:
        return Judgement(0.0, -1, False)
    return Judgement(best, best_index, bool(cited) and best >= threshold)


def groundedness(judgements: Sequence[Judgement]) -> float:
    """The share of grounded sentences (0 for no sentence)."""
    if not judgements:
        return 0.0
    return sum(j.grounded for j in judgements) / len(judgements)
