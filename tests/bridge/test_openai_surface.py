"""The OpenAI-compatible /v1 surface, driven by the official `openai` client: bridge, NATS, the
gateway (offline model, local embeddings, a fake provider for slow and broken streams)."""

from __future__ import annotations

import base64
import json
import math
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import numpy as np
import openai
import pytest

from aifleet.embedded import EmbeddedNats, EmbeddedValkey
from tests.bridge.conftest import Spy, bridge_settings, hs256, jwt_settings, serving
from tests.bridge.test_echo_rest import _stream_subs as inbox_subscriptions
from tests.conftest import NatsFactory
from tests.support.fake_openai import FakeOpenAI, Fault
from tests.support.gateway import configure, deployment, model_list, running_gateway
from tests.support.polling import eventually
from workers.gateway.offline import NOTICE
from workers.runtime.worker import Worker

LIMITED = "rpm-one-" + uuid.uuid4().hex[:8]  # one gateway request a minute
SLOW = "slow"  # an alias served by the fake provider
PRICES = {"input_cost_per_token": 1e-6, "output_cost_per_token": 2e-6}
WEATHER: Any = {
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
FORCED: Any = {"type": "function", "function": {"name": "get_weather"}}
# The client's stream helper parses the arguments of strict tools only.
STRICT: Any = {
    "type": "function",
    "function": {
        **WEATHER["function"],
        "strict": True,
        "parameters": {**WEATHER["function"]["parameters"], "additionalProperties": False},
    },
}


@pytest.fixture(scope="module")
async def fake() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI() as server:
        yield server


@pytest.fixture(scope="module")
async def gateway(
    nats_server: EmbeddedNats,
    valkey: EmbeddedValkey,
    fake: FakeOpenAI,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Worker]:
    """The gateway with the offline models (the default), a fake-provider alias, and one tenant
    limited to a request a minute."""
    config = model_list(
        tmp_path_factory.mktemp("gateway") / "models.yaml",
        [deployment(SLOW, SLOW, fake.base_url, **PRICES)],
        router_settings={"num_retries": 0},
        aifleet={
            "default_model": "offline",
            "limits": {"tenants": {LIMITED: {"requests_per_minute": 1}}},
        },
    )
    with pytest.MonkeyPatch.context() as mp:
        configure(mp, config=config)
        mp.delenv("OPENAI_API_KEY", raising=False)
        mp.delenv("ANTHROPIC_API_KEY", raising=False)
        async with running_gateway(nats_server.url, valkey.url) as worker:
            yield worker


@pytest.fixture
async def bridge(
    nats_server: EmbeddedNats, fleet: Worker, gateway: Worker
) -> AsyncIterator[httpx.AsyncClient]:
    async with serving(bridge_settings(nats_server.url)) as http:
        yield http


@pytest.fixture
def tenant() -> str:
    return "o" + uuid.uuid4().hex[:12]


@asynccontextmanager
async def openai_client(
    http: httpx.AsyncClient, api_key: str = "dev", **headers: str
) -> AsyncIterator[openai.AsyncOpenAI]:
    """The official client pointed at the bridge's /v1, without retries."""
    base_url = str(http.base_url).rstrip("/") + "/v1"
    async with openai.AsyncOpenAI(
        base_url=base_url, api_key=api_key, default_headers=headers, max_retries=0, timeout=20
    ) as client:
        yield client


@pytest.fixture
async def ai(bridge: httpx.AsyncClient, tenant: str) -> AsyncIterator[openai.AsyncOpenAI]:
    """The client in dev mode, for a fresh tenant."""
    async with openai_client(bridge, **{"X-Tenant-ID": tenant}) as client:
        yield client


def ask(text: str) -> list[Any]:
    return [{"role": "user", "content": text}]


async def chat_repeatedly(client: openai.AsyncOpenAI, times: int) -> None:
    for _ in range(times):
        await client.chat.completions.create(model="offline", messages=ask("hi"))


def gateway_requests(seen: Spy) -> list[str]:
    """The gateway request subjects among what the spy saw (not the gateway's own traffic)."""
    return [s for s in seen.subjects if ".req.gateway." in s]


def sse_data(text: str) -> list[str]:
    """The `data:` payloads of an SSE body, in order."""
    return [line[6:] for line in text.splitlines() if line.startswith("data: ")]


# -- chat -------------------------------------------------------------------------------------


async def test_chat_completion_is_an_openai_object_with_extras_in_headers(
    ai: openai.AsyncOpenAI,
) -> None:
    """The reply parses as a ChatCompletion; cost, cache and deployment are headers only."""
    raw = await ai.chat.completions.with_raw_response.create(
        model="offline", messages=ask("What is NATS?"), extra_headers={"X-Request-ID": "r-42"}
    )
    reply = raw.parse()
    assert reply.object == "chat.completion"
    assert reply.model == "offline"
    (choice,) = reply.choices
    assert choice.message.role == "assistant"
    assert choice.message.content is not None
    assert choice.message.content.startswith(NOTICE)
    assert "What is NATS?" in choice.message.content
    assert choice.finish_reason == "stop"
    assert reply.usage is not None
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens
    assert reply.usage.completion_tokens > 0
    assert raw.headers["x-aifleet-provider-model"] == "aifleet/offline"
    assert raw.headers["x-aifleet-cache"] == "miss"
    assert float(raw.headers["x-aifleet-cost-usd"]) == 0.0
    assert raw.headers["x-request-id"] == "r-42"
    body = json.loads(raw.content)
    assert set(body) == {"id", "object", "created", "model", "choices", "usage"}
    assert abs(body["created"] - time.time()) < 60


async def test_the_gateway_gets_the_request_translated_field_by_field(
    ai: openai.AsyncOpenAI, spy: Callable[[], Any], tenant: str
) -> None:
    """What reaches gateway.generate: max_completion_tokens as max_tokens, stop as a list,
    `user` in the metadata, aifleet's own agent_id kept, accepted no-op parameters dropped."""
    await ai.chat.completions.create(
        model="offline",
        messages=[{"role": "system", "content": "be brief"}, *ask("translate me")],
        max_completion_tokens=40,
        stop="\n\n",
        user="end-user-7",
        metadata={"team": "blue"},
        parallel_tool_calls=False,
        logprobs=False,
        n=1,
        temperature=0.5,
        seed=7,
        extra_body={"agent_id": "planner"},
    )
    seen: Spy = await spy()
    (msg,) = [m for m in seen.messages if m.subject == f"ai.v1.{tenant}.req.gateway.generate"]
    assert json.loads(msg.data) == {
        "model": "offline",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "translate me"},
        ],
        "max_tokens": 40,
        "stop": ["\n\n"],
        "metadata": {"user": "end-user-7", "team": "blue"},
        "temperature": 0.5,
        "seed": 7,
        "agent_id": "planner",
    }


