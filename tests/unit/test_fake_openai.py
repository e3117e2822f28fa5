"""The fake OpenAI server as the official openai client and litellm see it: shapes, streams,
embeddings, tool calls, scripted faults, and the subprocess mode."""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import AsyncIterator
from typing import Any, Literal

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionFunctionToolParam, ChatCompletionMessageParam

from tests.support.fake_openai import FakeOpenAI, FakeOpenAIProcess, Fault, unit_vector

USER: list[ChatCompletionMessageParam] = [{"role": "user", "content": "one two three four"}]
WEATHER: ChatCompletionFunctionToolParam = {
    "type": "function",
    "function": {
        "name": "weather",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "days": {"type": "integer"},
                "units": {"type": "string", "enum": ["metric", "imperial"]},
            },
            "required": ["city", "days"],
        },
    },
}
CLOCK: ChatCompletionFunctionToolParam = {
    "type": "function",
    "function": {"name": "clock", "parameters": {"type": "object"}},
}


@pytest.fixture(scope="module")
async def served() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI() as fake:
        yield fake


@pytest.fixture
def fake(served: FakeOpenAI) -> FakeOpenAI:
    """The module's fake with no faults scripted and an empty request log."""
    served.reset()
    return served


@pytest.fixture
async def client(fake: FakeOpenAI) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(base_url=fake.base_url, api_key="k", max_retries=0) as c:
        yield c


@pytest.fixture(scope="module")
def litellm() -> Any:
    """litellm configured offline: local cost map, no .env, no debug banner on errors."""
    os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    os.environ["LITELLM_MODE"] = "PRODUCTION"
    import litellm

    litellm.suppress_debug_info = True
    return litellm


def primary(fake: FakeOpenAI, **overrides: Any) -> dict[str, Any]:
    """litellm arguments for one attempt at the fake's "primary" deployment (no retries)."""
    target = {"model": "openai/primary", "messages": USER, "api_base": fake.base_url}
    return {**target, "api_key": "k", "num_retries": 0, "max_retries": 0, **overrides}


async def test_chat_echoes_the_last_user_message_with_word_counted_usage(
    client: openai.AsyncOpenAI,
) -> None:
    """The reply echoes the last user message; usage is words + 4 per message."""
    messages: list[ChatCompletionMessageParam] = [{"role": "system", "content": "be brief"}, *USER]
    reply = await client.chat.completions.create(model="primary", messages=messages)
    assert reply.choices[0].message.content == "echo: one two three four"
    assert reply.choices[0].finish_reason == "stop"
    assert reply.model == "primary"
    assert reply.usage is not None
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (6 + 8, 5)
    assert reply.usage.total_tokens == 19


async def test_stream_concatenates_to_the_reply_and_ends_with_usage(
    client: openai.AsyncOpenAI,
) -> None:
    """Role first, one word per chunk, finish_reason last, then a usage-only chunk."""
    whole = await client.chat.completions.create(model="primary", messages=USER)
    stream = await client.chat.completions.create(
        model="primary", messages=USER, stream=True, stream_options={"include_usage": True}
    )
    chunks = [chunk async for chunk in stream]
    assert chunks[0].choices[0].delta.role == "assistant"
    pieces = [c.choices[0].delta.content or "" for c in chunks if c.choices]
    assert sum(map(bool, pieces)) == 5
    assert "".join(pieces) == whole.choices[0].message.content
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == []
    assert chunks[-1].usage == whole.usage


async def test_max_tokens_truncates_stop_cuts_and_n_repeats(client: openai.AsyncOpenAI) -> None:
    """max_tokens keeps the first words (finish "length"); stop cuts; n gives n choices."""
    short = await client.chat.completions.create(model="primary", messages=USER, max_tokens=2)
    assert short.choices[0].message.content == "echo: one"
    assert short.choices[0].finish_reason == "length"
    assert short.usage is not None
    assert short.usage.completion_tokens == 2
    cut = await client.chat.completions.create(model="primary", messages=USER, stop=[" three"])
    assert cut.choices[0].message.content == "echo: one two"
    twice = await client.chat.completions.create(model="primary", messages=USER, n=2)
    assert [c.index for c in twice.choices] == [0, 1]
    assert twice.choices[1].message.content == twice.choices[0].message.content


