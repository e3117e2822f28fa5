"""Drift: PSI and KS per feature against the training reference."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from tests.support.ml import churn_rows
from workers.ml import drift
from workers.ml.data import Limits, from_rows
from workers.ml.signature import Signature, signature_of

LIMITS = Limits(100_000, 100, 1 << 30)


def matrix_of(rows: list[dict[str, Any]]) -> tuple[Signature, npt.NDArray[Any]]:
    table = from_rows(rows, LIMITS)
    names = ["usage", "tenure", "plan", "active"]
    sig = signature_of(table, names, task="classification", max_categories=50)
    m = np.empty((table.rows, len(names)), dtype=object)
    for c, n in enumerate(names):
        m[:, c] = table.columns[n]
    return sig, m


def test_rows_from_the_training_distribution_do_not_drift() -> None:
    """Fresh rows of the same generator: PSI low, KS not significant, nothing drifted."""
    sig, train_m = matrix_of(churn_rows(2000, seed=1))
    reference = drift.profile(sig, train_m, seed=0)
    _, recent = matrix_of(churn_rows(500, seed=2))
    found = drift.compare(sig, reference, recent, psi_threshold=0.2, p_value=0.01)
    assert [f.name for f in found if f.drifted] == []
    assert all(f.psi < 0.1 for f in found)


def test_a_shifted_number_and_a_changed_category_mix_drift() -> None:
    """Usage doubled and every plan `pro`: both are flagged, tenure is not."""
    sig, train_m = matrix_of(churn_rows(2000, seed=1))
    reference = drift.profile(sig, train_m, seed=0)
    rows = churn_rows(500, seed=2)
    for r in rows:
        r["usage"] = float(r["usage"]) * 2 + 50
        r["plan"] = "pro"
    _, recent = matrix_of(rows)
    found = {
        f.name: f for f in drift.compare(sig, reference, recent, psi_threshold=0.2, p_value=0.01)
    }
    assert found["usage"].drifted
    assert found["usage"].ks_p_value < 0.01
    assert found["plan"].drifted
    assert not found["tenure"].drifted
    assert "pro" in found["plan"].summary


def test_missing_values_are_their_own_bin() -> None:
    """A feature that is suddenly always missing drifts and reports its missing share."""
    sig, train_m = matrix_of(churn_rows(1000, seed=1))
    reference = drift.profile(sig, train_m, seed=0)
    rows = churn_rows(200, seed=3)
    for r in rows:
        r["tenure"] = None
    rows[0]["tenure"] = 5
    _, recent = matrix_of(rows)
    found = {
        f.name: f for f in drift.compare(sig, reference, recent, psi_threshold=0.2, p_value=0.01)
    }
    assert found["tenure"].drifted
    assert found["tenure"].missing_share > 0.99