async def test_cost_and_deployment_of_a_provider_call_are_in_headers(
    ai: openai.AsyncOpenAI,
) -> None:
    """A priced deployment: x-aifleet-cost-usd is its price times the usage."""
    raw = await ai.chat.completions.with_raw_response.create(model=SLOW, messages=ask("a b c"))
    usage = raw.parse().usage
    assert usage is not None
    assert float(raw.headers["x-aifleet-cost-usd"]) == pytest.approx(
        usage.prompt_tokens * PRICES["input_cost_per_token"]
        + usage.completion_tokens * PRICES["output_cost_per_token"]
    )
    assert raw.headers["x-aifleet-provider-model"] == "openai/slow"
    assert raw.parse().choices[0].message.content == "echo: a b c"


async def test_a_repeated_chat_is_served_from_the_cache(ai: openai.AsyncOpenAI) -> None:
    """The same request twice: the second says `x-aifleet-cache: exact`, same content."""
    first = await ai.chat.completions.with_raw_response.create(
        model="offline", messages=ask("cache me"), stop="zzz"
    )
    second = await ai.chat.completions.with_raw_response.create(
        model="offline", messages=ask("cache me"), stop="zzz"
    )
    assert second.headers["x-aifleet-cache"] == "exact"
    assert second.parse().choices[0].message.content == first.parse().choices[0].message.content