async def test_json_modes_return_json_objects(client: openai.AsyncOpenAI) -> None:
    """json_object wraps the echo; json_schema fills the schema's required properties."""
    reply = await client.chat.completions.create(
        model="primary", messages=USER, response_format={"type": "json_object"}
    )
    assert json.loads(reply.choices[0].message.content or "") == {"echo": "one two three four"}
    schema = WEATHER["function"]["parameters"]
    reply = await client.chat.completions.create(
        model="primary",
        messages=USER,
        response_format={"type": "json_schema", "json_schema": {"name": "w", "schema": schema}},
    )
    assert json.loads(reply.choices[0].message.content or "") == {"city": "city", "days": 1}


async def test_tools_call_the_chosen_tool_with_its_required_arguments(
    client: openai.AsyncOpenAI,
) -> None:
    """The first tool by default, the named one when chosen, none with tool_choice "none"."""
    tools = [CLOCK, WEATHER]
    first = await client.chat.completions.create(model="primary", messages=USER, tools=tools)
    assert first.choices[0].finish_reason == "tool_calls"
    call: Any = (first.choices[0].message.tool_calls or [])[0]
    assert (call.function.name, json.loads(call.function.arguments)) == ("clock", {})
    named = await client.chat.completions.create(
        model="primary",
        messages=USER,
        tools=tools,
        tool_choice={"type": "function", "function": {"name": "weather"}},
    )
    call = (named.choices[0].message.tool_calls or [])[0]
    assert (call.function.name, call.id) == ("weather", "call_0")
    assert json.loads(call.function.arguments) == {"city": "city", "days": 1}
    plain = await client.chat.completions.create(
        model="primary", messages=USER, tools=tools, tool_choice="none"
    )
    assert plain.choices[0].message.tool_calls is None
    assert plain.choices[0].message.content == "echo: one two three four"


async def test_streamed_tool_call_carries_name_and_arguments(client: openai.AsyncOpenAI) -> None:
    """A streamed tool call arrives as one delta and finishes with "tool_calls"."""
    stream = await client.chat.completions.create(
        model="primary",
        messages=USER,
        tools=[WEATHER],
        stream=True,
    )
    chunks = [chunk async for chunk in stream]
    calls = [call for c in chunks for call in c.choices[0].delta.tool_calls or []]
    assert [(c.id, c.function and c.function.name) for c in calls] == [("call_0", "weather")]
    assert json.loads(calls[0].function.arguments or "") == {"city": "city", "days": 1}  # type: ignore[union-attr]
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


async def test_embeddings_are_deterministic_unit_vectors(
    fake: FakeOpenAI, client: openai.AsyncOpenAI
) -> None:
    """Same text, same vector, in base64 (the client's default) and float; dimensions honoured."""
    as_base64 = await client.embeddings.create(model="embed", input=["a b c", "d"])
    as_float = await client.embeddings.create(model="embed", input="a b c", encoding_format="float")
    assert as_float.data[0].embedding == unit_vector("a b c", 8)
    assert as_base64.data[0].embedding == pytest.approx(as_float.data[0].embedding, abs=1e-6)
    assert as_base64.data[1].embedding != as_base64.data[0].embedding
    assert math.fsum(x * x for x in as_float.data[0].embedding) == pytest.approx(1.0)
    assert (as_base64.usage.prompt_tokens, as_float.usage.prompt_tokens) == (4, 3)
    wide = await client.embeddings.create(model="embed", input=[[5, 6, 7]], dimensions=16)
    assert len(wide.data[0].embedding) == 16
    assert wide.usage.prompt_tokens == 3
    assert len(fake.requests("embed", path="/v1/embeddings")) == 3


async def test_models_are_listed(client: openai.AsyncOpenAI) -> None:
    """GET /v1/models lists the deployments the fake stands in for."""
    assert [m.id async for m in client.models.list()] == ["primary", "secondary"]


