"""The ML component's settings: `AIFLEET_ML_*` (invalid values stop the worker, exit 2)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

MIB = 1024 * 1024


class MlSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="AIFLEET_ML_", extra="ignore", frozen=True)

    max_training_rows: int = Field(1_000_000, ge=10, description="rows one training may read")
    max_columns: int = Field(500, ge=2, description="columns of a training or batch file")
    max_file_bytes: int = Field(256 * MIB, ge=1024, description="training or batch file size")
    max_decoded_bytes: int = Field(1024 * MIB, ge=1024, description="Parquet, once decoded")
    max_categories: int = Field(100, ge=2, le=10_000, description="one-hot columns per feature")
    max_hyperparameter_bytes: int = Field(16 * 1024, ge=64)
    train_timeout_seconds: float = Field(240.0, gt=0, description="one training's time limit")
    train_memory_bytes: int = Field(4096 * MIB, ge=0, description="a training's address space")
    train_threads: int = Field(1, ge=1, le=256, description="BLAS/OpenMP threads of a training")
    max_concurrent_trainings: int = Field(1, ge=1, le=64, description="per worker")
    max_artifact_bytes: int = Field(1024 * MIB, ge=MIB, description="an artifact, unpacked")
    model_cache_bytes: int = Field(512 * MIB, ge=0, description="loaded models kept per worker")
    max_batch_rows: int = Field(10_000, ge=1, description="rows of an inline predict_batch")
    max_file_batch_rows: int = Field(1_000_000, ge=1, description="rows of a file batch")
    prediction_cache_ttl_seconds: float = Field(
        0.0, ge=0, description="cache predictions through the cache component; 0: off"
    )
    alias_cache_seconds: float = Field(
        1.0, ge=0, le=60, description="longest a replica keeps what a model reference names"
    )
    drift_window: int = Field(10_000, ge=0, description="prediction inputs kept per version")
    drift_flush_seconds: float = Field(2.0, gt=0, description="how often inputs are written")