async def test_max_completion_tokens_bounds_the_reply(ai: openai.AsyncOpenAI) -> None:
    """max_completion_tokens is the gateway's max_tokens: the reply is cut with `length`."""
    reply = await ai.chat.completions.create(
        model="offline", messages=ask("long please"), max_completion_tokens=5
    )
    assert reply.choices[0].finish_reason == "length"
    assert reply.usage is not None
    assert 0 < reply.usage.completion_tokens <= 5


async def test_text_content_parts_are_joined(ai: openai.AsyncOpenAI) -> None:
    """Content given as text parts reaches the model as one text."""
    parts: Any = [{"type": "text", "text": "first part"}, {"type": "text", "text": "second part"}]
    reply = await ai.chat.completions.create(
        model="offline", messages=[{"role": "user", "content": parts}]
    )
    assert "first part\nsecond part" in (reply.choices[0].message.content or "")


async def test_stream_joins_to_the_unary_content_then_done(ai: openai.AsyncOpenAI) -> None:
    """Streamed chunks: role first, content deltas that join to the unary reply, a final
    finish_reason, the usage chunk when asked for, then [DONE]."""
    messages = ask("stream me please")
    unary = await ai.chat.completions.create(
        model="offline", messages=messages, extra_body={"cache": {"skip": True}}
    )
    stream = await ai.chat.completions.create(
        model="offline",
        messages=messages,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"cache": {"skip": True}},
    )
    chunks = [chunk async for chunk in stream]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert len(chunks) > 4
    assert {c.object for c in chunks} == {"chat.completion.chunk"}
    assert len({c.id for c in chunks}) == 1
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == unary.choices[0].message.content
    *_, final, usage = chunks
    assert final.choices[0].finish_reason == "stop"
    assert usage.choices == []
    assert usage.usage == unary.usage


async def test_raw_stream_is_data_lines_ending_with_done(
    bridge: httpx.AsyncClient, tenant: str
) -> None:
    """On the wire: only `data:` lines of chunk objects, the last one `[DONE]`."""
    response = await bridge.post(
        "/v1/chat/completions",
        json={"model": "offline", "messages": ask("wire"), "stream": True},
        headers={"X-Tenant-ID": tenant},
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert "event:" not in response.text
    *chunks, done = sse_data(response.text)
    assert done == "[DONE]"
    assert json.loads(chunks[-1])["choices"][0]["finish_reason"] == "stop"
    assert all("usage" not in json.loads(c) for c in chunks)


async def test_a_forced_tool_is_a_parsed_tool_call(ai: openai.AsyncOpenAI) -> None:
    """tool_choice naming a function: tool_calls the client parses, content null."""
    reply = await ai.chat.completions.create(
        model="offline", messages=ask("weather?"), tools=[WEATHER], tool_choice=FORCED
    )
    (choice,) = reply.choices
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    (call,) = choice.message.tool_calls or []
    assert call.type == "function"
    assert call.id
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "offline", "days": 0}


async def test_a_streamed_tool_call_is_assembled_by_the_client(ai: openai.AsyncOpenAI) -> None:
    """The client's stream helper joins the tool_calls deltas (by index) into one call."""
    async with ai.chat.completions.stream(
        model="offline",
        messages=ask("weather, streamed?"),
        tools=[STRICT],
        tool_choice=FORCED,
        extra_body={"cache": {"skip": True}},
    ) as stream:
        final = await stream.get_final_completion()
    (call,) = final.choices[0].message.tool_calls or []
    assert call.function.name == "get_weather"
    assert call.function.parsed_arguments == {"city": "offline", "days": 0}
    assert final.choices[0].finish_reason == "tool_calls"


async def test_a_tool_result_conversation_round_trips(ai: openai.AsyncOpenAI) -> None:
    """The reply's assistant message object, sent back with a tool result, is accepted."""
    reply = await ai.chat.completions.create(
        model="offline", messages=ask("weather?"), tools=[WEATHER], tool_choice=FORCED
    )
    message = reply.choices[0].message
    (call,) = message.tool_calls or []
    history: list[Any] = [
        *ask("weather?"),
        message,
        {"role": "tool", "tool_call_id": call.id, "content": '{"temp": 21}'},
        *ask("and so?"),
    ]
    followup = await ai.chat.completions.create(model="offline", messages=history, tools=[WEATHER])
    assert "and so?" in (followup.choices[0].message.content or "")


