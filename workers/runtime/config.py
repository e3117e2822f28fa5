"""Process configuration from the environment (pydantic-settings).

`AIFLEET_*` variables plus the usual `NATS_URL`, `DATABASE_URL`, `REDIS_URL` and
`OTEL_EXPORTER_OTLP_ENDPOINT`. Invalid values fail at start with the variable named.
"""

from __future__ import annotations

from typing import Literal, TypeVar

from pydantic import AliasChoices, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class ConfigurationError(RuntimeError):
    """A setting a component needs is missing or unusable; the process cannot start."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="AIFLEET_", extra="ignore", frozen=True)

    nats_url: str = Field(
        "nats://127.0.0.1:4222", validation_alias=AliasChoices("NATS_URL", "AIFLEET_NATS_URL")
    )
    database_url: str | None = Field(
        None, validation_alias=AliasChoices("DATABASE_URL", "AIFLEET_DATABASE_URL")
    )
    redis_url: str | None = Field(
        None, validation_alias=AliasChoices("REDIS_URL", "AIFLEET_REDIS_URL")
    )
    otel_endpoint: str | None = Field(
        None, validation_alias=AliasChoices("OTEL_EXPORTER_OTLP_ENDPOINT", "AIFLEET_OTEL_ENDPOINT")
    )

    concurrency: int = Field(64, ge=1, le=100_000, description="in-flight handlers per component")
    request_timeout: float = Field(30.0, gt=0, description="deadline when a request names none")
    max_request_bytes: int = Field(4 * 1024 * 1024, ge=1024)
    drain_timeout: float = Field(25.0, ge=0, description="SIGTERM: wait this long for in-flight")
    nats_connect_timeout: float = Field(30.0, gt=0, description="first connection to NATS")
    dependency_timeout: float = Field(
        2.0, gt=0, description="connect/IO timeout to Redis, Postgres"
    )
    redis_max_connections: int = Field(
        100, ge=1, le=10_000, description="Redis connections per process (more wait for one)"
    )
    postgres_pool_size: int = Field(
        10, ge=1, le=1000, description="PostgreSQL connections per process (more wait for one)"
    )

    job_max_deliver: int = Field(5, ge=1, le=1000)
    job_ack_wait: float = Field(30.0, gt=0)
    job_backoff: list[float] = Field(default_factory=lambda: [1.0, 5.0, 30.0, 120.0])
    job_batch: int = Field(16, ge=1, le=1000)
    job_timeout: float = Field(300.0, gt=0, description="deadline of one job attempt")

    outbox_interval: float = Field(5.0, gt=0, description="seconds between outbox flushes")
    outbox_grace: float = Field(2.0, ge=0, description="age before the flusher takes an event")
    files_max_bytes: int | None = Field(
        None, ge=1, description="size limit of the files bucket when it is created; None: none"
    )

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["json", "console"] = "json"

    @field_validator("job_backoff")
    @classmethod
    def _backoff_positive(cls, value: list[float]) -> list[float]:
        if not value or any(v < 0 for v in value):
            raise ValueError("job_backoff needs at least one delay, none negative")
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value


S = TypeVar("S", bound=BaseSettings)


def load_settings(cls: type[S]) -> S:
    """A component's settings from the environment; an invalid value fails the start with a
    `ConfigurationError` naming the variable (the CLI turns it into exit status 2)."""
    try:
        return cls()
    except ValidationError as exc:
        prefix = cls.model_config.get("env_prefix", "")
        problems = "; ".join(
            f"{prefix}{'.'.join(str(p) for p in e['loc']).upper()}: {e['msg']}"
            for e in exc.errors()
        )
        raise ConfigurationError(f"invalid configuration: {problems}") from None
