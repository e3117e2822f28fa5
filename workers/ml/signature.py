"""A version's signature (its features, their kinds and the categories seen) and the check of
prediction rows against it.

Rows become the 2-D object matrix the saved pipeline takes, columns in signature order. A row
must name every feature and no other; a value must be of the feature's kind or null (imputed as
in training). A category never seen in training is accepted (the one-hot encoder ignores it).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from workers.ml.data import BOOLEAN, CATEGORY, MAX_CATEGORY_CHARS, NUMBER, Table

CLASSIFICATION, REGRESSION, CLUSTERING = "classification", "regression", "clustering"


class FeatureError(ValueError):
    """A row that does not match the signature; `field` names the feature."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class FeatureSpec:
    name: str
    kind: str  # number, boolean or category
    categories: tuple[str, ...] = ()
    nullable: bool = False


@dataclass(frozen=True)
class Signature:
    features: tuple[FeatureSpec, ...]
    task: str
    target: str = ""
    classes: tuple[str, ...] = ()
    _index: dict[str, int] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        self._index.update({f.name: i for i, f in enumerate(self.features)})

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.features]

    def to_json(self) -> dict[str, Any]:
        return {
            "features": [
                {
                    "name": f.name,
                    "type": f.kind,
                    "categories": list(f.categories),
                    "nullable": f.nullable,
                }
                for f in self.features
            ],
            "task": self.task,
            "target": self.target,
            "classes": list(self.classes),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Signature:
        features = tuple(
            FeatureSpec(
                f["name"], f["type"], tuple(f.get("categories", ())), bool(f.get("nullable"))
            )
            for f in data["features"]
        )
        return cls(features, data["task"], data.get("target", ""), tuple(data.get("classes", ())))

    # -- checking rows ----------------------------------------------------------------------

    def matrix(self, rows: Sequence[Mapping[str, Any]], field: str) -> npt.NDArray[Any]:
        """The pipeline's input for `rows`; `field` prefixes the error's field (e.g.
        `features_list[3]`)."""
        out = np.empty((len(rows), len(self.features)), dtype=object)
        single = len(rows) == 1
        for r, row in enumerate(rows):
            where = field if single else f"{field}[{r}]"
            if len(row) != len(self.features) or any(k not in self._index for k in row):
                self._explain_keys(row, where)
            for c, spec in enumerate(self.features):
                out[r, c] = _value(spec, row[spec.name], f"{where}.{spec.name}")
        return out

    def _explain_keys(self, row: Mapping[str, Any], where: str) -> None:
        for key in row:
            if key not in self._index:
                raise FeatureError(f"{key!r} is not a feature of this model", f"{where}.{key}")
        for spec in self.features:
            if spec.name not in row:
                raise FeatureError(f"feature {spec.name!r} is missing", f"{where}.{spec.name}")

    def table_matrix(self, table: Table, field: str) -> npt.NDArray[Any]:
        """The pipeline's input from a file's columns: every feature present with its kind
        (extra columns are ignored, so a file may carry ids or the label)."""
        out = np.empty((table.rows, len(self.features)), dtype=object)
        for c, spec in enumerate(self.features):
            where = f"{field}.{spec.name}"
            if spec.name not in table.columns:
                raise FeatureError(f"feature {spec.name!r} is missing", where)
            kind = table.kinds[spec.name]
            if kind != spec.kind:
                raise FeatureError(
                    f"feature {spec.name!r} must be a {spec.kind}, not {kind}", where
                )
            values = table.columns[spec.name]
            out[:, c] = values
        return out


def _value(spec: FeatureSpec, value: Any, where: str) -> Any:
    if value is None:
        return None if spec.kind == CATEGORY else math.nan
    if spec.kind == NUMBER:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise FeatureError(f"feature {spec.name!r} must be a number", where)
        number = float(value)
        if not math.isfinite(number):
            raise FeatureError(f"feature {spec.name!r} must be a finite number", where)
        return number
    if spec.kind == BOOLEAN:
        if not isinstance(value, bool):
            raise FeatureError(f"feature {spec.name!r} must be true or false", where)
        return 1.0 if value else 0.0
    if not isinstance(value, str):
        raise FeatureError(f"feature {spec.name!r} must be a string (a category)", where)
    if len(value) > MAX_CATEGORY_CHARS:
        raise FeatureError(f"feature {spec.name!r} is too long", where)
    return value


def signature_of(
    table: Table,
    features: Sequence[str],
    *,
    task: str,
    target: str = "",
    classes: Sequence[str] = (),
    max_categories: int,
) -> Signature:
    """The signature of training columns; categories are the most frequent `max_categories`."""
    specs = []
    for name in features:
        values = table.columns[name]
        kind = table.kinds[name]
        if kind == CATEGORY:
            present = [v for v in values if v is not None]
            counts = Counter(present)
            categories = tuple(sorted(v for v, _ in counts.most_common(max_categories)))
            nullable = len(present) < len(values)
        else:
            categories = ()
            nullable = bool(np.isnan(values).any())
        specs.append(FeatureSpec(name, kind, categories, nullable))
    return Signature(tuple(specs), task, target, tuple(classes))


def label(value: Any) -> str:
    """A class label as text: 1 and 1.0 are "1", True is "true"."""
    if isinstance(value, bool | np.bool_):
        return "true" if value else "false"
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))
    if isinstance(value, np.integer):
        return str(int(value))
    return str(value)