async def test_client_disconnect_stops_the_upstream_stream(
    bridge: httpx.AsyncClient, nats_server: EmbeddedNats, fake: FakeOpenAI, tenant: str
) -> None:
    """Leaving a slow stream after its first chunk drops the bridge's inbox subscription."""
    fake.fault(SLOW, Fault(chunk_delay=0.05))
    before = inbox_subscriptions(nats_server)
    body = {"model": SLOW, "messages": ask("word " * 100), "stream": True}
    async with bridge.stream(
        "POST", "/v1/chat/completions", json=body, headers={"X-Tenant-ID": tenant}
    ) as response:
        async for line in response.aiter_lines():
            if line.startswith("data: "):
                break
        assert inbox_subscriptions(nats_server) == before + 1

    async def unsubscribed() -> bool:
        return inbox_subscriptions(nats_server) == before

    await eventually(unsubscribed, timeout=2, what="the bridge's inbox subscription to go")


async def test_a_stream_failing_midway_ends_with_an_error_object(
    bridge: httpx.AsyncClient, ai: openai.AsyncOpenAI, fake: FakeOpenAI, tenant: str
) -> None:
    """A provider error mid-stream: chunks already sent stay, then `data: {"error": ...}`
    and no [DONE]; the client raises APIError."""
    body = {"model": SLOW, "messages": ask("one two three four five"), "stream": True}
    fake.fault(SLOW, Fault(break_after=3, break_with="error"))
    response = await bridge.post("/v1/chat/completions", json=body, headers={"X-Tenant-ID": tenant})
    *chunks, last = sse_data(response.text)
    assert chunks
    assert json.loads(chunks[0])["choices"][0]["delta"]["role"] == "assistant"
    error = json.loads(last)["error"]
    assert error["type"] in ("api_error", "invalid_request_error")
    assert set(error) == {"message", "type", "param", "code"}
    fake.fault(SLOW, Fault(break_after=3, break_with="error"))
    stream = await ai.chat.completions.create(
        model=SLOW, messages=ask("one two three four five"), stream=True
    )
    with pytest.raises(openai.APIError):
        async for _ in stream:
            pass


# -- embeddings and models --------------------------------------------------------------------


async def test_embeddings_as_base64_by_default_and_as_floats(ai: openai.AsyncOpenAI) -> None:
    """The client's default (base64) and encoding_format=float give the same 384-d vectors."""
    texts = ["The cat sits on the mat.", "A cat is sitting on a rug.", "Revenue grew."]
    packed = await ai.embeddings.create(model="all-minilm-l6-v2", input=texts)
    floats = await ai.embeddings.create(
        model="all-minilm-l6-v2", input=texts, encoding_format="float"
    )
    assert packed.model == floats.model == "all-minilm-l6-v2"
    a = np.array([d.embedding for d in packed.data])
    b = np.array([d.embedding for d in floats.data])
    assert a.shape == b.shape == (3, 384)
    assert [d.index for d in packed.data] == [0, 1, 2]
    assert np.allclose(a, b, atol=1e-6)
    assert np.allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-4)
    assert a[0] @ a[1] > a[0] @ a[2] + 0.3
    assert packed.usage.prompt_tokens == packed.usage.total_tokens > 0


async def test_base64_embedding_is_little_endian_float32(
    bridge: httpx.AsyncClient, tenant: str
) -> None:
    """On the wire a base64 vector is 384 float32 values, little-endian; one string → one item."""
    response = await bridge.post(
        "/v1/embeddings",
        json={"input": "hello", "encoding_format": "base64"},
        headers={"X-Tenant-ID": tenant},
    )
    (item,) = response.json()["data"]
    vector = np.frombuffer(base64.b64decode(item["embedding"]), dtype="<f4")
    assert vector.shape == (384,)
    assert math.isclose(float(np.linalg.norm(vector)), 1.0, abs_tol=1e-4)
    assert response.headers["x-aifleet-provider-model"] == "aifleet/all-minilm-l6-v2"


