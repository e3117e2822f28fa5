"""Registry and run rows as contract messages."""

from __future__ import annotations

from google.protobuf import json_format, struct_pb2

from schemas.v1.ml_pb2 import (
    MlFeature,
    MlModelSummary,
    MlModelVersion,
    MlPredictionJob,
    MlSignature,
    MlTraining,
)
from workers.ml.runs import JobRow, TrainingRow
from workers.ml.store import SummaryRow, VersionRow
from workers.runtime.validation import to_timestamp


def training(row: TrainingRow) -> MlTraining:
    return MlTraining(
        training_id=row.training_id,
        model_id=row.name,
        model_type=row.model_type,
        status=row.status,
        progress=row.progress,
        stage=row.stage,
        metrics=row.metrics,
        error=row.error,
        version=row.version,
        attempts=row.attempts,
        trained_by=row.trained_by,
        created_at=to_timestamp(row.created_at),
        started_at=to_timestamp(row.started_at),
        finished_at=to_timestamp(row.finished_at),
    )


def signature(data: dict[str, object]) -> MlSignature:
    features = data.get("features", [])
    assert isinstance(features, list)
    return MlSignature(
        features=[
            MlFeature(
                name=f["name"],
                type=f["type"],
                categories=f.get("categories", []),
                nullable=bool(f.get("nullable")),
            )
            for f in features
        ],
        target=str(data.get("target", "")),
        task=str(data.get("task", "")),
        classes=[str(c) for c in data.get("classes", [])],  # type: ignore[attr-defined]
    )


def version(row: VersionRow) -> MlModelVersion:
    params = json_format.ParseDict(row.params, struct_pb2.Struct())
    return MlModelVersion(
        name=row.name,
        version=row.version,
        model_type=row.model_type,
        params=params,
        metrics=row.metrics,
        signature=signature(row.signature),
        data_sha256=row.data_sha256,
        data_object=row.data_object,
        training_rows=row.training_rows,
        artifact_sha256=row.artifact_sha256,
        artifact_bytes=row.artifact_bytes,
        training_id=row.training_id,
        trained_by=row.trained_by,
        aliases=row.aliases,
        created_at=to_timestamp(row.created_at),
    )


def summary(row: SummaryRow) -> MlModelSummary:
    return MlModelSummary(
        name=row.name,
        latest_version=row.latest_version,
        model_type=row.model_type,
        version_count=row.version_count,
        aliases=row.aliases,
        updated_at=to_timestamp(row.updated_at),
    )


def job(row: JobRow) -> MlPredictionJob:
    return MlPredictionJob(
        job_id=row.job_id,
        model_id=row.name,
        version=row.version,
        status=row.status,
        progress=row.progress,
        input=row.input,
        output=row.output,
        rows=row.rows,
        error=row.error,
        created_at=to_timestamp(row.created_at),
        finished_at=to_timestamp(row.finished_at),
    )
