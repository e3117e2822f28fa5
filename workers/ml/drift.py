"""Drift: how far recent inputs of a feature are from what the model was trained on.

At training, each feature's reference is kept with the version (`profile`): for numbers the
decile edges of the training values, the share of training rows in each bin and a random sample
of up to `SAMPLE` values; for booleans and categories the share of each value (categories beyond
the most frequent are pooled as "other"). Comparing recent rows gives, per feature, the
population stability index (PSI) over those bins or values, and for numbers the two-sample
Kolmogorov-Smirnov test against the sample. Missing values are a bin of their own.

PSI = sum((actual - expected) * ln(actual / expected)), shares floored at 1e-4. The usual reading:
< 0.1 stable, 0.1-0.2 some shift, > 0.2 drifted (the default threshold).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import stats

from workers.ml.data import BOOLEAN, CATEGORY, NUMBER
from workers.ml.signature import Signature

SAMPLE = 1000
BINS = 10
FLOOR = 1e-4
OTHER, MISSING = "__other__", "__missing__"


@dataclass(frozen=True)
class FeatureDrift:
    name: str
    kind: str
    psi: float
    ks_statistic: float
    ks_p_value: float
    missing_share: float
    summary: str
    drifted: bool


def profile(signature: Signature, matrix: npt.NDArray[Any], *, seed: int) -> dict[str, Any]:
    """The training reference of every feature (a JSON object), from the training matrix."""
    rng = np.random.default_rng(seed)
    out: dict[str, Any] = {}
    for c, spec in enumerate(signature.features):
        column = matrix[:, c]
        if spec.kind == NUMBER:
            values = column.astype(np.float64)
            present = values[~np.isnan(values)]
            edges = np.unique(np.quantile(present, np.linspace(0, 1, BINS + 1)[1:-1]))
            sample = present if len(present) <= SAMPLE else rng.choice(present, SAMPLE, False)
            out[spec.name] = {
                "edges": [float(e) for e in edges],
                "shares": _number_shares(values, edges),
                "sample": [float(v) for v in sample],
            }
        else:
            out[spec.name] = {"shares": _value_shares(_labels(spec.kind, column), None)}
    return out


def compare(
    signature: Signature,
    reference: dict[str, Any],
    matrix: npt.NDArray[Any],
    *,
    psi_threshold: float,
    p_value: float,
) -> list[FeatureDrift]:
    """Per-feature drift of `matrix` (rows to compare, signature columns) from `reference`."""
    found = []
    for c, spec in enumerate(signature.features):
        ref = reference[spec.name]
        column = matrix[:, c]
        if spec.kind == NUMBER:
            values = column.astype(np.float64)
            missing = np.isnan(values)
            present = values[~missing]
            actual = _number_shares(values, np.asarray(ref["edges"], dtype=np.float64))
            expected = ref["shares"]
            ks_stat, ks_p = math.nan, math.nan
            if len(present) and ref["sample"]:
                test = stats.ks_2samp(present, np.asarray(ref["sample"], dtype=np.float64))
                ks_stat, ks_p = float(test.statistic), float(test.pvalue)
            summary = f"mean {float(present.mean()):.6g}" if len(present) else "no values"
            psi = _psi(expected, actual)
            drifted = psi >= psi_threshold or (not math.isnan(ks_p) and ks_p < p_value)
        else:
            labels = _labels(spec.kind, column)
            missing = np.asarray([v == MISSING for v in labels])
            expected_shares: dict[str, float] = ref["shares"]
            actual_shares = _value_shares(labels, set(expected_shares))
            keys = sorted(set(expected_shares) | set(actual_shares))
            expected = [expected_shares.get(k, 0.0) for k in keys]
            actual = [actual_shares.get(k, 0.0) for k in keys]
            counts = Counter(v for v in labels if v != MISSING)
            summary = f"most frequent {counts.most_common(1)[0][0]!r}" if counts else "no values"
            psi = _psi(expected, actual)
            ks_stat, ks_p = math.nan, math.nan
            drifted = psi >= psi_threshold
        found.append(
            FeatureDrift(
                spec.name,
                spec.kind,
                psi,
                ks_stat,
                ks_p,
                float(missing.mean()) if len(missing) else 0.0,
                summary,
                drifted,
            )
        )
    return found


def _number_shares(values: npt.NDArray[np.float64], edges: npt.NDArray[np.float64]) -> list[float]:
    """Shares of values per bin (len(edges) + 1 bins), then the share missing."""
    total = len(values)
    missing = np.isnan(values)
    bins = np.searchsorted(edges, values[~missing], side="right")
    counts = np.bincount(bins, minlength=len(edges) + 1)
    return [float(n) / total for n in counts] + [float(missing.sum()) / total]


def _labels(kind: str, column: npt.NDArray[Any]) -> list[str]:
    if kind == BOOLEAN:
        out = []
        for v in column:
            f = float(v)
            out.append(MISSING if math.isnan(f) else ("true" if f else "false"))
        return out
    assert kind == CATEGORY
    return [MISSING if v is None else str(v) for v in column]


def _value_shares(labels: list[str], known: set[str] | None) -> dict[str, float]:
    """Shares of each value; values outside `known` (or beyond the 50 most frequent when
    building the reference) are pooled as OTHER."""
    counts = Counter(labels)
    keep = {v for v, _ in counts.most_common(50)} | {MISSING} if known is None else known
    pooled: Counter[str] = Counter()
    for value, n in counts.items():
        pooled[value if value in keep else OTHER] += n
    total = max(1, len(labels))
    return {k: n / total for k, n in sorted(pooled.items())}


def _psi(expected: list[float], actual: list[float]) -> float:
    total = 0.0
    for e, a in zip(expected, actual, strict=True):
        e, a = max(e, FLOOR), max(a, FLOOR)
        total += (a - e) * math.log(a / e)
    return total
