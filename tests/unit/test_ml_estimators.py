"""Model types and hyperparameters checked against the estimators' own parameters."""

from __future__ import annotations

import pytest

from workers.ml.estimators import MODEL_TYPES, HyperparameterError, model_type


def test_the_seed_model_types_and_gradient_boosting_exist() -> None:
    """Every model type of the seed plus gradient boosting can be asked for."""
    assert {
        "classification",
        "regression",
        "logistic_regression",
        "linear_regression",
        "svm_classification",
        "svm_regression",
        "kmeans",
        "gradient_boosting_classification",
        "gradient_boosting_regression",
    } == set(MODEL_TYPES)


def test_an_unknown_hyperparameter_is_named() -> None:
    """A parameter the estimator does not have is refused with its name."""
    with pytest.raises(HyperparameterError) as err:
        model_type("classification").check({"n_trees": 10})
    assert err.value.name == "n_trees"
    assert "RandomForestClassifier" in str(err.value)


def test_an_invalid_hyperparameter_value_is_named_with_sklearns_reason() -> None:
    """scikit-learn's own constraint says what is wrong with the value."""
    with pytest.raises(HyperparameterError) as err:
        model_type("classification").check({"max_depth": 3, "n_estimators": -1})
    assert err.value.name == "n_estimators"
    assert "range" in str(err.value)
    with pytest.raises(HyperparameterError) as err:
        model_type("svm_classification").check({"kernel": "magic"})
    assert err.value.name == "kernel"


def test_parameters_the_component_owns_are_refused() -> None:
    """Threads, logging, warm starts and the seed are not the request's to set."""
    for name in ("n_jobs", "verbose", "warm_start", "random_state"):
        with pytest.raises(HyperparameterError) as err:
            model_type("classification").check({name: 1})
        assert err.value.name == name


def test_work_sizing_parameters_have_upper_bounds() -> None:
    """A million trees is refused before any training starts."""
    with pytest.raises(HyperparameterError) as err:
        model_type("classification").check({"n_estimators": 1_000_000})
    assert err.value.name == "n_estimators"


def test_valid_hyperparameters_are_kept_over_the_defaults() -> None:
    """Given values win; the component's defaults fill the rest."""
    params = model_type("logistic_regression").check({"C": 0.5})
    assert params == {"max_iter": 1000, "C": 0.5}


@pytest.mark.parametrize("name", sorted(MODEL_TYPES))
def test_every_model_type_builds_with_its_defaults(name: str) -> None:
    """An unfitted estimator comes out of the defaults of every type."""
    kind = model_type(name)
    estimator = kind.build(kind.check({}), random_state=0, folds=3)
    assert estimator.get_params()
