"""The gateway routing through litellm to a real HTTP provider (the local fake OpenAI server):
fallbacks, cooldowns, streaming, tools, embeddings, error mapping, cost, shared limits."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from nats.aio.client import Client as NATS

from aifleet.embedded import EmbeddedNats, EmbeddedValkey
from schemas.errors import BadRequest, DeadlineExceeded, RateLimited, ServiceError, Unavailable
from schemas.v1.gateway_pb2 import (
    EmbedRequest,
    EmbedResponse,
    GenerateChunk,
    GenerateResponse,
    ListModelsRequest,
    ListModelsResponse,
)
from tests.conftest import NatsFactory
from tests.support.fake_openai import FakeOpenAI, Fault
from tests.support.gateway import (
    ask,
    configure,
    connected,
    deployment,
    fresh_minute,
    generate,
    model_list,
    operations,
    running_gateway,
)
from tests.support.polling import eventually
from tests.support.run_worker import WorkerProcess
from workers.runtime.client import Client
from workers.runtime.worker import Worker

IN_PRICE, OUT_PRICE = 1e-6, 2e-6


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeOpenAI]:
    server = FakeOpenAI()
    server.start()
    try:
        yield server
    finally:
        server.stop()


def models_of(fake: FakeOpenAI) -> list[dict[str, Any]]:
    url = fake.base_url
    priced = {"input_cost_per_token": IN_PRICE, "output_cost_per_token": OUT_PRICE}
    return [
        deployment("chat", "primary", url, **priced),
        deployment("main", "main-broken", url),
        deployment("backup", "backup", url),
        deployment("pool", "pool-bad", url),
        deployment("pool", "pool-good", url),
        deployment("streamer", "stream-broken", url),
        *(deployment(f"flaky{i}", f"flaky{i}", url) for i in range(5)),
        {
            **deployment("embedder", "emb", url, input_cost_per_token=1e-7),
            "model_info": {"mode": "embedding"},
        },
    ]


@pytest.fixture(scope="module")
def config(fake: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return model_list(
        tmp_path_factory.mktemp("gateway") / "models.yaml",
        models_of(fake),
        router_settings={
            "num_retries": 0,
            "allowed_fails": 0,
            "cooldown_time": 60,
            "fallbacks": [{"main": ["backup"]}, {"streamer": ["backup"]}],
        },
        aifleet={"default_model": "chat"},
    )


@pytest.fixture(scope="module")
async def worker(
    nats_server: EmbeddedNats, valkey: EmbeddedValkey, config: Path
) -> AsyncIterator[Worker]:
    with pytest.MonkeyPatch.context() as mp:
        configure(mp, config=config, cache_ttl_seconds=0)
        async with running_gateway(nats_server.url, valkey.url) as w:
            yield w


@pytest.fixture(autouse=True)
def clean(fake: FakeOpenAI) -> None:
    fake.reset()


@pytest.fixture
def tenant() -> str:
    return "p" + uuid.uuid4().hex[:12]


@pytest.fixture
def client(nc: NATS) -> Client:
    return Client(nc, timeout=20.0)


async def test_chat_goes_to_the_provider_with_its_key_and_is_priced(
    worker: Worker, client: Client, tenant: str, fake: FakeOpenAI
) -> None:
    """The reply comes from the provider; tokens are its usage, cost from the configured price."""
    reply = await generate(client, tenant, ask("hello there", model="chat"))
    assert reply.message.content == "echo: hello there"
    assert reply.provider_model == "openai/primary"
    (seen,) = fake.requests("primary")
    assert seen.authorization == "Bearer k"
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (6, 3)
    assert reply.cost_usd == pytest.approx(6 * IN_PRICE + 3 * OUT_PRICE)


async def test_accounting_event_carries_tokens_cost_and_latency(
    worker: Worker, client: Client, tenant: str, nc: NATS
) -> None:
    """The llm_operation event has the provider's tokens, the computed cost and the alias."""
    reply = await generate(client, tenant, ask("count these four words"))
    (_, event), *_ = await eventually(
        lambda: operations(nc, tenant), timeout=5, what="the operation event"
    )
    assert event.id == reply.id
    assert (event.prompt_tokens, event.completion_tokens) == (8, 5)
    assert event.cost_usd == pytest.approx(8 * IN_PRICE + 5 * OUT_PRICE)
    assert event.model == "openai/primary"
    assert event.provider == "openai"
    assert event.latency_ms > 0
    assert not event.HasField("time_to_first_token_ms")


