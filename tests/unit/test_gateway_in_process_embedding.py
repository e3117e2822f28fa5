"""An alias served only by the in-process embedding model is embedded without litellm's Router;
any alias the Router has a choice for (fallbacks, several deployments) still goes through it."""

from __future__ import annotations

from typing import Any

import pytest

from workers.gateway.config import GatewayConfig, GatewaySettings, TenantLimits, load_config
from workers.gateway.router import ModelRouter

LOCAL = {
    "model_name": "all-minilm-l6-v2",
    "litellm_params": {"model": "aifleet/all-minilm-l6-v2"},
    "model_info": {"mode": "embedding"},
}
REMOTE = {
    "model_name": "remote-embed",
    "litellm_params": {"model": "openai/text-embedding-3-small", "api_key": "sk-test"},
    "model_info": {"mode": "embedding"},
}


def routed(models: list[dict[str, Any]], settings: dict[str, Any]) -> ModelRouter:
    config = GatewayConfig(
        [dict(m) for m in models], settings, "all-minilm-l6-v2", "all-minilm-l6-v2", TenantLimits()
    )
    return ModelRouter(config)


def refuse_router(router: ModelRouter, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Make the Router's aembedding record its calls and fail, so using it shows."""
    calls: list[str] = []

    async def aembedding(*, model: str, **kwargs: Any) -> Any:
        calls.append(model)
        raise RuntimeError("the Router was called")

    monkeypatch.setattr(router.router, "aembedding", aembedding)
    return calls


async def test_the_default_embedding_alias_is_embedded_in_process(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No configuration: the local model answers without the Router, with its usage and the
    deployment that answered, as the Router would report them."""
    router = ModelRouter(load_config(GatewaySettings()))
    calls = refuse_router(router, monkeypatch)
    texts = ["The cat sits on the mat.", "Quarterly revenue grew by ten percent."]
    response = await router.embed("all-minilm-l6-v2", texts, None, 10)
    assert calls == []
    assert [len(d["embedding"]) for d in response.data] == [384, 384]
    assert response.usage is not None
    assert response.usage.prompt_tokens == sum(router.local_embedder().count_tokens(texts))
    who = router.answerer(response._hidden_params, "all-minilm-l6-v2")
    assert (who.model, who.provider) == ("aifleet/all-minilm-l6-v2", "aifleet")


@pytest.mark.parametrize(
    ("models", "settings", "dimensions"),
    [
        # Fallbacks are the Router's to follow.
        ([LOCAL, REMOTE], {"fallbacks": [{"all-minilm-l6-v2": ["remote-embed"]}]}, None),
        # So is balancing between two deployments of the alias.
        ([LOCAL, {**REMOTE, "model_name": "all-minilm-l6-v2"}], {}, None),
        # `dimensions` is a provider parameter the Router passes on.
        ([LOCAL], {}, 128),
    ],
    ids=["fallbacks", "two-deployments", "dimensions"],
)
async def test_what_the_router_has_a_say_in_goes_through_it(
    monkeypatch: pytest.MonkeyPatch,
    models: list[dict[str, Any]],
    settings: dict[str, Any],
    dimensions: int | None,
) -> None:
    """Fallbacks, several deployments or other dimensions: the alias is never short-cut."""
    router = routed(models, settings)
    calls = refuse_router(router, monkeypatch)
    with pytest.raises(RuntimeError):
        await router.embed("all-minilm-l6-v2", ["hello"], dimensions, 10)
    assert calls == ["all-minilm-l6-v2"]
