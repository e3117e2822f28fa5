"""The preprocessing built from a signature, saved in front of the estimator.

Numbers: median imputation, then standard scaling. Booleans (0/1): the most frequent value
fills a gap. Categories: a missing value becomes its own category, then one-hot encoding that
ignores categories unseen in training and groups the rarest beyond `max_categories` into one
column, so a high-cardinality column cannot make the matrix unbounded. Columns are addressed by
position (the signature's order), so the saved pipeline holds no column-name machinery.
"""

from __future__ import annotations

from sklearn.base import BaseEstimator
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from workers.ml.data import BOOLEAN, CATEGORY, NUMBER
from workers.ml.signature import Signature

MISSING_CATEGORY = "__missing__"


def preprocessing(signature: Signature, *, max_categories: int) -> ColumnTransformer:
    by_kind: dict[str, list[int]] = {NUMBER: [], BOOLEAN: [], CATEGORY: []}
    for i, spec in enumerate(signature.features):
        by_kind[spec.kind].append(i)
    steps: list[tuple[str, BaseEstimator, list[int]]] = []
    if by_kind[NUMBER]:
        numbers = Pipeline(
            [("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())]
        )
        steps.append(("numbers", numbers, by_kind[NUMBER]))
    if by_kind[BOOLEAN]:
        steps.append(("booleans", SimpleImputer(strategy="most_frequent"), by_kind[BOOLEAN]))
    if by_kind[CATEGORY]:
        categories = Pipeline(
            [
                (
                    "impute",
                    SimpleImputer(
                        strategy="constant", fill_value=MISSING_CATEGORY, missing_values=None
                    ),
                ),
                (
                    "onehot",
                    OneHotEncoder(
                        handle_unknown="infrequent_if_exist", max_categories=max_categories
                    ),
                ),
            ]
        )
        steps.append(("categories", categories, by_kind[CATEGORY]))
    return ColumnTransformer(steps, remainder="drop")


def model_pipeline(
    signature: Signature, estimator: BaseEstimator, *, max_categories: int
) -> Pipeline:
    return Pipeline(
        [
            ("preprocess", preprocessing(signature, max_categories=max_categories)),
            ("model", estimator),
        ]
    )
