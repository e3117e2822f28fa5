"""The gateway with no configuration at all: the offline text model and local embeddings, the
response caches, limits and accounting — real NATS, Valkey, PostgreSQL, no provider."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Mapping

import numpy as np
import pytest
from nats.aio.client import Client as NATS

from aifleet.embedded import EmbeddedNats, EmbeddedPostgres, EmbeddedValkey
from schemas.errors import BadRequest, NotFound, RateLimited
from schemas.v1.gateway_pb2 import (
    EmbedRequest,
    EmbedResponse,
    GenerateChunk,
    ListModelsRequest,
    ListModelsResponse,
    RateLimitsRequest,
    RateLimitsResponse,
)
from schemas.v1.llmops_pb2 import LlmOperationEvent
from subjects import HEADER_MSG_ID
from tests.conftest import NatsFactory
from tests.support.gateway import (
    ask,
    configure,
    connected,
    fresh_minute,
    generate,
    operations,
    running_gateway,
)
from tests.support.polling import eventually
from workers.gateway.offline import NOTICE
from workers.runtime.client import Client
from workers.runtime.worker import Worker


@pytest.fixture(scope="module")
async def worker(
    nats_server: EmbeddedNats, valkey: EmbeddedValkey, postgres: EmbeddedPostgres
) -> AsyncIterator[Worker]:
    with pytest.MonkeyPatch.context() as mp:
        configure(mp, requests_per_minute=0)
        mp.delenv("OPENAI_API_KEY", raising=False)
        mp.delenv("ANTHROPIC_API_KEY", raising=False)
        async with running_gateway(nats_server.url, valkey.url, postgres.dsn) as w:
            yield w


@pytest.fixture
def tenant() -> str:
    return "g" + uuid.uuid4().hex[:12]


@pytest.fixture
def client(nc: NATS) -> Client:
    return Client(nc, timeout=20.0)


async def test_offline_model_says_it_is_offline_and_echoes(
    worker: Worker, client: Client, tenant: str
) -> None:
    """With no configuration the reply is the offline model's notice and an echo."""
    reply = await generate(client, tenant, ask("What is NATS?"))
    assert reply.message.content.startswith(NOTICE)
    assert "What is NATS?" in reply.message.content
    assert reply.model == "offline"
    assert reply.provider_model == "aifleet/offline"
    assert reply.finish_reason == "stop"
    assert reply.usage.prompt_tokens > 0
    assert reply.usage.completion_tokens > 0
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens
    assert reply.cost_usd == 0.0
    assert not reply.HasField("cache")


async def test_offline_model_is_deterministic(worker: Worker, client: Client, tenant: str) -> None:
    """The same request gives the same text (no cache involved)."""
    req = ask("same words", cache={"skip": True})
    first, second = await generate(client, tenant, req), await generate(client, tenant, req)
    assert first.message.content == second.message.content
    assert first.id != second.id


async def test_max_tokens_cuts_the_reply_with_length(
    worker: Worker, client: Client, tenant: str
) -> None:
    """max_tokens bounds the completion and finish_reason says so."""
    reply = await generate(client, tenant, ask("long please", max_tokens=5, cache={"skip": True}))
    assert reply.finish_reason == "length"
    assert 0 < reply.usage.completion_tokens <= 5


async def test_forced_tool_call_gets_arguments_from_the_schema(
    worker: Worker, client: Client, tenant: str
) -> None:
    """tool_choice naming a function makes the offline model call it with valid arguments."""
    tool = {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
                "required": ["city", "days"],
            },
        },
    }
    choice = {"type": "function", "function": {"name": "get_weather"}}
    reply = await generate(
        client, tenant, ask("weather?", tools=[tool], tool_choice=choice, cache={"skip": True})
    )
    assert reply.finish_reason == "tool_calls"
    (call,) = reply.message.tool_calls
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "offline", "days": 0}


async def test_json_mode_returns_a_json_object(worker: Worker, client: Client, tenant: str) -> None:
    """response_format json_object gives parseable JSON that says it is offline."""
    reply = await generate(
        client, tenant, ask("json", response_format={"type": "json_object"}, cache={"skip": True})
    )
    body = json.loads(reply.message.content)
    assert body["offline_model"] is True
    assert body["echo"] == "json"


