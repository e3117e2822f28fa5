"""The rerank stage: reorders fused candidates before the top-k is cut.

`Reranker` is the slot. Shipped: `MmrReranker`, maximal marginal relevance (Carbonell and
Goldstein 1998) over the candidates' own embeddings, which works offline and costs a few
matrix products. A cross-encoder (query and passage read together by one model) would rank
better, but none can be loaded on an air-gapped machine from a package here, so none is
pretended: one goes in by implementing `Reranker` (its `rerank` gets the query text too) and
naming it in `RERANKERS`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

Vector = npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class Candidate:
    """A fused candidate: its text, its embedding (unit length) and its fused score."""

    text: str
    embedding: Vector
    score: float


class Reranker(Protocol):
    name: str

    def rerank(
        self, query: str, query_vector: Vector, candidates: Sequence[Candidate], top_k: int
    ) -> list[int]:
        """Indexes into `candidates`, best first, at most `top_k`."""
        ...


class MmrReranker:
    """Pick, one at a time, the candidate maximising
    `lam * sim(query, c) - (1 - lam) * max sim(c, already picked)`."""

    name = "mmr"

    def __init__(self, lam: float = 0.7) -> None:
        if not 0.0 <= lam <= 1.0:
            raise ValueError("lambda must be in [0, 1]")
        self.lam = lam

    def rerank(
        self, query: str, query_vector: Vector, candidates: Sequence[Candidate], top_k: int
    ) -> list[int]:
        if not candidates or top_k <= 0:
            return []
        matrix = np.stack([c.embedding for c in candidates]).astype(np.float32)
        relevance = matrix @ query_vector.astype(np.float32)
        similarity = matrix @ matrix.T
        picked: list[int] = []
        redundancy = np.full(len(candidates), -np.inf, dtype=np.float32)
        left = np.ones(len(candidates), dtype=bool)
        for _ in range(min(top_k, len(candidates))):
            penalty = np.where(np.isfinite(redundancy), redundancy, 0.0)
            value = self.lam * relevance - (1.0 - self.lam) * penalty
            value[~left] = -np.inf
            best = int(np.argmax(value))
            picked.append(best)
            left[best] = False
            redundancy = np.maximum(redundancy, similarity[best])
        return picked


RERANKERS: dict[str, type[MmrReranker]] = {"mmr": MmrReranker}