async def test_request_log_keeps_bodies_and_api_key_by_model_and_path(
    fake: FakeOpenAI, client: openai.AsyncOpenAI
) -> None:
    """Each request is logged with its path, model, body and Authorization header."""
    await client.chat.completions.create(model="primary", messages=USER)
    await client.chat.completions.create(model="secondary", messages=USER, max_tokens=3)
    await client.embeddings.create(model="secondary", input="x")
    [seen] = fake.requests("primary")
    assert (seen.path, seen.authorization) == ("/v1/chat/completions", "Bearer k")
    assert seen.body["messages"] == USER
    assert [s.path for s in fake.requests("secondary")] == [
        "/v1/chat/completions",
        "/v1/embeddings",
    ]
    assert len(fake.requests(path="/v1/chat/completions")) == 2


async def test_faults_follow_the_model_and_run_out(
    fake: FakeOpenAI, client: openai.AsyncOpenAI
) -> None:
    """Faults queue per model and are used up; "secondary" answers while "primary" fails."""
    fake.fault("primary", Fault(status=500, times=2))
    fake.fault("primary", Fault(status=400))
    for status in (500, 500, 400):
        with pytest.raises(openai.APIStatusError) as failed:
            await client.chat.completions.create(model="primary", messages=USER)
        assert failed.value.status_code == status
        reply = await client.chat.completions.create(model="secondary", messages=USER)
        assert reply.choices[0].message.content
    assert failed.value.type == "invalid_request_error"
    assert await client.chat.completions.create(model="primary", messages=USER)


async def test_fault_for_every_request_lasts_until_reset(
    fake: FakeOpenAI, client: openai.AsyncOpenAI
) -> None:
    """times=None on "*" fails every model, every time, until reset."""
    fake.fault("*", Fault(status=503, times=None))
    for model in ("primary", "secondary", "primary"):
        with pytest.raises(openai.InternalServerError):
            await client.chat.completions.create(model=model, messages=USER)
    fake.reset()
    assert await client.chat.completions.create(model="primary", messages=USER)


async def test_rate_limit_has_retry_after_and_openai_error_body(fake: FakeOpenAI) -> None:
    """A scripted 429 looks like OpenAI's: Retry-After header and an error object."""
    fake.fault("primary", Fault(status=429, retry_after=7))
    async with httpx.AsyncClient() as http:
        answer = await http.post(f"{fake.base_url}/chat/completions", json={"model": "primary"})
    assert (answer.status_code, answer.headers["retry-after"]) == (429, "7")
    assert answer.json()["error"]["code"] == "rate_limit_exceeded"


# A dropped connection reaches openai >= 3.60 (httpx2) as APIConnectionError; an error event in
# the stream as a plain APIError.
@pytest.mark.parametrize(
    ("break_with", "error"), [("close", openai.APIConnectionError), ("error", openai.APIError)]
)
async def test_stream_breaks_after_k_chunks(
    fake: FakeOpenAI,
    client: openai.AsyncOpenAI,
    break_with: Literal["close", "error"],
    error: type[Exception],
) -> None:
    """break_after=K sends K chunks, then drops the connection or sends an error event."""
    fake.fault("primary", Fault(break_after=2, break_with=break_with))
    stream = await client.chat.completions.create(model="primary", messages=USER, stream=True)
    chunks = aiter(stream)
    assert (await anext(chunks)).choices[0].delta.role == "assistant"
    assert (await anext(chunks)).choices[0].delta.content == "echo:"
    with pytest.raises(error) as raised:
        await anext(chunks)
    assert isinstance(raised.value, openai.APIConnectionError) == (break_with == "close")


async def test_chunk_delay_spaces_chunks_after_the_first(
    fake: FakeOpenAI, client: openai.AsyncOpenAI
) -> None:
    """The first chunk comes at once and each later one after chunk_delay: time to first token."""
    fake.fault("primary", Fault(chunk_delay=0.15))
    started = time.monotonic()
    stream = await client.chat.completions.create(
        model="primary", messages=[{"role": "user", "content": "a"}], stream=True
    )
    arrivals = [time.monotonic() - started async for _ in stream]
    assert len(arrivals) == 4  # role, "echo:", " a", finish
    assert arrivals[0] < 0.15
    assert arrivals[-1] - arrivals[0] >= 3 * 0.15 - 0.01


