"""The gateway's configuration: a litellm model list (YAML) plus AIFLEET_GATEWAY_* variables.

The YAML is litellm's own format (`model_list`, `router_settings`, `litellm_settings`), so an
existing litellm proxy config works as is; an optional `aifleet:` section adds the defaults and
per-tenant limits litellm has no place for:

    aifleet:
      default_model: fast
      limits:
        default: {requests_per_minute: 600, tokens_per_minute: 200000}
        tenants:
          acme: {budget_usd: 50, budget_period: month}

Loading is pure (no litellm import) so a bad file is reported at start, naming the problem.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from workers.runtime.config import ConfigurationError

OFFLINE_ALIAS = "offline"
EMBEDDING_ALIAS = "all-minilm-l6-v2"

# The models always present unless the YAML defines the same names: the fleet answers with no
# key and no network.
OFFLINE_MODELS: list[dict[str, Any]] = [
    {
        "model_name": OFFLINE_ALIAS,
        "litellm_params": {"model": "aifleet/offline"},
        "model_info": {"mode": "chat"},
    },
    {
        "model_name": EMBEDDING_ALIAS,
        "litellm_params": {"model": "aifleet/all-minilm-l6-v2"},
        "model_info": {"mode": "embedding", "max_input_tokens": 256},
    },
]

# With no YAML, a provider key in the environment adds that provider's everyday models.
KEYED_MODELS: dict[str, list[dict[str, Any]]] = {
    "OPENAI_API_KEY": [
        {"model_name": "gpt-4o-mini", "litellm_params": {"model": "openai/gpt-4o-mini"}},
        {"model_name": "gpt-4o", "litellm_params": {"model": "openai/gpt-4o"}},
        {
            "model_name": "text-embedding-3-small",
            "litellm_params": {"model": "openai/text-embedding-3-small"},
            "model_info": {"mode": "embedding"},
        },
    ],
    "ANTHROPIC_API_KEY": [
        {
            "model_name": "claude-haiku",
            "litellm_params": {"model": "anthropic/claude-3-5-haiku-latest"},
        },
        {
            "model_name": "claude-sonnet",
            "litellm_params": {"model": "anthropic/claude-sonnet-4-20250514"},
        },
    ],
}

# litellm_settings keys that are Router settings under another name.
_LITELLM_SETTINGS = {
    "fallbacks": "fallbacks",
    "context_window_fallbacks": "context_window_fallbacks",
    "num_retries": "num_retries",
    "request_timeout": "timeout",
    "allowed_fails": "allowed_fails",
    "cooldown_time": "cooldown_time",
}

Period = Literal["day", "month"]


class GatewaySettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="AIFLEET_GATEWAY_", extra="ignore", frozen=True)

    config: Path | None = Field(None, description="litellm model list (YAML)")
    default_model: str = Field("", description="alias used when a request names none")
    default_embedding_model: str = ""
    requests_per_minute: int = Field(0, ge=0, description="per tenant; 0 = unlimited")
    tokens_per_minute: int = Field(0, ge=0, description="per tenant; 0 = unlimited")
    budget_usd: float = Field(0.0, ge=0, description="spend per period per tenant; 0 = none")
    budget_period: Period = "month"
    cache_ttl_seconds: int = Field(3600, ge=0, description="exact response cache; 0 = off")
    semantic_threshold: float = Field(0.9, gt=0, le=1)
    semantic_ttl_seconds: int = Field(86_400, ge=1)
    capture_content: bool = Field(False, description="record prompts and completions in spans")
    embed_threads: int = Field(0, ge=0, description="onnxruntime threads; 0 = its default")
    timeout_seconds: float = Field(120.0, gt=0, description="per provider call")


@dataclass(frozen=True)
class TenantLimits:
    requests_per_minute: int = 0
    tokens_per_minute: int = 0
    budget_usd: float = 0.0
    budget_period: Period = "month"


@dataclass(frozen=True)
class GatewayConfig:
    model_list: list[dict[str, Any]]
    router_settings: dict[str, Any]
    default_model: str
    default_embedding_model: str
    limits: TenantLimits
    tenant_limits: dict[str, TenantLimits] = field(default_factory=dict)

    def limits_of(self, tenant: str) -> TenantLimits:
        return self.tenant_limits.get(tenant, self.limits)


def load_config(settings: GatewaySettings) -> GatewayConfig:
    """The model list and limits from the YAML (if any), the keys and the settings."""
    raw: dict[str, Any] = {}
    if settings.config is not None:
        try:
            raw = yaml.safe_load(settings.config.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigurationError(f"gateway config {settings.config}: {exc}") from exc
        if not isinstance(raw, dict):
            raise ConfigurationError(f"gateway config {settings.config}: not a mapping")
    models = _model_list(raw.get("model_list"), configured=settings.config is not None)
    router = dict(_mapping(raw, "router_settings"))
    for key, target in _LITELLM_SETTINGS.items():
        value = _mapping(raw, "litellm_settings").get(key)
        if value is not None:
            router.setdefault(target, value)
    ours = _mapping(raw, "aifleet")
    limits_raw = _mapping(ours, "limits")
    base = TenantLimits(
        settings.requests_per_minute,
        settings.tokens_per_minute,
        settings.budget_usd,
        settings.budget_period,
    )
    default_limits = _limits(_mapping(limits_raw, "default"), base, "default")
    tenants = {
        str(t): _limits(v, default_limits, f"tenants.{t}")
        for t, v in _mapping(limits_raw, "tenants").items()
    }
    names = {m["model_name"]: m for m in models}
    chat = [n for n, m in names.items() if _mode(m) != "embedding"]
    default = settings.default_model or str(ours.get("default_model") or "")
    default_embedding = settings.default_embedding_model or str(
        ours.get("default_embedding_model") or ""
    )
    default = default or (chat[0] if settings.config is not None and chat else OFFLINE_ALIAS)
    default_embedding = default_embedding or EMBEDDING_ALIAS
    for name in (default, default_embedding):
        if name not in names:
            raise ConfigurationError(f"gateway default model {name!r} is not in the model list")
    return GatewayConfig(models, router, default, default_embedding, default_limits, tenants)


def _model_list(raw: Any, *, configured: bool) -> list[dict[str, Any]]:
    if raw is None:
        raw = (
            []
            if configured
            else [m for k, ms in KEYED_MODELS.items() if os.environ.get(k) for m in ms]
        )
    if not isinstance(raw, list):
        raise ConfigurationError("gateway config: model_list must be a list")
    models: list[dict[str, Any]] = []
    for i, entry in enumerate(raw):
        if (
            not isinstance(entry, dict)
            or not isinstance(entry.get("model_name"), str)
            or not isinstance(entry.get("litellm_params"), dict)
            or not isinstance(entry["litellm_params"].get("model"), str)
        ):
            raise ConfigurationError(
                f"gateway config: model_list[{i}] needs model_name and litellm_params.model"
            )
        models.append(entry)
    defined = {m["model_name"] for m in models}
    return models + [m for m in OFFLINE_MODELS if m["model_name"] not in defined]


def _mapping(raw: dict[str, Any], key: str) -> dict[str, Any]:
    value = raw.get(key) or {}
    if not isinstance(value, dict):
        raise ConfigurationError(f"gateway config: {key} must be a mapping")
    return value


def _limits(raw: Any, base: TenantLimits, where: str) -> TenantLimits:
    if not isinstance(raw, dict):
        raise ConfigurationError(f"gateway config: aifleet.limits.{where} must be a mapping")
    unknown = set(raw) - set(TenantLimits.__dataclass_fields__)
    if unknown:
        raise ConfigurationError(
            f"gateway config: aifleet.limits.{where}: unknown {sorted(unknown)}"
        )
    try:
        limits = replace(base, **raw)
        valid = (
            int(limits.requests_per_minute) >= 0
            and int(limits.tokens_per_minute) >= 0
            and float(limits.budget_usd) >= 0
            and limits.budget_period in ("day", "month")
        )
    except (TypeError, ValueError):
        valid = False
    if not valid:
        raise ConfigurationError(f"gateway config: aifleet.limits.{where} has an invalid value")
    return limits


def _mode(model: dict[str, Any]) -> str:
    return str((model.get("model_info") or {}).get("mode") or "")
