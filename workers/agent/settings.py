"""The agent component's settings: `AIFLEET_AGENT_*` (an invalid value stops the start)."""

from __future__ import annotations

import re

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from workers.agent.definitions import OPERATION


class AgentSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="AIFLEET_AGENT_", extra="ignore", frozen=True)

    max_message_bytes: int = Field(64 * 1024, ge=1, description="one chat message")
    history_messages: int = Field(200, ge=1, le=10_000, description="session messages considered")
    default_max_turns: int = Field(10, ge=1, le=50)
    default_token_cap: int = Field(
        50_000, ge=1, description="tokens per run when the agent names none"
    )
    max_token_cap: int = Field(1_000_000, ge=1)
    default_context_tokens: int = Field(8_000, ge=64, description="chat context budget")
    context_model: str = Field("gpt-4o-mini", description="tokenizer for aliases prompt cannot map")
    max_handoff_depth: int = Field(2, ge=0, le=5, description="nested agent-as-tool calls")
    max_tool_result_chars: int = Field(16_000, ge=100)
    max_argument_bytes: int = Field(64 * 1024, ge=64)
    http_timeout_seconds: float = Field(10.0, gt=0)
    http_max_timeout_seconds: float = Field(60.0, gt=0)
    http_response_bytes: int = Field(256 * 1024, ge=1)
    http_max_response_bytes: int = Field(4 * 1024 * 1024, ge=1)
    # Fleet operations a tool may name: read-only ones by default.
    fleet_tools: list[str] = Field(
        default_factory=lambda: [
            "rag.search",
            "rag.query",
            "cache.get",
            "ml.predict",
            "prompt.render",
            "gateway.embed",
        ]
    )
    embedding_model: str = Field("", description="gateway alias for archival memory; '' = default")
    open_create: bool = Field(
        True, description="any user may create agents and tools (else a create grant is needed)"
    )

    @field_validator("fleet_tools")
    @classmethod
    def _operations(cls, value: list[str]) -> list[str]:
        bad = [v for v in value if not re.match(OPERATION, v) or v.startswith("agent.")]
        if bad:
            raise ValueError(f"not component.op (or an agent operation): {bad}")
        return value