async def test_models_lists_the_aliases_and_retrieves_one(ai: openai.AsyncOpenAI) -> None:
    """models.list shows every alias with its provider; retrieve finds one, or 404."""
    models = {m.id: m async for m in ai.models.list()}
    assert {"offline", "all-minilm-l6-v2", SLOW} <= set(models)
    assert models["offline"].owned_by == "aifleet"
    assert models[SLOW].owned_by == "openai"
    assert (await ai.models.retrieve("offline")).id == "offline"
    with pytest.raises(openai.NotFoundError) as missing:
        await ai.models.retrieve("no-such-model")
    assert missing.value.code == "model_not_found"


# -- errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
async def test_unknown_model_is_not_found(ai: openai.AsyncOpenAI, stream: bool) -> None:
    """A model alias the gateway does not have → NotFoundError, code model_not_found (a
    stream too: an error before the first chunk is a plain HTTP error)."""
    with pytest.raises(openai.NotFoundError) as refused:
        await ai.chat.completions.create(model="no-such-model", messages=ask("hi"), stream=stream)
    assert (refused.value.code, refused.value.param) == ("model_not_found", "model")
    assert refused.value.type == "invalid_request_error"


async def test_no_gateway_running_is_503_at_once(nats_factory: NatsFactory) -> None:
    """With no gateway instance the bridge answers 503 service_unavailable without waiting."""
    server = nats_factory()
    async with serving(bridge_settings(server.url)) as http, openai_client(http) as client:
        started = time.monotonic()
        with pytest.raises(openai.InternalServerError) as refused:
            await client.embeddings.create(model="all-minilm-l6-v2", input="x")
    assert time.monotonic() - started < 0.5
    assert refused.value.status_code == 503
    assert (refused.value.type, refused.value.code) == ("api_error", "service_unavailable")


@pytest.mark.parametrize(
    ("extra", "param", "code"),
    [
        ({"extra_body": {"bogus": 1}}, "bogus", "unknown_parameter"),
        ({"n": 2}, "n", "unsupported_value"),
        ({"logprobs": True}, "logprobs", "unsupported_value"),
        ({"temperature": 5}, "temperature", "invalid_argument"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop", "invalid_argument"),
        ({"tool_choice": "required"}, "tool_choice", "invalid_argument"),
    ],
)
async def test_bad_chat_parameters_are_400_naming_the_parameter(
    ai: openai.AsyncOpenAI, extra: dict[str, Any], param: str, code: str
) -> None:
    """Unknown or unsupported parameters (bridge) and out-of-range values (gateway) → 400."""
    with pytest.raises(openai.BadRequestError) as refused:
        await ai.chat.completions.create(model="offline", messages=ask("x"), **extra)
    assert (refused.value.param, refused.value.code) == (param, code)
    assert refused.value.type == "invalid_request_error"


@pytest.mark.parametrize(
    ("messages", "param"),
    [
        (
            [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}],
            "messages[0].content[0]",
        ),
        ([{"role": "user", "content": "x", "audio_tag": 1}], "messages[0].audio_tag"),
        ("hello", "messages"),
    ],
)
async def test_unsupported_messages_are_400(
    ai: openai.AsyncOpenAI, messages: Any, param: str
) -> None:
    """Non-text content parts, unknown message keys and a non-list `messages` are refused."""
    with pytest.raises(openai.BadRequestError) as refused:
        await ai.chat.completions.create(model="offline", messages=messages)
    assert refused.value.param == param


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": [[1, 2, 3]]}, "input"),
        ({"input": [1, 2, 3]}, "input"),
        ({"input": "x", "encoding_format": "int8"}, "encoding_format"),
        ({"input": ["ok", ""]}, "input[1]"),
    ],
)
async def test_bad_embedding_requests_are_400(
    bridge: httpx.AsyncClient, tenant: str, body: dict[str, Any], param: str
) -> None:
    """Token arrays, unknown encodings and empty texts → 400 in OpenAI's error shape."""
    response = await bridge.post("/v1/embeddings", json=body, headers={"X-Tenant-ID": tenant})
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["type"], error["param"]) == ("invalid_request_error", param)


