"""Fitting one model: the feature columns and label from a table, a validation split, the
pipeline (preprocessing + estimator), and the metrics on the held-out rows.

Metrics are named as scikit-learn names them: `accuracy`, `f1` (binary; `f1_macro` with more
classes), `roc_auc` (binary; `roc_auc_ovr` with more classes), `rmse`, `mae`, `r2`,
`silhouette` (on at most 10,000 rows: it is quadratic) and `inertia`. With a validation split
of 0 they are computed on the training rows. The model kept is the one fitted on the training
rows only, so its metrics describe exactly it.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from sklearn import metrics as skm
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline

from workers.ml import drift
from workers.ml.data import BOOLEAN, CATEGORY, NUMBER, DataError, Table
from workers.ml.estimators import ModelType, plain_params
from workers.ml.pipeline import model_pipeline
from workers.ml.signature import CLASSIFICATION, REGRESSION, Signature, label, signature_of

SILHOUETTE_ROWS = 10_000
Progress = Callable[[str, float], None]


class TrainingError(ValueError):
    """The data cannot train this model (a failed training, with the reason)."""


@dataclass
class Trained:
    pipeline: Pipeline
    signature: Signature
    metrics: dict[str, float]
    params: dict[str, Any]
    profile: dict[str, Any]
    rows: int


def train(
    table: Table,
    kind: ModelType,
    params: Mapping[str, Any],
    *,
    target: str,
    features: Sequence[str],
    validation_split: float,
    random_state: int,
    max_categories: int,
    progress: Progress,
) -> Trained:
    names = _features(table, target, features, kind.needs_target)
    progress("preprocessing", 0.2)
    y = _labels(table, target, kind.task) if kind.needs_target else None
    classes = (
        [label(c) for c in np.unique(y)] if y is not None and kind.task == CLASSIFICATION else []
    )
    if kind.task == CLASSIFICATION and len(classes) < 2:
        raise TrainingError(f"the target {target!r} needs at least two classes")
    signature = signature_of(
        table,
        names,
        task=kind.task,
        target=target,
        classes=classes,
        max_categories=max_categories,
    )
    matrix = np.empty((table.rows, len(names)), dtype=object)
    for c, name in enumerate(names):
        matrix[:, c] = table.columns[name]
    x_train, x_test, y_train, y_test = _split(matrix, y, validation_split, random_state, kind.task)
    folds = _calibration_folds(y_train) if kind.calibrated else 0
    estimator = kind.build(params, random_state, folds)
    pipeline = model_pipeline(signature, estimator, max_categories=max_categories)
    progress("fitting", 0.3)
    try:
        pipeline.fit(x_train, y_train)
    except ValueError as exc:  # scikit-learn's own explanation of what the data lacks
        raise TrainingError(f"fit failed: {str(exc)[:300]}") from None
    progress("evaluating", 0.8)
    metrics = evaluate(pipeline, kind.task, x_test, y_test, random_state)
    profile = drift.profile(signature, x_train, seed=random_state)
    return Trained(pipeline, signature, metrics, plain_params(estimator), profile, len(x_train))


def _features(table: Table, target: str, features: Sequence[str], needs_target: bool) -> list[str]:
    if needs_target:
        if not target:
            raise DataError("target is required for this model type", "target")
        if target not in table.columns:
            raise DataError(f"the data has no column {target!r}", "target")
    elif target:
        raise DataError("kmeans takes no target", "target")
    for name in features:
        if name not in table.columns:
            raise DataError(f"the data has no column {name!r}", "features")
        if name == target:
            raise DataError("the target cannot be a feature", "features")
    names = list(features) or [n for n in table.columns if n != target]
    if not names:
        raise DataError("the data has no feature columns", "features")
    return names


def _labels(table: Table, target: str, task: str) -> npt.NDArray[Any]:
    values = table.columns[target]
    kind = table.kinds[target]
    missing = np.asarray([v is None for v in values]) if kind == CATEGORY else np.isnan(values)
    if missing.any():
        raise DataError(f"the target has {int(missing.sum())} missing values", "target")
    if task == REGRESSION:
        if kind != NUMBER:
            raise DataError("a regression target must be numbers", "target")
        return values
    if kind == BOOLEAN:
        return values.astype(bool)
    if kind == NUMBER and np.all(np.mod(values, 1) == 0):
        return values.astype(np.int64)
    return values


def _split(
    matrix: npt.NDArray[Any],
    y: npt.NDArray[Any] | None,
    share: float,
    seed: int,
    task: str,
) -> tuple[npt.NDArray[Any], npt.NDArray[Any], Any, Any]:
    if share == 0:
        return matrix, matrix, y, y
    n_test = math.ceil(len(matrix) * share)
    if n_test < 1 or len(matrix) - n_test < 2:
        raise TrainingError(f"{len(matrix)} rows are too few for a validation split of {share}")
    stratify = None
    if task == CLASSIFICATION and y is not None:
        counts = Counter(y.tolist())
        if min(counts.values()) >= 2 and n_test >= len(counts):
            stratify = y
    if y is None:
        x_train, x_test = train_test_split(matrix, test_size=n_test, random_state=seed)
        return x_train, x_test, None, None
    x_train, x_test, y_train, y_test = train_test_split(
        matrix, y, test_size=n_test, random_state=seed, stratify=stratify
    )
    return x_train, x_test, y_train, y_test


def _calibration_folds(y: npt.NDArray[Any]) -> int:
    fewest = min(Counter(y.tolist()).values())
    if fewest < 2:
        raise TrainingError("svm_classification needs at least two training rows of each class")
    return min(5, fewest)


def evaluate(
    pipeline: Pipeline, task: str, x: npt.NDArray[Any], y: Any, seed: int
) -> dict[str, float]:
    if task == CLASSIFICATION:
        return _classification(pipeline, x, y)
    predicted = pipeline.predict(x)
    if task == REGRESSION:
        out = {
            "rmse": float(skm.root_mean_squared_error(y, predicted)),
            "mae": float(skm.mean_absolute_error(y, predicted)),
        }
        if len(y) >= 2:
            out["r2"] = float(skm.r2_score(y, predicted))
        return out
    out = {"inertia": float(pipeline.named_steps["model"].inertia_)}
    n_labels = len(set(predicted.tolist()))
    if 2 <= n_labels <= len(x) - 1:
        features = pipeline.named_steps["preprocess"].transform(x)
        out["silhouette"] = float(
            skm.silhouette_score(
                features, predicted, sample_size=min(len(x), SILHOUETTE_ROWS), random_state=seed
            )
        )
    return out


def _classification(pipeline: Pipeline, x: npt.NDArray[Any], y: Any) -> dict[str, float]:
    predicted = pipeline.predict(x)
    classes = pipeline.classes_
    out = {"accuracy": float(skm.accuracy_score(y, predicted))}
    if len(classes) == 2:
        out["f1"] = float(skm.f1_score(y, predicted, pos_label=classes[1]))
    else:
        out["f1_macro"] = float(skm.f1_score(y, predicted, average="macro", labels=classes))
    if len(set(np.asarray(y).tolist())) == len(classes):
        proba = pipeline.predict_proba(x)
        if len(classes) == 2:
            out["roc_auc"] = float(skm.roc_auc_score(y == classes[1], proba[:, 1]))
        else:
            out["roc_auc_ovr"] = float(
                skm.roc_auc_score(y, proba, multi_class="ovr", labels=classes)
            )
    return {k: v for k, v in out.items() if math.isfinite(v)}
