"""The gateway's one litellm Router: built at start from the model list, shared by every request.

Only this module and offline.py import litellm (the package's __init__ first sets the
environment so the import reads no `.env` and fetches nothing).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import litellm
from litellm import exceptions as errors
from litellm.router import Router
from litellm.types.utils import EmbeddingResponse, ModelResponse

from schemas.errors import (
    BadRequest,
    DeadlineExceeded,
    NotFound,
    RateLimited,
    ServiceError,
    Unavailable,
)
from schemas.v1.gateway_pb2 import Deployment, ModelInfo, Usage
from workers.gateway.config import GatewayConfig
from workers.gateway.embedding import MiniLM
from workers.gateway.offline import EMBEDDING_MODEL, PROVIDER, AifleetProvider
from workers.runtime.config import ConfigurationError

litellm.suppress_debug_info = True
# litellm logs every provider failure at ERROR with its own format; the gateway reports each one
# itself (error reply, llm_operation event, span), so its loggers only speak for critical issues.
for _logger in ("LiteLLM", "LiteLLM Router", "LiteLLM Proxy"):
    logging.getLogger(_logger).setLevel(logging.CRITICAL)
litellm.telemetry = False
litellm.disable_hf_tokenizer_download = True

# litellm 1.106 routes any request with `tools` through its MCP bridge, which imports the
# optional `mcp` package and fails without it; the gateway passes tools to the provider as
# they are, so the bridge is skipped (`_skip_mcp_handler=True` on every completion).
_ROUTER_DEFAULTS = {"num_retries": 2, "allowed_fails": 3, "cooldown_time": 30.0}


@dataclass(frozen=True)
class Price:
    """US dollars per token of one deployment."""

    input: float
    output: float

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return prompt_tokens * self.input + completion_tokens * self.output


@dataclass(frozen=True)
class Answerer:
    """The deployment that answered a call."""

    alias: str
    model: str
    provider: str
    price: Price


class ModelRouter:
    def __init__(self, config: GatewayConfig, *, embed_threads: int = 0) -> None:
        self._embedder: MiniLM | None = None
        self._embedder_lock = threading.Lock()
        self._embed_threads = embed_threads or None
        self._provider = AifleetProvider(self.local_embedder)
        litellm.custom_provider_map = [{"provider": PROVIDER, "custom_handler": self._provider}]
        litellm.custom_llm_provider_map_handlers = {}  # re-read the map for this router
        settings = {**_ROUTER_DEFAULTS, **config.router_settings}
        try:
            self.router = Router(model_list=[dict(m) for m in config.model_list], **settings)
        except (TypeError, ValueError) as exc:
            raise ConfigurationError(f"gateway model list: {exc}") from exc
        self.config = config
        self._fallbacks = _fallbacks(settings.get("fallbacks") or [])
        self._by_id: dict[str, Answerer] = {}
        self._modes: dict[str, str] = {}
        for d in self.router.registry().deployments() or []:
            params: dict[str, Any] = dict(d["litellm_params"])
            info: dict[str, Any] = dict(d.get("model_info") or {})
            model = str(params["model"])
            provider = model.split("/", 1)[0] if "/" in model else "openai"
            known = _known_info(model)
            price = Price(
                _number(params, info, known, "input_cost_per_token"),
                _number(params, info, known, "output_cost_per_token"),
            )
            self._by_id[str(info["id"])] = Answerer(d["model_name"], model, provider, price)
            self._modes.setdefault(
                d["model_name"], str(info.get("mode") or known.get("mode") or "chat")
            )
        self._in_process = self._in_process_embedding()

    def _in_process_embedding(self) -> dict[str, str]:
        """Aliases served by the in-process embedding model alone (one deployment, no
        fallbacks), with that deployment's id. These are embedded without the Router: it has
        nothing to choose, retry or cool down for a model in this process, and its per-call work
        (logging payloads, cost lookups, cooldown reads in Redis) cost ~10 ms of CPU a call,
        more than embedding a sentence (benchmarks/README.md, RAG ingest)."""
        groups: dict[str, list[tuple[str, Answerer]]] = {}
        for model_id, who in self._by_id.items():
            groups.setdefault(who.alias, []).append((model_id, who))
        return {
            alias: found[0][0]
            for alias, found in groups.items()
            if len(found) == 1
            and found[0][1].model == f"{PROVIDER}/{EMBEDDING_MODEL}"
            and not self._fallbacks.get(alias)
        }

    def local_embedder(self) -> MiniLM:
        """The offline embedding model, loaded on first use (~100 MB; a gateway that never
        embeds locally never loads it)."""
        with self._embedder_lock:
            if self._embedder is None:
                self._embedder = MiniLM.load(threads=self._embed_threads)
            return self._embedder

    def _default(self, mode: str) -> str:
        if mode == "embedding":
            return self.config.default_embedding_model
        return self.config.default_model

    def mode(self, alias: str) -> str | None:
        return self._modes.get(alias)

    def resolve(self, alias: str, mode: str) -> str:
        """The alias to call: the default when none is named; unknown or wrong kind → error."""
        alias = alias or (
            self.config.default_embedding_model
            if mode == "embedding"
            else self.config.default_model
        )
        found = self._modes.get(alias)
        if found is None:
            raise NotFound(
                f"model {alias!r} is not configured",
                details={"field": "model", "available": sorted(self._modes)},
            )
        if (found == "embedding") != (mode == "embedding"):
            raise BadRequest(
                f"model {alias!r} is a {found} model, not a {mode} model",
                details={"field": "model"},
            )
        return alias

    def answerer(self, hidden: dict[str, Any] | None, alias: str) -> Answerer:
        """Who answered, from litellm's hidden params (after fallbacks, not the alias asked)."""
        found = self._by_id.get(str((hidden or {}).get("model_id")))
        if found is not None:
            return found
        group = next((a for a in self._by_id.values() if a.alias == alias), None)
        return group or Answerer(alias, alias, "unknown", Price(0.0, 0.0))

    async def complete(self, alias: str, params: dict[str, Any], timeout: float) -> ModelResponse:
        response = await self.router.acompletion(
            model=alias, timeout=timeout, _skip_mcp_handler=True, **params
        )
        assert isinstance(response, ModelResponse)
        return response

    async def stream(
        self, alias: str, params: dict[str, Any], timeout: float
    ) -> AsyncIterator[Any]:
        return await self.router.acompletion(  # type: ignore[no-any-return]
            model=alias,
            stream=True,
            stream_options={"include_usage": True},
            timeout=timeout,
            _skip_mcp_handler=True,
            **params,
        )

    async def embed(
        self, alias: str, texts: list[str], dimensions: int | None, timeout: float
    ) -> EmbeddingResponse:
        model_id = self._in_process.get(alias)
        if model_id is not None and not dimensions:
            response = await self._provider.aembedding(EMBEDDING_MODEL, texts, EmbeddingResponse())
            response._hidden_params = {"model_id": model_id}
            return response
        extra: dict[str, Any] = {"dimensions": dimensions} if dimensions else {}
        response = await self.router.aembedding(model=alias, input=texts, timeout=timeout, **extra)
        assert isinstance(response, EmbeddingResponse)
        return response

    def count_usage(self, who: Answerer, params: dict[str, Any], completion: str) -> Usage:
        """Token counts by litellm's tokenizer for the model, when the provider gave none."""
        prompt = litellm.token_counter(model=who.model, messages=params["messages"])
        done = litellm.token_counter(model=who.model, text=completion) if completion else 0
        return Usage(prompt_tokens=prompt, completion_tokens=done, total_tokens=prompt + done)

    async def models(self) -> list[ModelInfo]:
        # The Router's health() entry point (litellm >= 1.110); the module-level helpers that took
        # the Router itself are deprecated there.
        health = self.router.health()
        ids = list(self._by_id)
        cooling = {
            model_id
            for model_id, _ in await health.cooldowns.async_get_active_cooldowns(
                model_ids=ids, parent_otel_span=None
            )
        }
        out: dict[str, ModelInfo] = {}
        for model_id, who in self._by_id.items():
            info = out.get(who.alias)
            if info is None:
                mode = self._modes[who.alias]
                info = out[who.alias] = ModelInfo(
                    name=who.alias,
                    mode=mode,
                    fallbacks=self._fallbacks.get(who.alias, []),
                    input_cost_per_token=who.price.input,
                    output_cost_per_token=who.price.output,
                    max_input_tokens=int(_known_info(who.model).get("max_input_tokens") or 0),
                    default=who.alias == self._default(mode),
                )
            info.deployments.append(
                Deployment(provider=who.provider, model=who.model, cooling_down=model_id in cooling)
            )
        return list(out.values())


