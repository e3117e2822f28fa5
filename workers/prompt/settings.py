"""The prompt component's settings: `AIFLEET_PROMPT_*` (README, configuration)."""

from __future__ import annotations

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from workers.prompt import tokens


class PromptSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="AIFLEET_PROMPT_", extra="ignore", frozen=True)

    max_template_bytes: int = Field(256 * 1024, ge=1, description="template text, all messages")
    max_template_messages: int = Field(256, ge=1)
    max_config_bytes: int = Field(64 * 1024, ge=2, description="config and metadata, as JSON")
    max_labels: int = Field(32, ge=1, description="labels one create may set")
    max_rendered_bytes: int = Field(1024 * 1024, ge=1)
    max_context_messages: int = Field(10_000, ge=1)
    max_context_documents: int = Field(1_000, ge=0)
    max_budget_tokens: int = Field(10_000_000, ge=1)
    approx_factor: float = Field(1.3, ge=1.0, le=10.0, description="non-OpenAI token estimate")
    preload_encodings: list[str] = Field(default_factory=lambda: list(tokens.ENCODINGS))
    cache_entries: int = Field(1024, ge=0, description="compiled templates kept; 0: no cache")
    cache_bytes: int = Field(64 * 1024 * 1024, ge=0)

    @field_validator("preload_encodings")
    @classmethod
    def _known_encodings(cls, value: list[str]) -> list[str]:
        unknown = set(value) - set(tokens.ENCODINGS)
        if unknown:
            raise ValueError(f"unknown encodings {sorted(unknown)}; known: {tokens.ENCODINGS}")
        return value
