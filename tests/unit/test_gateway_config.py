"""Loading the gateway's model list: litellm's format, the aifleet section, and bad files."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from workers.gateway.config import GatewaySettings, TenantLimits, load_config
from workers.runtime.config import ConfigurationError


def settings(tmp_path: Path, body: object, **overrides: object) -> GatewaySettings:
    path = tmp_path / "models.yaml"
    path.write_text(body if isinstance(body, str) else yaml.safe_dump(body))
    return GatewaySettings(config=path, **overrides)  # type: ignore[arg-type]


OPENAI = {"model_name": "fast", "litellm_params": {"model": "openai/gpt-4o-mini"}}


def test_no_configuration_gives_the_offline_models(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a file or a key: offline chat and local embeddings, both defaults."""
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    config = load_config(GatewaySettings())
    assert [m["model_name"] for m in config.model_list] == ["offline", "all-minilm-l6-v2"]
    assert (config.default_model, config.default_embedding_model) == ("offline", "all-minilm-l6-v2")


def test_a_provider_key_adds_that_providers_models(monkeypatch: pytest.MonkeyPatch) -> None:
    """OPENAI_API_KEY alone makes OpenAI's everyday models available (offline stays default)."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    config = load_config(GatewaySettings())
    names = [m["model_name"] for m in config.model_list]
    assert "gpt-4o-mini" in names
    assert config.default_model == "offline"


def test_litellm_file_is_used_as_is_and_its_first_model_is_the_default(tmp_path: Path) -> None:
    """model_list and router_settings pass through; litellm_settings fill router gaps."""
    config = load_config(
        settings(
            tmp_path,
            {
                "model_list": [OPENAI],
                "router_settings": {"num_retries": 1},
                "litellm_settings": {"request_timeout": 30, "num_retries": 5},
            },
        )
    )
    assert config.model_list[0] == OPENAI
    assert config.router_settings == {"num_retries": 1, "timeout": 30}
    assert config.default_model == "fast"


def test_tenant_limits_inherit_the_default_limits(tmp_path: Path) -> None:
    """aifleet.limits.tenants.<t> overrides only what it names."""
    config = load_config(
        settings(
            tmp_path,
            {
                "model_list": [OPENAI],
                "aifleet": {
                    "limits": {
                        "default": {"requests_per_minute": 60},
                        "tenants": {"acme": {"budget_usd": 5, "budget_period": "day"}},
                    }
                },
            },
        )
    )
    assert config.limits_of("other") == TenantLimits(requests_per_minute=60)
    assert config.limits_of("acme") == TenantLimits(60, 0, 5, "day")


def test_environment_limits_are_the_base_of_the_file_limits(tmp_path: Path) -> None:
    """AIFLEET_GATEWAY_* limits apply to every tenant the file does not override."""
    config = load_config(settings(tmp_path, {"model_list": [OPENAI]}, tokens_per_minute=1000))
    assert config.limits_of("any").tokens_per_minute == 1000


@pytest.mark.parametrize(
    ("body", "complaint"),
    [
        ("model_list: [", "gateway config"),
        ("- just a list", "not a mapping"),
        ({"model_list": {"a": 1}}, "must be a list"),
        ({"model_list": [{"model_name": "x"}]}, "litellm_params.model"),
        ({"model_list": [OPENAI], "aifleet": {"default_model": "nope"}}, "'nope'"),
        (
            {"model_list": [OPENAI], "aifleet": {"limits": {"default": {"rpm": 1}}}},
            "unknown ['rpm']",
        ),
        (
            {
                "model_list": [OPENAI],
                "aifleet": {"limits": {"default": {"budget_period": "week"}}},
            },
            "invalid value",
        ),
        (
            {
                "model_list": [OPENAI],
                "aifleet": {"limits": {"default": {"requests_per_minute": -1}}},
            },
            "invalid value",
        ),
    ],
)
def test_bad_files_stop_the_start_naming_the_problem(
    tmp_path: Path, body: object, complaint: str
) -> None:
    """Malformed YAML, wrong shapes, unknown defaults or limits → ConfigurationError."""
    with pytest.raises(ConfigurationError, match=complaint.replace("[", r"\[")):
        load_config(settings(tmp_path, body))


def test_a_missing_file_is_a_configuration_error(tmp_path: Path) -> None:
    """A config path that does not exist is reported, not ignored."""
    with pytest.raises(ConfigurationError, match="gateway config"):
        load_config(GatewaySettings(config=tmp_path / "absent.yaml"))
