"""Reciprocal Rank Fusion: one ranking from several, by rank alone.

RRF (Cormack, Clarke, Büttcher 2009) scores an item sum(w / (k + rank)) over the rankings that
contain it. It needs no score calibration between legs, which is why it suits a cosine leg and
a full-text leg whose scores mean different things. k = 60 is the paper's constant.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)

DEFAULT_K = 60


@dataclass(frozen=True, slots=True)
class Fused(Generic[K]):
    key: K
    score: float
    # Rank (from 1) of the item in each leg that contains it, by leg name.
    ranks: dict[str, int] = field(default_factory=dict)


def reciprocal_rank_fusion(
    legs: Mapping[str, Sequence[K]],
    *,
    k: int = DEFAULT_K,
    weights: Mapping[str, float] | None = None,
) -> list[Fused[K]]:
    """Fuse rankings (best first, no duplicates within a leg) into one, best first.

    Ties are broken by the best single rank, then by the order of the legs given, so the result
    is deterministic.
    """
    if k < 0:
        raise ValueError("k must be >= 0")
    scores: dict[K, float] = {}
    ranks: dict[K, dict[str, int]] = {}
    for name, ranking in legs.items():
        weight = 1.0 if weights is None else weights.get(name, 1.0)
        for rank, key in enumerate(ranking, start=1):
            if name in ranks.setdefault(key, {}):
                raise ValueError(f"{key!r} appears twice in leg {name}")
            ranks[key][name] = rank
            scores[key] = scores.get(key, 0.0) + weight / (k + rank)
    order = {name: i for i, name in enumerate(legs)}

    def tie_break(key: K) -> tuple[float, int, int]:
        best = min(ranks[key].items(), key=lambda item: (item[1], order[item[0]]))
        return (-scores[key], best[1], order[best[0]])

    return [Fused(key, scores[key], ranks[key]) for key in sorted(scores, key=tie_break)]