async def test_failing_alias_falls_back_to_the_next_alias(
    worker: Worker, client: Client, tenant: str, fake: FakeOpenAI
) -> None:
    """main's deployment answers 500: the reply comes from backup, one call each."""
    fake.fault("main-broken", Fault(status=500, times=None))
    reply = await generate(client, tenant, ask("fall back", model="main"))
    assert reply.message.content == "echo: fall back"
    assert reply.provider_model == "openai/backup"
    assert reply.model == "main"
    assert len(fake.requests("main-broken")) == 1
    assert len(fake.requests("backup")) == 1


async def test_failing_deployment_cools_down_and_is_skipped(
    worker: Worker, client: Client, tenant: str, fake: FakeOpenAI
) -> None:
    """After pool-bad fails it is cooling down (list_models says so) and gets no more calls."""
    fake.fault("pool-bad", Fault(status=500, times=None))
    failures = 0
    for i in range(12):
        try:
            await generate(client, tenant, ask(f"q{i}", model="pool"))
        except Unavailable:
            failures += 1
    bad_calls = len(fake.requests("pool-bad"))
    assert bad_calls >= 1
    assert failures == bad_calls
    models = await client.call(
        tenant, "gateway", "list_models", ListModelsRequest(), ListModelsResponse
    )
    pool = next(m for m in models.models if m.name == "pool")
    assert {d.model: d.cooling_down for d in pool.deployments} == {
        "openai/pool-bad": True,
        "openai/pool-good": False,
    }
    for i in range(5):
        await generate(client, tenant, ask(f"after {i}", model="pool"))
    assert len(fake.requests("pool-bad")) == bad_calls


async def test_stream_falls_back_when_the_first_deployment_fails(
    worker: Worker, client: Client, tenant: str, fake: FakeOpenAI
) -> None:
    """A stream whose deployment answers 503 is served by the fallback alias."""
    fake.fault("stream-broken", Fault(status=503, times=None))
    chunks = [
        c
        async for c in client.stream(
            tenant, "gateway", "generate_stream", ask("stream it", model="streamer"), GenerateChunk
        )
    ]
    assert "".join(c.delta for c in chunks) == "echo: stream it"
    assert chunks[-1].provider_model == "openai/backup"
    assert chunks[-1].finish_reason == "stop"


async def test_stream_records_usage_cost_and_time_to_first_token(
    worker: Worker, client: Client, tenant: str, fake: FakeOpenAI, nc: NATS
) -> None:
    """A streamed call is accounted like a unary one, plus its time to first token."""
    fake.fault("primary", Fault(chunk_delay=0.05))
    chunks = [
        c
        async for c in client.stream(
            tenant, "gateway", "generate_stream", ask("one two three"), GenerateChunk
        )
    ]
    last = chunks[-1]
    assert (last.usage.prompt_tokens, last.usage.completion_tokens) == (7, 4)
    assert last.cost_usd == pytest.approx(7 * IN_PRICE + 4 * OUT_PRICE)
    (_, event), *_ = await eventually(
        lambda: operations(nc, tenant), timeout=5, what="the operation event"
    )
    assert event.completion_tokens == 4
    assert 0 < event.time_to_first_token_ms < event.latency_ms
    assert event.latency_ms >= 100  # three more chunks 50 ms apart after the first


async def test_tool_call_from_the_provider_is_returned(
    worker: Worker, client: Client, tenant: str, fake: FakeOpenAI
) -> None:
    """A tool-calling reply comes back as tool_calls with the provider's arguments."""
    tool = {
        "type": "function",
        "function": {
            "name": "lookup",
            "parameters": {
                "type": "object",
                "properties": {"order_id": {"type": "string"}},
                "required": ["order_id"],
            },
        },
    }
    reply = await generate(client, tenant, ask("where is my order", tools=[tool]))
    assert reply.finish_reason == "tool_calls"
    (call,) = reply.message.tool_calls
    assert call.function.name == "lookup"
    assert json.loads(call.function.arguments) == {"order_id": "order_id"}
    sent = fake.requests("primary")[0].body
    assert sent["tools"][0]["function"]["name"] == "lookup"


async def test_streamed_tool_call_arrives_in_fragments_that_join(
    worker: Worker, client: Client, tenant: str
) -> None:
    """Streamed tool-call fragments carry their index; joined they are the whole call."""
    tool = {"type": "function", "function": {"name": "ping", "parameters": {"type": "object"}}}
    chunks = [
        c
        async for c in client.stream(
            tenant, "gateway", "generate_stream", ask("ping", tools=[tool]), GenerateChunk
        )
    ]
    fragments = [t for c in chunks for t in c.tool_calls]
    assert fragments
    assert {t.index for t in fragments} == {0}
    assert "".join(t.function.name for t in fragments) == "ping"
    assert chunks[-1].finish_reason == "tool_calls"


