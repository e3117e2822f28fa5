"""Gateway handlers: admit (tenant limits) → cache → route (litellm) → account (event, spans).

litellm is imported when the component starts, never when the module is imported: the CLI, the
bridge and other components discover this module without paying litellm's ~2 s import.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from google.protobuf import json_format

from schemas.errors import BadRequest, DeadlineExceeded, ServiceError
from schemas.v1 import gateway_pb2
from schemas.v1.common_pb2 import ChatMessage
from schemas.v1.gateway_pb2 import (
    EmbedRequest,
    EmbedResponse,
    GenerateChunk,
    GenerateRequest,
    GenerateResponse,
    ListModelsRequest,
    ListModelsResponse,
    RateLimitsRequest,
    RateLimitsResponse,
    Usage,
)
from workers.gateway import accounting
from workers.gateway.accounting import Operation
from workers.gateway.chat import chat_params, check_agent_id, tool_calls_of, usage_of
from workers.gateway.config import GatewayConfig, GatewaySettings, TenantLimits, load_config
from workers.gateway.limits import TenantQuota
from workers.gateway.outbox import EventOutbox
from workers.gateway.responses import ResponseCache
from workers.gateway.store import MIGRATIONS, SCHEMA, SemanticCache
from workers.runtime import validation as check
from workers.runtime.component import Component
from workers.runtime.config import load_settings
from workers.runtime.context import Context
from workers.runtime.logs import get_logger
from workers.runtime.postgres import migrate
from workers.runtime.resources import Resources

if TYPE_CHECKING:
    from workers.gateway.router import ModelRouter

MAX_TEXTS = 2048
MAX_TEXT_CHARS = 100_000
# The provider call ends this much before the caller's deadline, so the error reply still fits.
_DEADLINE_SLACK_S = 0.1


class GatewayService:
    def __init__(
        self,
        router: ModelRouter,
        quota: TenantQuota,
        cache: ResponseCache,
        settings: GatewaySettings,
        config: GatewayConfig,
        outbox: EventOutbox,
    ) -> None:
        self.outbox = outbox
        self.router = router
        self.quota = quota
        self.cache = cache
        self.settings = settings
        self.config = config

    async def generate(self, ctx: Context, req: GenerateRequest) -> GenerateResponse:
        alias, params, limits, op, cached = await self._begin_chat(ctx, req, stream=False)
        if cached is not None:
            return await self._served_from_cache(ctx, req, op, cached)
        with accounting.gen_ai_span(op, params, self.settings.capture_content) as span:
            try:
                async with self._deadline(ctx):
                    response = await self.router.complete(alias, params, self._provider_timeout)
            except Exception as exc:
                raise await self._failed(ctx, req.agent_id, op, span, exc) from exc
            reply = self._reply(op, response)
            accounting.finish_span(span, op, reply.message.content, self.settings.capture_content)
        await self.quota.record(ctx.tenant, limits, reply.usage.total_tokens, reply.cost_usd)
        await asyncio.gather(
            self.cache.keep(ctx, alias, params, req.cache, reply),
            accounting.publish(op, ctx, req.agent_id, self.outbox),
        )
        return reply

    async def generate_stream(
        self, ctx: Context, req: GenerateRequest
    ) -> AsyncIterator[GenerateChunk]:
        alias, params, limits, op, cached = await self._begin_chat(ctx, req, stream=True)
        if cached is not None:
            op.first_token_seen()
            for chunk in _replay(cached):
                yield chunk
            await self._served_from_cache(ctx, req, op, cached)
            return
        reply = GenerateResponse(id=op.id, model=alias, created=int(time.time()))
        text: list[str] = []
        calls: dict[int, Any] = {}
        with accounting.gen_ai_span(op, params, self.settings.capture_content) as span:
            try:
                async with self._deadline(ctx):
                    stream = await self.router.stream(alias, params, self._provider_timeout)
                    who = self.router.answerer(getattr(stream, "_hidden_params", None), alias)
                    op.model, op.provider = who.model, who.provider
                    yield GenerateChunk(
                        id=op.id, role="assistant", model=alias, provider_model=who.model
                    )
                    async for part in stream:
                        piece = self._chunk(op, part, reply, text, calls)
                        if piece is not None:
                            yield piece
            except Exception as exc:
                raise await self._failed(ctx, req.agent_id, op, span, exc) from exc
            who = self.router.answerer(getattr(stream, "_hidden_params", None), alias)
            reply.provider_model, reply.provider = who.model, who.provider
            if not reply.usage.total_tokens:  # a provider that does not report stream usage
                reply.usage.CopyFrom(self.router.count_usage(who, params, "".join(text)))
            reply.cost_usd = op.cost_usd = who.price.cost(
                reply.usage.prompt_tokens, reply.usage.completion_tokens
            )
            op.prompt_tokens = reply.usage.prompt_tokens
            op.completion_tokens = reply.usage.completion_tokens
            reply.message.CopyFrom(ChatMessage(role="assistant", content="".join(text)))
            reply.message.tool_calls.extend(calls[i] for i in sorted(calls))
            reply.latency_ms = op.latency_ms
            accounting.finish_span(span, op, reply.message.content, self.settings.capture_content)
        yield GenerateChunk(
            id=op.id,
            finish_reason=reply.finish_reason or "stop",
            usage=reply.usage,
            cost_usd=reply.cost_usd,
            model=alias,
            provider_model=reply.provider_model,
        )
        await self.quota.record(ctx.tenant, limits, reply.usage.total_tokens, reply.cost_usd)
        await asyncio.gather(
            self.cache.keep(ctx, alias, params, req.cache, reply),
            accounting.publish(op, ctx, req.agent_id, self.outbox),
        )

    async def embed(self, ctx: Context, req: EmbedRequest) -> EmbedResponse:
        alias = self.router.resolve(req.model, "embedding")
        check.integer(len(req.texts), "texts", minimum=1, maximum=MAX_TEXTS)
        for i, text in enumerate(req.texts):
            check.text(text, f"texts[{i}]", max_chars=MAX_TEXT_CHARS, control=True)
            if not text.strip():
                raise BadRequest(f"texts[{i}] is empty", details={"field": f"texts[{i}]"})
        check_agent_id(req.agent_id)
        if req.HasField("dimensions"):
            check.integer(req.dimensions, "dimensions", minimum=1, maximum=65_536)
        limits = self.config.limits_of(ctx.tenant)
        await self.quota.admit(ctx.tenant, limits)
        op = Operation("embeddings", alias, metadata={"texts": len(req.texts)})
        dims = req.dimensions if req.HasField("dimensions") else None
        with accounting.gen_ai_span(op, {}, capture_content=False) as span:
            try:
                async with self._deadline(ctx):
                    response = await self.router.embed(
                        alias, list(req.texts), dims, self._provider_timeout
                    )
            except Exception as exc:
                raise await self._failed(ctx, req.agent_id, op, span, exc) from exc
            who = self.router.answerer(getattr(response, "_hidden_params", None), alias)
            usage = usage_of(getattr(response, "usage", None))
            op.model, op.provider, op.prompt_tokens = who.model, who.provider, usage.prompt_tokens
            op.cost_usd = who.price.cost(usage.prompt_tokens, 0)
            accounting.finish_span(span, op, None, False)
        reply = EmbedResponse(
            model=alias,
            provider_model=who.model,
            usage=Usage(prompt_tokens=usage.prompt_tokens, total_tokens=usage.prompt_tokens),
            cost_usd=op.cost_usd,
        )
        for item in sorted(response.data, key=lambda d: _field(d, "index")):
            reply.embeddings.add().values.extend(_field(item, "embedding"))
        reply.dimensions = len(reply.embeddings[0].values) if reply.embeddings else 0
        await self.quota.record(ctx.tenant, limits, usage.prompt_tokens, op.cost_usd)
        await accounting.publish(op, ctx, req.agent_id, self.outbox)
        return reply

    async def list_models(self, ctx: Context, req: ListModelsRequest) -> ListModelsResponse:
        return ListModelsResponse(models=await self.router.models())

    async def rate_limits(self, ctx: Context, req: RateLimitsRequest) -> RateLimitsResponse:
        limits = self.config.limits_of(ctx.tenant)
        used = await self.quota.usage(ctx.tenant, limits)
        return RateLimitsResponse(
            requests_per_minute=limits.requests_per_minute,
            tokens_per_minute=limits.tokens_per_minute,
            budget_usd=limits.budget_usd,
            budget_period=limits.budget_period,
            requests_this_minute=used.requests_this_minute,
            tokens_this_minute=used.tokens_this_minute,
            spent_usd=used.spent_usd,
            minute_resets_in_s=used.minute_resets_in_s,
            period_resets_in_s=used.period_resets_in_s,
        )

    async def _begin_chat(
        self, ctx: Context, req: GenerateRequest, *, stream: bool
    ) -> tuple[str, dict[str, Any], TenantLimits, Operation, GenerateResponse | None]:
        """Check the request, admit it under the tenant's limits, and look it up in the cache:
        (alias, litellm parameters, limits, the operation, a cached reply or None)."""
        alias = self.router.resolve(req.model, "chat")
        params = chat_params(req)
        limits = self.config.limits_of(ctx.tenant)
        await self.quota.admit(ctx.tenant, limits)
        op = Operation("chat", alias, metadata=_metadata(req, stream=stream))
        cached = await self.cache.find(ctx, alias, params, req.cache)
        if cached is not None:
            cached.id = op.id  # this operation's id (its event's), not the original's
        return alias, params, limits, op, cached

    @property
    def _provider_timeout(self) -> float:
        """litellm's timeout: always the same value, because litellm caches its provider clients
        (and their connections) by timeout; a per-request value built a new client per call."""
        return self.settings.timeout_seconds

    def _deadline(self, ctx: Context) -> asyncio.Timeout:
        """The caller's deadline, less the time the error reply needs."""
        return asyncio.timeout(max(0.05, ctx.remaining() - _DEADLINE_SLACK_S))

    def _reply(self, op: Operation, response: Any) -> GenerateResponse:
        who = self.router.answerer(getattr(response, "_hidden_params", None), op.alias)
        choice = response.choices[0]
        usage = usage_of(getattr(response, "usage", None))
        op.model, op.provider = who.model, who.provider
        op.prompt_tokens, op.completion_tokens = usage.prompt_tokens, usage.completion_tokens
        op.cost_usd = who.price.cost(usage.prompt_tokens, usage.completion_tokens)
        op.finish_reasons = [str(choice.finish_reason or "stop")]
        message = ChatMessage(role="assistant", content=choice.message.content or "")
        message.tool_calls.extend(tool_calls_of(getattr(choice.message, "tool_calls", None)))
        return GenerateResponse(
            id=op.id,
            model=op.alias,
            provider_model=who.model,
            provider=who.provider,
            message=message,
            finish_reason=op.finish_reasons[0],
            usage=usage,
            cost_usd=op.cost_usd,
            latency_ms=op.latency_ms,
            created=int(time.time()),
        )

    def _chunk(
        self,
        op: Operation,
        part: Any,
        reply: GenerateResponse,
        text: list[str],
        calls: dict[int, Any],
    ) -> GenerateChunk | None:
        """Fold one litellm stream chunk into the reply; the contract's chunk, if it adds text
        or tool calls."""
        if getattr(part, "usage", None):
            reply.usage.CopyFrom(usage_of(part.usage))
        if not part.choices:
            return None
        choice = part.choices[0]
        if choice.finish_reason:
            reply.finish_reason = str(choice.finish_reason)
            op.finish_reasons = [reply.finish_reason]
        delta = choice.delta
        content = getattr(delta, "content", None) or ""
        fragments = tool_calls_of(getattr(delta, "tool_calls", None))
        if not content and not fragments:
            return None
        op.first_token_seen()
        text.append(content)
        for f in fragments:
            whole = calls.setdefault(f.index, type(f)(index=f.index, type="function"))
            whole.id = whole.id or f.id
            whole.function.name += f.function.name
            whole.function.arguments += f.function.arguments
        return GenerateChunk(id=op.id, delta=content, tool_calls=fragments)

    async def _served_from_cache(
        self, ctx: Context, req: GenerateRequest, op: Operation, cached: GenerateResponse
    ) -> GenerateResponse:
        op.cache_hit = True
        op.model, op.provider = cached.provider_model, cached.provider
        op.prompt_tokens = cached.usage.prompt_tokens
        op.completion_tokens = cached.usage.completion_tokens
        op.metadata.update(cache=cached.cache.kind, saved_cost_usd=cached.cache.saved_cost_usd)
        cached.latency_ms = op.latency_ms
        await accounting.publish(op, ctx, req.agent_id, self.outbox)
        return cached

    async def _failed(
        self, ctx: Context, agent_id: str, op: Operation, span: Any, exc: BaseException
    ) -> BaseException:
        """The error to raise for a failed provider call, after accounting for it."""
        from workers.gateway.router import provider_error

        if isinstance(exc, TimeoutError):
            error: BaseException | None = DeadlineExceeded(
                "the model did not answer before the request's deadline"
            )
        else:
            error = exc if isinstance(exc, ServiceError) else provider_error(exc)
        op.error_class = type(exc).__name__
        op.error_message = str(getattr(exc, "message", "") or exc)
        accounting.finish_span(span, op, None, False)
        await accounting.publish(op, ctx, agent_id, self.outbox)
        return error if error is not None else exc