async def test_invalid_json_is_400_in_openai_shape(bridge: httpx.AsyncClient) -> None:
    """A body that is not JSON is refused before anything is sent."""
    response = await bridge.post(
        "/v1/chat/completions", content=b"{nope", headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"


async def test_a_body_over_the_limit_is_413(
    nats_server: EmbeddedNats, fleet: Worker, gateway: Worker
) -> None:
    """The bridge's body limit applies to /v1 as to every route."""
    async with (
        serving(bridge_settings(nats_server.url, max_body_bytes=2048)) as http,
        openai_client(http) as client,
    ):
        with pytest.raises(openai.APIStatusError) as refused:
            await client.chat.completions.create(model="offline", messages=ask("x" * 4096))
    assert refused.value.status_code == 413
    assert refused.value.response.headers["connection"] == "close"


async def test_the_bridge_rate_limit_is_a_rate_limit_error(
    nats_server: EmbeddedNats, fleet: Worker, gateway: Worker, tenant: str
) -> None:
    """Over the bridge's per-tenant rate: RateLimitError with Retry-After."""
    settings = bridge_settings(nats_server.url, rate_per_second=0.5, rate_burst=1)
    async with serving(settings) as http, openai_client(http, **{"X-Tenant-ID": tenant}) as client:
        await client.models.list()
        with pytest.raises(openai.RateLimitError) as refused:
            await client.models.list()
    assert refused.value.response.headers["retry-after"] == "2"
    assert (refused.value.type, refused.value.code) == ("rate_limit_error", "rate_limit_exceeded")


async def test_the_gateway_rate_limit_is_a_rate_limit_error_with_its_retry_after(
    bridge: httpx.AsyncClient,
) -> None:
    """A tenant over its gateway limit: RateLimitError, Retry-After from the gateway's window."""
    async with openai_client(bridge, **{"X-Tenant-ID": LIMITED}) as client:
        # One a minute: of three requests at most two pass, even across the minute's end.
        with pytest.raises(openai.RateLimitError) as refused:
            await chat_repeatedly(client, 3)
    left = math.ceil(60 - time.time() % 60)  # the gateway's window ends with the UTC minute
    assert left <= int(refused.value.response.headers["retry-after"]) <= left + 1
    assert refused.value.type == "rate_limit_error"


# -- authentication and tenants ---------------------------------------------------------------


@pytest.fixture
async def jwt_bridge(
    nats_server: EmbeddedNats, fleet: Worker, gateway: Worker
) -> AsyncIterator[httpx.AsyncClient]:
    async with serving(jwt_settings(nats_server.url)) as http:
        yield http


async def test_without_a_valid_token_it_is_an_authentication_error(
    jwt_bridge: httpx.AsyncClient, spy: Callable[[], Any]
) -> None:
    """No token or a bad one → 401 AuthenticationError; nothing reaches NATS."""
    async with openai_client(jwt_bridge, api_key="not-a-token") as client:
        with pytest.raises(openai.AuthenticationError) as refused:
            await client.chat.completions.create(model="offline", messages=ask("hi"))
    assert refused.value.type == "authentication_error"
    bare = await jwt_bridge.get("/v1/models")
    assert bare.status_code == 401
    assert bare.headers["www-authenticate"].startswith("Bearer")
    assert bare.json()["error"]["type"] == "authentication_error"
    seen: Spy = await spy()
    assert gateway_requests(seen) == []


async def test_the_tenant_is_the_tokens_and_a_header_cannot_change_it(
    jwt_bridge: httpx.AsyncClient, spy: Callable[[], Any], tenant: str
) -> None:
    """Requests go to the token's tenant; an X-Tenant-ID naming another → PermissionDenied."""
    token = hs256(tenant=tenant)
    async with openai_client(jwt_bridge, api_key=token) as client:
        await client.chat.completions.create(model="offline", messages=ask("whose?"))
        await client.embeddings.create(model="all-minilm-l6-v2", input="whose?")
    async with openai_client(jwt_bridge, api_key=token, **{"X-Tenant-ID": "other"}) as client:
        with pytest.raises(openai.PermissionDeniedError) as refused:
            await client.chat.completions.create(model="offline", messages=ask("whose?"))
    assert refused.value.type == "permission_error"
    seen: Spy = await spy()
    assert gateway_requests(seen) == [
        f"ai.v1.{tenant}.req.gateway.generate",
        f"ai.v1.{tenant}.req.gateway.embed",
    ]