async def test_json_schema_mode_returns_an_instance_of_the_schema(
    worker: Worker, client: Client, tenant: str
) -> None:
    """response_format json_schema gives JSON that the schema accepts (structured output)."""
    schema = {
        "type": "object",
        "additionalProperties": False,
        "required": ["name", "tags"],
        "properties": {
            "name": {"type": "string", "minLength": 1},
            "tags": {"type": "array", "minItems": 1, "items": {"type": "string"}},
            "extra": {"type": "string"},
        },
    }
    fmt = {"type": "json_schema", "json_schema": {"name": "thing", "schema": schema}}
    reply = await generate(
        client, tenant, ask("a thing", response_format=fmt, cache={"skip": True})
    )
    assert json.loads(reply.message.content) == {"name": "offline", "tags": ["offline"]}


async def test_stream_chunks_join_to_the_unary_reply(
    worker: Worker, client: Client, tenant: str
) -> None:
    """generate_stream yields the same text in pieces, then usage on the last chunk."""
    req = ask("stream me", cache={"skip": True})
    unary = await generate(client, tenant, req)
    chunks = [
        c async for c in client.stream(tenant, "gateway", "generate_stream", req, GenerateChunk)
    ]
    assert chunks[0].role == "assistant"
    assert len(chunks) > 3
    assert "".join(c.delta for c in chunks) == unary.message.content
    last = chunks[-1]
    assert last.finish_reason == "stop"
    assert last.usage == unary.usage


async def test_second_identical_request_is_an_exact_cache_hit(
    worker: Worker, client: Client, tenant: str, nc: NATS
) -> None:
    """The same request twice: the second reply says exact cache and costs nothing."""
    first = await generate(client, tenant, ask("cache me"))
    second = await generate(client, tenant, ask("cache me"))
    assert not first.HasField("cache")
    assert second.cache.kind == "exact"
    assert second.cache.similarity == 1.0
    assert second.message.content == first.message.content
    assert second.cost_usd == 0.0
    assert second.id != first.id
    events = await eventually(
        lambda: _ops(nc, tenant, 2), timeout=5, what="two llm_operation events"
    )
    assert [e.cache_hit for _, e in events] == [False, True]


async def test_exact_cache_never_answers_another_tenant(
    worker: Worker, client: Client, tenant: str
) -> None:
    """Tenant b asking tenant a's cached question gets a fresh reply."""
    await generate(client, tenant, ask("private question"))
    other = await generate(client, tenant + "x", ask("private question"))
    assert not other.HasField("cache")


async def test_stream_of_a_cached_request_replays_the_cached_reply(
    worker: Worker, client: Client, tenant: str
) -> None:
    """A cached reply streams as role, text and a final chunk marked cached."""
    first = await generate(client, tenant, ask("replay me"))
    chunks = [
        c
        async for c in client.stream(
            tenant, "gateway", "generate_stream", ask("replay me"), GenerateChunk
        )
    ]
    assert "".join(c.delta for c in chunks) == first.message.content
    assert chunks[-1].cache.kind == "exact"


async def test_paraphrase_is_a_semantic_hit_only_for_the_same_tenant(
    worker: Worker, client: Client, tenant: str
) -> None:
    """With semantic caching a paraphrase hits; another tenant's paraphrase does not."""
    semantic = {"semantic": True, "similarity_threshold": 0.8}
    first = await generate(client, tenant, ask("How do I reset my password?", cache=semantic))
    hit = await generate(client, tenant, ask("How can I reset my password?", cache=semantic))
    assert hit.cache.kind == "semantic"
    assert 0.8 <= hit.cache.similarity < 1.0
    assert hit.message.content == first.message.content
    unrelated = await generate(client, tenant, ask("Best pizza in Naples?", cache=semantic))
    assert not unrelated.HasField("cache")
    other = await generate(
        client, tenant + "x", ask("How can I reset my password?", cache=semantic)
    )
    assert not other.HasField("cache")


async def test_embed_returns_384_unit_vectors_that_rank_paraphrases_first(
    worker: Worker, client: Client, tenant: str
) -> None:
    """The default embedding model is the local all-MiniLM-L6-v2."""
    texts = [
        "The cat sits on the mat.",
        "A cat is sitting on a rug.",
        "Quarterly revenue grew by ten percent.",
    ]
    reply = await client.call(tenant, "gateway", "embed", EmbedRequest(texts=texts), EmbedResponse)
    assert reply.model == "all-minilm-l6-v2"
    assert reply.dimensions == 384
    vectors = np.array([list(e.values) for e in reply.embeddings])
    assert vectors.shape == (3, 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2] + 0.3
    assert reply.usage.prompt_tokens > 0


