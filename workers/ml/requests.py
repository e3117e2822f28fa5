"""Checking a training request before anything is queued: a bad one is a 400 naming the field
and changes nothing.

Inline rows are parsed here already (cheap, and their errors are the caller's to fix now);
a file is checked to exist and to be within the size limit, its content is read by the job.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass
from typing import Any

from schemas.errors import BadRequest, PayloadTooLarge
from schemas.v1.ml_pb2 import MlData, TrainRequest
from workers.ml import data
from workers.ml.estimators import MODEL_TYPES, HyperparameterError, ModelType
from workers.ml.reference import check_name
from workers.ml.settings import MlSettings
from workers.runtime import validation as check
from workers.runtime.files import check_name as check_object

DEFAULT_VALIDATION_SPLIT = 0.2
MAX_VALIDATION_SPLIT = 0.5


@dataclass(frozen=True)
class TrainSpec:
    name: str
    kind: ModelType
    params: dict[str, Any]
    target: str
    features: list[str]
    validation_split: float
    random_state: int
    rows: list[dict[str, Any]] | None  # inline rows, or
    object: str  # a file in the Object Store
    format: str


def limits(settings: MlSettings, max_rows: int | None = None) -> data.Limits:
    return data.Limits(
        max_rows=max_rows or settings.max_training_rows,
        max_columns=settings.max_columns,
        max_decoded_bytes=settings.max_decoded_bytes,
    )


def bad_data(exc: data.DataError) -> BadRequest | PayloadTooLarge:
    if isinstance(exc, data.DataTooLarge):
        return PayloadTooLarge(str(exc), details={"field": exc.field, "limit": exc.limit})
    return BadRequest(str(exc), details={"field": exc.field})


def check_train(req: TrainRequest, settings: MlSettings) -> TrainSpec:
    name = check_name(req.name)
    model_type = check.choice(req.model_type, "model_type", sorted(MODEL_TYPES))
    kind = MODEL_TYPES[model_type]
    given = check.struct(
        req.hyperparameters, "hyperparameters", max_bytes=settings.max_hyperparameter_bytes
    )
    try:
        params = kind.check(given)
    except HyperparameterError as exc:
        raise BadRequest(str(exc), details={"field": f"hyperparameters.{exc.name}"}) from None
    split = DEFAULT_VALIDATION_SPLIT
    if req.HasField("validation_split"):
        split = check.number(
            req.validation_split, "validation_split", minimum=0, maximum=MAX_VALIDATION_SPLIT
        )
    target = check.text(req.target, "target", max_chars=data.MAX_NAME_CHARS, multiline=False)
    if kind.needs_target and not target:
        raise BadRequest(f"target is required for {model_type}", details={"field": "target"})
    if not kind.needs_target and target:
        raise BadRequest("kmeans takes no target", details={"field": "target"})
    check.items(req.features, "features", maximum=settings.max_columns)
    features = [
        check.text(f, f"features[{i}]", required=True, max_chars=128, multiline=False)
        for i, f in enumerate(req.features)
    ]
    rows, obj, fmt = check_data(req.training_data, "training_data", settings)
    spec = TrainSpec(name, kind, params, target, features, split, req.random_state, rows, obj, fmt)
    if rows is not None:
        check_columns(spec, settings)
    return spec


def check_data(
    source: MlData, field: str, settings: MlSettings, *, max_rows: int | None = None
) -> tuple[list[dict[str, Any]] | None, str, str]:
    """(rows, "", "") or (None, object, format)."""
    if source.rows and source.object:
        raise BadRequest(f"give {field}.rows or {field}.object, not both", details={"field": field})
    if source.rows:
        if source.format:
            raise BadRequest("format is for objects", details={"field": f"{field}.format"})
        check.items(source.rows, f"{field}.rows", maximum=max_rows or settings.max_training_rows)
        rows = [
            check.struct(r, f"{field}.rows[{i}]", max_depth=2) for i, r in enumerate(source.rows)
        ]
        return rows, "", ""
    if not source.object:
        raise BadRequest(f"{field} needs rows or an object", details={"field": field})
    obj = check_object(source.object, f"{field}.object")
    try:
        fmt = data.format_of(obj, source.format)
    except data.DataError as exc:
        raise BadRequest(str(exc), details={"field": f"{field}.format"}) from None
    return None, obj, fmt


def check_columns(spec: TrainSpec, settings: MlSettings) -> None:
    """Inline rows parse into columns that have the target and the features."""
    assert spec.rows is not None
    try:
        table = data.from_rows(spec.rows, limits(settings), "training_data.rows")
    except data.DataError as exc:
        raise bad_data(exc) from None
    if spec.target and spec.target not in table.columns:
        raise BadRequest(f"no row has the target {spec.target!r}", details={"field": "target"})
    for i, name in enumerate(spec.features):
        if name not in table.columns or name == spec.target:
            raise BadRequest(
                f"{name!r} is not a feature column of the rows",
                details={"field": f"features[{i}]"},
            )


def training_id(given: str, message_id: str | None) -> str:
    """The caller's id, else one derived from the job's Nats-Msg-Id (a job published directly),
    else a new UUID."""
    if given:
        return check.identifier(given, "training_id")
    if message_id:
        return "job-" + hashlib.sha256(message_id.encode()).hexdigest()[:32]
    return str(uuid.uuid4())


def rows_sha256(rows: list[dict[str, Any]]) -> str:
    canonical = json.dumps(rows, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()