def _replay(cached: GenerateResponse) -> list[GenerateChunk]:
    """A cached reply as a stream: role, the text, the tool calls, then the final chunk."""
    first = GenerateChunk(
        id=cached.id, role="assistant", model=cached.model, provider_model=cached.provider_model
    )
    body = GenerateChunk(id=cached.id, delta=cached.message.content)
    body.tool_calls.extend(cached.message.tool_calls)
    last = GenerateChunk(
        id=cached.id,
        finish_reason=cached.finish_reason,
        usage=cached.usage,
        model=cached.model,
        provider_model=cached.provider_model,
        cache=cached.cache,
    )
    return [first, body, last]


def _metadata(req: GenerateRequest, *, stream: bool) -> dict[str, Any]:
    """The caller's metadata, recorded with the operation, plus whether it streamed."""
    given = json_format.MessageToDict(req.metadata) if req.HasField("metadata") else {}
    return {**given, "stream": stream}


def _field(item: Any, name: str) -> Any:
    return item[name] if isinstance(item, dict) else getattr(item, name)


@asynccontextmanager
async def start(resources: Resources) -> AsyncIterator[GatewayService]:
    settings = load_settings(GatewaySettings)
    config = load_config(settings)
    # Imported by `preload` in a thread while the process connected; the Router is built off
    # the event loop too.
    from workers.gateway.router import ModelRouter

    router = await asyncio.to_thread(ModelRouter, config, embed_threads=settings.embed_threads)
    migrated = asyncio.Lock()
    store: list[SemanticCache] = []

    async def semantic() -> SemanticCache:
        """The semantic cache's table, migrated on first use: a gateway whose callers never ask
        for semantic caching needs no PostgreSQL."""
        async with migrated:
            if not store:
                pool = await resources.postgres()
                await migrate(pool, SCHEMA, MIGRATIONS)
                store.append(SemanticCache(pool))
        return store[0]

    cache = ResponseCache(settings, semantic, router.local_embedder)
    outbox = EventOutbox(resources.redis(), resources.events)
    service = GatewayService(
        router, TenantQuota(resources.redis()), cache, settings, config, outbox
    )
    tasks = [
        asyncio.create_task(_purge_expired(store), name="gateway-cache-purge"),
        asyncio.create_task(outbox.run(), name="gateway-event-outbox"),
    ]
    try:
        yield service
    finally:
        for task in tasks:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*tasks)


async def _purge_expired(store: list[SemanticCache]) -> None:
    """Delete expired semantic-cache rows every few minutes, once the table is in use."""
    while True:
        await asyncio.sleep(300)
        if store:
            try:
                await store[0].purge_expired()
            except Exception as exc:  # a failed purge is retried next round
                get_logger(component="gateway").warning(
                    "semantic cache purge failed", error=repr(exc)
                )


def import_litellm() -> None:
    """litellm's import (~2 s, ~165 MB) is the gateway's whole cold start."""
    import workers.gateway.router  # noqa: F401


component = Component(
    gateway_pb2.DESCRIPTOR.services_by_name["GatewayService"],
    start=start,
    preload=import_litellm,
    description="LLM gateway: routing, streaming, embeddings, limits, caching and cost",
)