async def test_list_models_shows_the_configured_aliases(
    worker: Worker, client: Client, tenant: str
) -> None:
    """With no configuration: the offline chat model and the local embedding model."""
    reply = await client.call(
        tenant, "gateway", "list_models", ListModelsRequest(), ListModelsResponse
    )
    by_name = {m.name: m for m in reply.models}
    assert by_name["offline"].mode == "chat"
    assert by_name["offline"].default
    assert by_name["all-minilm-l6-v2"].mode == "embedding"
    assert by_name["offline"].deployments[0].provider == "aifleet"


async def test_rate_limits_report_this_minutes_usage(
    worker: Worker, client: Client, tenant: str
) -> None:
    """rate_limits counts the tenant's requests and tokens of the current minute."""
    await fresh_minute()
    reply = await generate(client, tenant, ask("count me", cache={"skip": True}))
    limits = await client.call(
        tenant, "gateway", "rate_limits", RateLimitsRequest(), RateLimitsResponse
    )
    assert limits.requests_per_minute == 0
    assert limits.tokens_this_minute == reply.usage.total_tokens
    assert 0 < limits.minute_resets_in_s <= 60


async def test_every_operation_publishes_one_event_with_its_id(
    worker: Worker, client: Client, tenant: str, nc: NATS
) -> None:
    """generate and embed each publish llm_operation with Nats-Msg-Id = the operation id."""
    reply = await generate(
        client,
        tenant,
        ask("account me", cache={"skip": True}, agent_id="a1", metadata={"ticket": "T-9"}),
    )
    await client.call(tenant, "gateway", "embed", EmbedRequest(texts=["x"]), EmbedResponse)
    events = await eventually(lambda: _ops(nc, tenant, 2), timeout=5, what="two events")
    (headers, chat), (_, embedding) = events
    assert headers[HEADER_MSG_ID] == chat.id == reply.id
    assert chat.operation_type == "chat"
    assert embedding.operation_type == "embedding"
    assert chat.agent_id == "a1"
    assert chat.status == "success"
    assert chat.prompt_tokens == reply.usage.prompt_tokens
    assert chat.completion_tokens == reply.usage.completion_tokens
    assert chat.model == "aifleet/offline"
    assert chat.provider == "aifleet"
    assert chat.metadata["model_alias"] == "offline"
    assert chat.metadata["ticket"] == "T-9"


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ({"model": "no-such-model"}, NotFound),
        ({"model": "all-minilm-l6-v2"}, BadRequest),
        ({"max_tokens": 0}, BadRequest),
        ({"max_tokens": 2_000_000}, BadRequest),
        ({"temperature": 3}, BadRequest),
        ({"stop": ["a", "b", "c", "d", "e"]}, BadRequest),
        ({"tool_choice": "required"}, BadRequest),
        ({"response_format": {"type": "yaml"}}, BadRequest),
    ],
)
async def test_bad_generate_requests_get_the_documented_error(
    worker: Worker, client: Client, tenant: str, fields: dict[str, object], error: type
) -> None:
    """Unknown model, wrong kind of model, out-of-range parameters → 4xx, nothing recorded."""
    with pytest.raises(error):
        await generate(client, tenant, ask("x", **fields))


async def _ops(nc: NATS, tenant: str, n: int) -> list[tuple[Mapping[str, str], LlmOperationEvent]]:
    """The tenant's operation events once there are at least `n` (empty before)."""
    found = await operations(nc, tenant)
    return found if len(found) >= n else []


async def test_tenant_over_its_request_limit_gets_429(
    nats_factory: NatsFactory, valkey: EmbeddedValkey, monkeypatch: pytest.MonkeyPatch, tenant: str
) -> None:
    """requests_per_minute=2: the third request of the minute is refused with retry_after_s."""
    configure(monkeypatch, requests_per_minute=2)
    server = nats_factory()
    async with running_gateway(server.url, valkey.url), connected(server.url) as nc:
        client = Client(nc, timeout=20.0)
        await fresh_minute()
        for _ in range(2):
            await generate(client, tenant, ask("hi", cache={"skip": True}))
        with pytest.raises(RateLimited) as refused:
            await generate(client, tenant, ask("hi", cache={"skip": True}))
        assert refused.value.details["limit"] == "requests_per_minute"
        assert 0 < refused.value.details["retry_after_s"] <= 65
        await generate(client, tenant + "x", ask("hi", cache={"skip": True}))
