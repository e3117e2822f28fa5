"""The model types a training may ask for, and the check of their hyperparameters.

Hyperparameters are checked against the estimator's own parameters (`get_params()`) and its own
constraints (`_parameter_constraints`, what scikit-learn checks in `fit`), before any data is
read, so an unknown or invalid one is a 400 naming it rather than a failed training. A few
parameters belong to the component (threads, logging, warm starts, the seed) and are refused;
parameters that size the work (trees, iterations, clusters, kernel cache) have upper bounds.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sklearn.base import BaseEstimator
from sklearn.calibration import CalibratedClassifierCV
from sklearn.cluster import KMeans
from sklearn.ensemble import (
    GradientBoostingClassifier,
    GradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.svm import SVC, SVR
from sklearn.utils._param_validation import InvalidParameterError, validate_parameter_constraints

from workers.ml.signature import CLASSIFICATION, CLUSTERING, REGRESSION

# Set by the component, never by a request: threads are the worker's, logs are its own, every
# training starts fresh, and the seed is the request's `random_state`.
OWNED = {
    "n_jobs": "threads are set by the component",
    "verbose": "logging is the component's",
    "warm_start": "every training starts from scratch",
    "random_state": "use the request's random_state",
    "copy_X": "inputs are always copied",
}


class HyperparameterError(ValueError):
    def __init__(self, message: str, name: str) -> None:
        super().__init__(message)
        self.name = name


@dataclass(frozen=True)
class ModelType:
    name: str
    task: str
    estimator: type[BaseEstimator]
    # The component's defaults where scikit-learn's do not suit (e.g. more iterations).
    defaults: Mapping[str, Any] = field(default_factory=dict)
    # Upper bounds of parameters that size the work.
    bounds: Mapping[str, float] = field(default_factory=dict)
    # SVC gets class probabilities from a calibration on held-out folds (sklearn 1.9
    # deprecates `SVC(probability=True)` for this).
    calibrated: bool = False

    @property
    def needs_target(self) -> bool:
        return self.task != CLUSTERING

    def parameters(self) -> set[str]:
        return set(self.estimator().get_params(deep=False))

    def check(self, given: Mapping[str, Any]) -> dict[str, Any]:
        """The parameters to build with (defaults, then `given`); raises HyperparameterError
        naming the first unknown, owned, out-of-bounds or invalid one."""
        known = self.parameters()
        for name in given:
            if name in OWNED and name in known:
                raise HyperparameterError(f"{name} cannot be set: {OWNED[name]}", name)
            if name not in known:
                raise HyperparameterError(
                    f"{name} is not a parameter of {self.estimator.__name__}", name
                )
        params = {**self.defaults, **given}
        for name, bound in self.bounds.items():
            value = params.get(name)
            if isinstance(value, int | float) and not isinstance(value, bool) and value > bound:
                raise HyperparameterError(f"{name} is at most {bound:g} here", name)
        constraints = {
            k: v for k, v in self.estimator._parameter_constraints.items() if k in params
        }
        try:
            validate_parameter_constraints(constraints, params, self.estimator.__name__)
        except InvalidParameterError as exc:
            raise HyperparameterError(str(exc), _named(str(exc), params)) from None
        return params

    def build(self, params: Mapping[str, Any], random_state: int, folds: int) -> BaseEstimator:
        """An unfitted estimator; `folds` is the calibration's cross-validation (SVC)."""
        kwargs = dict(params)
        if "random_state" in self.parameters():
            kwargs["random_state"] = random_state
        estimator = self.estimator(**kwargs)
        if self.calibrated:
            return CalibratedClassifierCV(estimator, cv=folds, ensemble=False)
        return estimator


def _named(message: str, params: Mapping[str, Any]) -> str:
    """The parameter scikit-learn's message is about ("The 'C' parameter of SVC must be...")."""
    start = message.find("'")
    end = message.find("'", start + 1)
    name = message[start + 1 : end] if start != -1 and end != -1 else ""
    return name if name in params else next(iter(params), "")


_TREES = {"n_estimators": 1000, "max_depth": 1000, "max_leaf_nodes": 1_000_000}

MODEL_TYPES: dict[str, ModelType] = {
    t.name: t
    for t in (
        ModelType("classification", CLASSIFICATION, RandomForestClassifier, bounds=_TREES),
        ModelType("regression", REGRESSION, RandomForestRegressor, bounds=_TREES),
        ModelType(
            "logistic_regression",
            CLASSIFICATION,
            LogisticRegression,
            defaults={"max_iter": 1000},
            bounds={"max_iter": 100_000},
        ),
        ModelType("linear_regression", REGRESSION, LinearRegression),
        ModelType(
            "svm_classification",
            CLASSIFICATION,
            SVC,
            bounds={"max_iter": 10_000_000, "cache_size": 1024},
            calibrated=True,
        ),
        ModelType(
            "svm_regression",
            REGRESSION,
            SVR,
            bounds={"max_iter": 10_000_000, "cache_size": 1024},
        ),
        ModelType(
            "gradient_boosting_classification",
            CLASSIFICATION,
            GradientBoostingClassifier,
            bounds={**_TREES, "n_iter_no_change": 1000},
        ),
        ModelType(
            "gradient_boosting_regression",
            REGRESSION,
            GradientBoostingRegressor,
            bounds={**_TREES, "n_iter_no_change": 1000},
        ),
        ModelType(
            "kmeans",
            CLUSTERING,
            KMeans,
            bounds={"n_clusters": 1000, "n_init": 100, "max_iter": 100_000},
        ),
    )
}


def model_type(name: str) -> ModelType:
    found = MODEL_TYPES.get(name)
    if found is None:
        raise KeyError(name)
    return found


def plain_params(estimator: BaseEstimator) -> dict[str, Any]:
    """The estimator's own parameters as JSON values (what the registry records)."""
    source = estimator.estimator if isinstance(estimator, CalibratedClassifierCV) else estimator
    out: dict[str, Any] = {}
    for name, value in source.get_params(deep=False).items():
        if value is None or isinstance(value, bool | int | str):
            out[name] = value
        elif isinstance(value, float):
            out[name] = value if math.isfinite(value) else str(value)
        else:
            out[name] = str(value)
    return out
