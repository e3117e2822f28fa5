"""The generator's settings: `AIFLEET_GENERATOR_*` (an invalid value stops the start, exit 2)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class GeneratorSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="AIFLEET_GENERATOR_", extra="ignore", frozen=True)

    max_prompt_bytes: int = Field(16 * 1024, ge=1, le=1024 * 1024, description="a description")
    max_output_tokens: int = Field(
        4096, ge=256, le=100_000, description="completion tokens of one drafting call"
    )
    temperature: float = Field(0.2, ge=0, le=2, description="of the drafting calls")
    cache_ttl_seconds: float = Field(
        86_400.0, gt=0, description="how long a cached definition answers an identical request"
    )
    # Bounds a generated agent must stay within (the agent component's own are wider).
    max_turns: int = Field(20, ge=1, le=50)
    max_tokens_per_run: int = Field(200_000, ge=1)
    max_agent_output_tokens: int = Field(16_384, ge=1)
    max_context_tokens: int = Field(128_000, ge=1)
    max_tools: int = Field(16, ge=0, le=64, description="tools a generated agent may list")
