"""Predicting with a loaded model: rows in, one result per row out (JSON values), and the
file-batch writer.

A classifier's answer is the most probable class with every class's probability (one
`predict_proba` call serves both); a regressor's a number; kmeans' the cluster index.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any, BinaryIO

import numpy as np
import numpy.typing as npt

from schemas.v1.ml_pb2 import MlPrediction
from workers.ml.models import LoadedModel
from workers.ml.signature import label

CHUNK_ROWS = 10_000


def predict(model: LoadedModel, matrix: npt.NDArray[Any]) -> list[dict[str, Any]]:
    """One `{"prediction", "probabilities"?}` per row of `matrix` (signature columns)."""
    if model.classifier:
        proba = model.pipeline.predict_proba(matrix)
        classes = [_plain(c) for c in model.pipeline.classes_]
        names = [label(c) for c in model.pipeline.classes_]
        # Plain Python numbers in one step (`tolist`), not a numpy scalar per value.
        return [
            {
                "prediction": classes[b],
                "probabilities": dict(zip(names, row, strict=True)),
            }
            for b, row in zip(np.argmax(proba, axis=1).tolist(), proba.tolist(), strict=True)
        ]
    return [{"prediction": _plain(v)} for v in model.pipeline.predict(matrix).tolist()]


def timed_predict(model: LoadedModel, matrix: npt.NDArray[Any]) -> list[dict[str, Any]]:
    """`predict` of one row, its CPU time added to the model's (where to run the next one)."""
    started = time.thread_time()
    found = predict(model, matrix)
    model.one_row.add(time.thread_time() - started)
    return found


def _plain(value: Any) -> Any:
    if isinstance(value, np.bool_ | bool):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    return value


def to_proto(result: dict[str, Any]) -> MlPrediction:
    out = MlPrediction(probabilities=result.get("probabilities", {}))
    value = result["prediction"]
    if isinstance(value, bool):
        out.prediction.bool_value = value
    elif isinstance(value, int | float):
        out.prediction.number_value = float(value)
    else:
        out.prediction.string_value = str(value)
    return out


def from_proto(message: MlPrediction) -> dict[str, Any]:
    """The cached form back (predictions round-trip through the cache as MlPrediction)."""
    kind = message.prediction.WhichOneof("kind")
    value: Any = getattr(message.prediction, kind) if kind else None
    out: dict[str, Any] = {"prediction": value}
    if message.probabilities:
        out["probabilities"] = dict(message.probabilities)
    return out


def chunks(matrix: npt.NDArray[Any]) -> Iterator[npt.NDArray[Any]]:
    for start in range(0, len(matrix), CHUNK_ROWS):
        yield matrix[start : start + CHUNK_ROWS]


def write_jsonl(results: list[dict[str, Any]], out: BinaryIO) -> None:
    for result in results:
        out.write(json.dumps(result, separators=(",", ":")).encode() + b"\n")