async def test_embeddings_from_the_provider_are_priced(
    worker: Worker, client: Client, tenant: str, fake: FakeOpenAI
) -> None:
    """embed with a provider model returns its vectors in order with its token usage."""
    reply = await client.call(
        tenant,
        "gateway",
        "embed",
        EmbedRequest(model="embedder", texts=["a b", "c d e"]),
        EmbedResponse,
    )
    assert reply.dimensions == 8
    assert len(reply.embeddings) == 2
    assert reply.usage.prompt_tokens == 5
    assert reply.cost_usd == pytest.approx(5 * 1e-7)
    assert fake.requests("emb")[0].body["input"] == ["a b", "c d e"]


@pytest.mark.parametrize(
    ("alias", "fault", "error", "retryable"),
    [
        ("flaky0", Fault(status=429, retry_after=7), RateLimited, True),
        ("flaky1", Fault(status=500), Unavailable, True),
        ("flaky2", Fault(status=400), BadRequest, False),
        ("flaky3", Fault(delay=5.0), DeadlineExceeded, True),
    ],
)
async def test_provider_errors_map_to_meaningful_codes(
    worker: Worker,
    client: Client,
    tenant: str,
    fake: FakeOpenAI,
    alias: str,
    fault: Fault,
    error: type[ServiceError],
    retryable: bool,
) -> None:
    """429 → 429, 5xx → 503, 400 → 400 (not retryable), no answer in time → 504."""
    fake.fault(alias, fault)
    short = Client(client.nc, timeout=1.0) if fault.delay else client
    with pytest.raises(error) as raised:
        await short.call(tenant, "gateway", "generate", ask("x", model=alias), GenerateResponse)
    assert raised.value.retryable is retryable
    if fault.status == 429:
        assert raised.value.details["retry_after_s"] == 7


async def test_provider_failure_is_accounted_as_an_error(
    worker: Worker, client: Client, tenant: str, fake: FakeOpenAI, nc: NATS
) -> None:
    """A failed call still publishes its operation, with status error and the error class."""
    fake.fault("flaky4", Fault(status=500))
    with pytest.raises(Unavailable):
        await generate(client, tenant, ask("x", model="flaky4"))
    (_, event), *_ = await eventually(
        lambda: operations(nc, tenant), timeout=5, what="the error event"
    )
    assert event.status == "error"
    assert event.error_class == "InternalServerError"


async def test_limits_are_shared_by_two_gateway_processes(
    nats_factory: NatsFactory,
    valkey: EmbeddedValkey,
    fake: FakeOpenAI,
    tmp_path: Path,
    tenant: str,
) -> None:
    """Two replicas with requests_per_minute=4 admit 4 of 12 requests between them, and a spend
    budget crossed through one replica refuses the next request on the other."""
    server = nats_factory()
    limited = {"requests_per_minute": 4}
    budget = {"budget_usd": 1e-5, "budget_period": "day"}
    config = model_list(
        tmp_path / "models.yaml",
        models_of(fake),
        router_settings={"num_retries": 0},
        aifleet={
            "default_model": "chat",
            "limits": {"tenants": {tenant: limited, tenant + "b": budget}},
        },
    )
    env = {
        "NATS_URL": server.url,
        "REDIS_URL": valkey.url,
        "AIFLEET_GATEWAY_CONFIG": str(config),
        "AIFLEET_GATEWAY_CACHE_TTL_SECONDS": "0",
    }
    replicas = [
        WorkerProcess(["workers.gateway.service"], env, tmp_path / f"gw-{i}.log") for i in range(2)
    ]
    try:
        await asyncio.gather(*(r.start(timeout=60) for r in replicas))
        async with connected(server.url) as nc:
            client = Client(nc, timeout=20.0)
            await fresh_minute()
            outcomes = await asyncio.gather(
                *(generate(client, tenant, ask(f"r{i}")) for i in range(12)),
                return_exceptions=True,
            )
            admitted = [o for o in outcomes if isinstance(o, GenerateResponse)]
            refused = [o for o in outcomes if isinstance(o, RateLimited)]
            assert (len(admitted), len(refused)) == (4, 8)
            # 6 + 3 tokens at 1e-6 / 2e-6 cost 1.2e-5, over the 1e-5 budget.
            await generate(client, tenant + "b", ask("hello there"))
            for _ in range(4):  # whichever replica answers, the budget is spent
                with pytest.raises(RateLimited) as over:
                    await generate(client, tenant + "b", ask("again"))
                assert over.value.details["limit"] == "budget_usd"
    finally:
        for r in replicas:
            await r.close()