async def test_answers_while_the_test_loop_is_blocked(fake: FakeOpenAI) -> None:
    """A synchronous call from the test's event loop gets its answer: the fake has its own."""
    with openai.OpenAI(base_url=fake.base_url, api_key="k", max_retries=0, timeout=5) as blocking:
        reply = blocking.chat.completions.create(model="primary", messages=USER)
    assert reply.choices[0].message.content == "echo: one two three four"


async def test_litellm_completion_stream_and_embedding(fake: FakeOpenAI, litellm: Any) -> None:
    """litellm's openai/ provider accepts the fake's replies, chunks and embeddings."""
    reply = await litellm.acompletion(**primary(fake))
    assert reply.choices[0].message.content == "echo: one two three four"
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (8, 5)
    stream = await litellm.acompletion(**primary(fake, stream=True))
    pieces = [chunk.choices[0].delta.content or "" async for chunk in stream]
    assert "".join(pieces) == "echo: one two three four"
    embedded = await litellm.aembedding(
        model="openai/embed", input=["a b"], api_base=fake.base_url, api_key="k"
    )
    assert embedded.data[0]["embedding"] == pytest.approx(unit_vector("a b", 8))
    assert {s.authorization for s in fake.requests()} == {"Bearer k"}


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (429, "RateLimitError"),
        (500, "InternalServerError"),
        (503, "ServiceUnavailableError"),
        (400, "BadRequestError"),
    ],
)
async def test_litellm_raises_its_error_for_a_scripted_status(
    fake: FakeOpenAI, litellm: Any, status: int, error: str
) -> None:
    """Each scripted status becomes litellm's matching exception, without retries."""
    fake.fault("primary", Fault(status=status))
    with pytest.raises(getattr(litellm, error)):
        await litellm.acompletion(**primary(fake))
    assert len(fake.requests("primary")) == 1


async def test_litellm_times_out_on_a_delayed_answer(fake: FakeOpenAI, litellm: Any) -> None:
    """A scripted delay longer than the client's timeout raises litellm.Timeout."""
    fake.fault("primary", Fault(delay=2))
    started = time.monotonic()
    with pytest.raises(litellm.Timeout):
        await litellm.acompletion(**primary(fake, timeout=0.2))
    assert time.monotonic() - started < 1.5


async def test_litellm_reports_a_broken_stream(fake: FakeOpenAI, litellm: Any) -> None:
    """A stream dropped midway surfaces in litellm as MidStreamFallbackError (a 503 kind)."""
    fake.fault("primary", Fault(break_after=2))
    stream = await litellm.acompletion(**primary(fake, stream=True))
    with pytest.raises(litellm.exceptions.MidStreamFallbackError):
        [chunk async for chunk in stream]


async def test_subprocess_mode_answers_and_is_scripted_over_http() -> None:
    """`python -m tests.support.fake_openai` serves the same API, scripted over /_control."""
    async with FakeOpenAIProcess(dimensions=4) as fake:
        async with openai.AsyncOpenAI(base_url=fake.base_url, api_key="p", max_retries=0) as c:
            reply = await c.chat.completions.create(model="primary", messages=USER)
            assert reply.choices[0].message.content == "echo: one two three four"
            fake.fault("primary", Fault(status=503))
            with pytest.raises(openai.InternalServerError):
                await c.chat.completions.create(model="primary", messages=USER)
            vector = await c.embeddings.create(model="embed", input="x", encoding_format="float")
            assert vector.data[0].embedding == unit_vector("x", 4)
        seen = fake.requests("primary")
        assert [(s.body["messages"], s.authorization) for s in seen] == [(USER, "Bearer p")] * 2
        fake.reset()
        assert fake.requests() == []
