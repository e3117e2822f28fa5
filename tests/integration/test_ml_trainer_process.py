"""Trainings run in a forked child process: progress comes back, a time limit kills it, data
errors come back as reasons."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.support.ml import churn_rows
from workers.ml import artifacts
from workers.ml.runner import TrainingFailed, run_training


def spec(tmp_path: Path, **changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "data": {"rows": churn_rows(200)},
        "model_type": "classification",
        "params": {"n_estimators": 10},
        "target": "churned",
        "features": [],
        "validation_split": 0.2,
        "random_state": 0,
        "max_categories": 50,
        "limits": {"max_rows": 100_000, "max_columns": 100, "max_decoded_bytes": 1 << 30},
        "artifact": str(tmp_path / "model.skops"),
        "memory_bytes": 4 << 30,
        "threads": 1,
    }
    base.update(changes)
    return base


async def test_a_training_reports_its_stages_and_writes_a_loadable_artifact(
    tmp_path: Path,
) -> None:
    """Stages arrive in order; the artifact's digest is the one reported."""
    seen: list[str] = []

    async def progress(stage: str, share: float) -> None:
        seen.append(stage)

    result = await run_training(spec(tmp_path), timeout=120, on_progress=progress)
    assert seen == ["loading", "preprocessing", "fitting", "evaluating", "saving"]
    assert result["metrics"]["accuracy"] > 0.8
    path = tmp_path / "model.skops"
    assert artifacts.sha256_file(path) == result["artifact_sha256"]
    assert artifacts.load(path, sha256=result["artifact_sha256"], max_bytes=1 << 30)


async def test_a_training_over_its_time_limit_is_killed(tmp_path: Path) -> None:
    """A fit that would take far longer than the limit ends at the limit."""

    async def progress(stage: str, share: float) -> None:
        return None

    big = spec(
        tmp_path,
        data={"rows": churn_rows(200) * 100},
        params={"n_estimators": 1000},
    )
    with pytest.raises(TrainingFailed, match="longer than its limit"):
        await run_training(big, timeout=3, on_progress=progress)


async def test_bad_data_comes_back_as_a_reason_naming_the_field(tmp_path: Path) -> None:
    """A target the rows lack fails the training with the field named."""

    async def progress(stage: str, share: float) -> None:
        return None

    with pytest.raises(TrainingFailed) as err:
        await run_training(spec(tmp_path, target="nope"), timeout=120, on_progress=progress)
    assert err.value.field == "target"
