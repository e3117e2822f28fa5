"""Training: the pipeline built from the data, the split, metrics named as scikit-learn does,
the signature and the check of prediction rows against it."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from tests.support.ml import churn_rows, price_rows
from workers.ml.data import DataError, Limits, from_rows
from workers.ml.estimators import MODEL_TYPES, model_type
from workers.ml.signature import FeatureError, Signature
from workers.ml.training import Trained, TrainingError, train

LIMITS = Limits(max_rows=100_000, max_columns=100, max_decoded_bytes=1 << 30)


def fit(name: str, rows: list[dict[str, Any]], target: str, **kwargs: Any) -> Trained:
    kind = model_type(name)
    options: dict[str, Any] = {
        "features": [],
        "validation_split": 0.2,
        "random_state": 0,
        "max_categories": 50,
    }
    options.update(kwargs)
    params = options.pop("params", {})
    return train(
        from_rows(rows, LIMITS),
        kind,
        kind.check(params),
        target=target,
        progress=lambda stage, share: None,
        **options,
    )


CLASSIFIERS = sorted(n for n, t in MODEL_TYPES.items() if t.task == "classification")
REGRESSORS = sorted(n for n, t in MODEL_TYPES.items() if t.task == "regression")


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_classifiers_learn_the_rule_and_report_classification_metrics(name: str) -> None:
    """accuracy, f1 and roc_auc on the held-out rows; the rule is learnt well."""
    trained = fit(name, churn_rows(400), "churned")
    assert set(trained.metrics) == {"accuracy", "f1", "roc_auc"}
    assert trained.metrics["accuracy"] > 0.8
    assert trained.signature.classes == ("no", "yes")
    assert trained.rows == 320


@pytest.mark.parametrize("name", REGRESSORS)
def test_regressors_report_rmse_mae_and_r2(name: str) -> None:
    """Regression metrics under their scikit-learn names."""
    trained = fit(name, price_rows(300), "price")
    assert set(trained.metrics) == {"rmse", "mae", "r2"}
    if name != "svm_regression":  # unscaled target: SVR's epsilon-tube needs tuning
        assert trained.metrics["r2"] > 0.8


def test_more_than_two_classes_report_macro_f1_and_one_vs_rest_auc() -> None:
    """Multiclass metrics carry their averaging in the name."""
    rows = churn_rows(300)
    for row in rows:
        row["plan_label"] = row.pop("plan")
    trained = fit("logistic_regression", rows, "plan_label")
    assert {"accuracy", "f1_macro", "roc_auc_ovr"} <= set(trained.metrics)


def test_kmeans_takes_no_target_and_reports_silhouette_and_inertia() -> None:
    """Clustering metrics; a target for kmeans is refused."""
    rows = [{k: v for k, v in r.items() if k != "churned"} for r in churn_rows(200)]
    trained = fit("kmeans", rows, "", params={"n_clusters": 3})
    assert set(trained.metrics) == {"silhouette", "inertia"}
    with pytest.raises(DataError) as err:
        fit("kmeans", churn_rows(50), "churned")
    assert err.value.field == "target"


def test_a_validation_split_of_zero_measures_on_the_training_rows() -> None:
    """Every row trains; metrics are computed on them."""
    trained = fit("logistic_regression", churn_rows(100), "churned", validation_split=0.0)
    assert trained.rows == 100


def test_the_target_must_exist_and_have_two_classes() -> None:
    """A missing target column or a single class fails with the reason."""
    with pytest.raises(DataError):
        fit("classification", churn_rows(50), "nope")
    rows = [{**r, "churned": "yes"} for r in churn_rows(50)]
    with pytest.raises(TrainingError):
        fit("classification", rows, "churned")


def test_a_regression_target_must_be_numbers() -> None:
    """Regressing on text is refused."""
    with pytest.raises(DataError):
        fit("regression", churn_rows(50), "churned")


def test_the_signature_records_kinds_categories_and_missing_values() -> None:
    """Features in order with their kind; categories seen; nullable where rows lacked a value."""
    rows = churn_rows(100)
    rows[3]["usage"] = None
    trained = fit("classification", rows, "churned")
    features = {f.name: f for f in trained.signature.features}
    assert [f.name for f in trained.signature.features] == ["usage", "tenure", "plan", "active"]
    assert features["plan"].kind == "category"
    assert features["plan"].categories == ("basic", "plus", "pro")
    assert features["usage"].nullable
    assert not features["tenure"].nullable
    assert Signature.from_json(trained.signature.to_json()) == trained.signature


def test_raw_features_predict_through_the_saved_preprocessing() -> None:
    """A row of raw values (strings, booleans, a missing number) gives a class and
    probabilities; an unseen category is accepted."""
    trained = fit("classification", churn_rows(400), "churned")
    matrix = trained.signature.matrix(
        [
            {"usage": 5.0, "tenure": 3, "plan": "basic", "active": True},
            {"usage": 95.0, "tenure": 40, "plan": "enterprise", "active": False},
            {"usage": None, "tenure": 40, "plan": "pro", "active": None},
        ],
        "features_list",
    )
    predicted = trained.pipeline.predict(matrix)
    assert predicted[:2].tolist() == ["yes", "no"]
    proba = trained.pipeline.predict_proba(matrix)
    assert np.allclose(proba.sum(axis=1), 1.0)


@pytest.mark.parametrize(
    ("row", "field"),
    [
        ({"usage": 1.0, "tenure": 3, "plan": "basic"}, "features.active"),
        ({"usage": 1.0, "tenure": 3, "plan": "basic", "active": True, "x": 1}, "features.x"),
        ({"usage": "high", "tenure": 3, "plan": "basic", "active": True}, "features.usage"),
        ({"usage": 1.0, "tenure": 3, "plan": 7, "active": True}, "features.plan"),
        ({"usage": 1.0, "tenure": 3, "plan": "basic", "active": 1}, "features.active"),
        ({"usage": True, "tenure": 3, "plan": "basic", "active": True}, "features.usage"),
        ({"usage": math.inf, "tenure": 3, "plan": "basic", "active": True}, "features.usage"),
    ],
)
def test_rows_not_matching_the_signature_name_the_feature(row: dict[str, Any], field: str) -> None:
    """Missing, unknown and wrongly typed features are refused, naming the feature."""
    trained = fit("logistic_regression", churn_rows(60), "churned")
    with pytest.raises(FeatureError) as err:
        trained.signature.matrix([row], "features")
    assert err.value.field == field


def test_batch_rows_are_named_by_their_index() -> None:
    """In a batch the field names the row: features_list[1].plan."""
    trained = fit("logistic_regression", churn_rows(60), "churned")
    good = {"usage": 1.0, "tenure": 3, "plan": "basic", "active": True}
    with pytest.raises(FeatureError) as err:
        trained.signature.matrix([good, {**good, "plan": 1}], "features_list")
    assert err.value.field == "features_list[1].plan"