def _fallbacks(raw: list[Any]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for entry in raw:
        if isinstance(entry, dict):
            for alias, targets in entry.items():
                out.setdefault(str(alias), []).extend(str(t) for t in targets or [])
    return out


def _known_info(model: str) -> dict[str, Any]:
    """litellm's price-table entry for a model, {} for one it does not know."""
    try:
        return dict(litellm.get_model_info(model))
    except Exception:
        return {}


def _number(params: dict[str, Any], info: dict[str, Any], known: dict[str, Any], key: str) -> float:
    for source in (params, info, known):
        value = source.get(key)
        if value is not None:
            return float(value)
    return 0.0


def provider_error(exc: BaseException) -> ServiceError | None:
    """The contract's error for a litellm/provider failure; None for anything else (a bug).

    The caller learns whether retrying can help: rate limits, timeouts and outages are
    retryable; a request the provider rejects, or a gateway whose credentials it rejects, is not.
    """
    name = type(exc).__name__
    message = str(getattr(exc, "message", "") or exc).split("\n", 1)[0][:300]
    details: dict[str, Any] = {"provider_error": name}
    if isinstance(exc, errors.RateLimitError):
        retry_after = _retry_after(exc)
        if retry_after is not None:
            details["retry_after_s"] = retry_after
        return RateLimited(f"the provider is rate limiting: {message}", details=details)
    if isinstance(exc, errors.Timeout):
        return DeadlineExceeded("the provider did not answer in time", details=details)
    if isinstance(exc, (errors.ContextWindowExceededError, errors.UnsupportedParamsError)):
        return BadRequest(message, details=details)
    if isinstance(exc, (errors.AuthenticationError, errors.PermissionDeniedError)):
        return Unavailable(
            "the provider rejected the gateway's credentials", details=details, retryable=False
        )
    if isinstance(exc, errors.NotFoundError):
        return Unavailable(
            "the provider does not know the configured model", details=details, retryable=False
        )
    if isinstance(exc, errors.BadRequestError):
        return BadRequest(f"the provider rejected the request: {message}", details=details)
    if "No deployments available" in str(exc) or name in ("RouterRateLimitError",):
        cooldown = getattr(exc, "cooldown_time", None)
        if cooldown:
            details["retry_after_s"] = float(cooldown)
        return Unavailable("every deployment of the model is cooling down", details=details)
    if isinstance(
        exc,
        (
            errors.ServiceUnavailableError,
            errors.InternalServerError,
            errors.APIConnectionError,
            errors.BadGatewayError,
            errors.APIError,
        ),
    ):
        return Unavailable(f"the provider failed: {message}", details=details)
    return None


def _retry_after(exc: BaseException) -> float | None:
    """The provider's Retry-After, which litellm keeps in `litellm_response_headers`."""
    for headers in (
        getattr(exc, "litellm_response_headers", None),
        getattr(getattr(exc, "response", None), "headers", None),
    ):
        value = (headers or {}).get("retry-after")
        if value is not None:
            try:
                return float(value)
            except (TypeError, ValueError):
                return None
    return None
