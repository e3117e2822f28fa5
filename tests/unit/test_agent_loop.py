"""The agent loop with scripted model replies: outcomes, limits, concurrency and resumption."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Any

import pytest

from schemas.errors import RateLimited, Unavailable
from schemas.v1.common_pb2 import ChatMessage, FunctionCall, ToolCall
from workers.agent import loop
from workers.agent.calls import CheckedCall, ToolSpec
from workers.agent.loop import Limits, ModelReply, RunState, Step, ToolResult

ECHO = ToolSpec(
    "t-echo",
    "echo",
    "echoes",
    {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]},
    "http",
    {},
)


def call(name: str, args: Any, call_id: str = "c1") -> ToolCall:
    text = args if isinstance(args, str) else json.dumps(args)
    return ToolCall(id=call_id, type="function", function=FunctionCall(name=name, arguments=text))


def wants(*calls: ToolCall) -> ChatMessage:
    return ChatMessage(role="assistant", tool_calls=list(calls))


def says(text: str) -> ChatMessage:
    return ChatMessage(role="assistant", content=text)


class ScriptedModel:
    """Answers with the scripted messages in order; records what it was asked."""

    def __init__(self, *replies: ChatMessage | Exception, tokens: int = 10) -> None:
        self.replies = list(replies)
        self.seen: list[tuple[list[ChatMessage], list[str], str, int | None]] = []
        self.tokens = tokens

    async def complete(
        self,
        messages: Sequence[ChatMessage],
        tools: Sequence[ToolSpec],
        tool_choice: str,
        max_tokens: int | None,
    ) -> ModelReply:
        self.seen.append((list(messages), [t.name for t in tools], tool_choice, max_tokens))
        reply = self.replies.pop(0)
        if isinstance(reply, Exception):
            raise reply
        return ModelReply(reply, "stop", self.tokens, self.tokens, 0.001, 1.0)


class EchoTools:
    def __init__(self, delay: float = 0.0) -> None:
        self.ran: list[dict[str, Any]] = []
        self.delay = delay
        self.active = 0
        self.most_active = 0

    @property
    def specs(self) -> dict[str, ToolSpec]:
        return {"echo": ECHO}

    async def run(self, c: CheckedCall) -> ToolResult:
        self.active += 1
        self.most_active = max(self.most_active, self.active)
        await asyncio.sleep(self.delay)
        self.active -= 1
        self.ran.append(c.arguments)
        return ToolResult(json.dumps({"echo": c.arguments["text"]}))

    async def system_message(self) -> ChatMessage | None:
        return None


class Steps:
    def __init__(self, cancel_after: int | None = None) -> None:
        self.steps: list[Step] = []
        self.started: list[str] = []
        self.cancel_after = cancel_after

    async def step(self, step: Step) -> None:
        self.steps.append(step)

    async def tool_started(self, c: CheckedCall) -> None:
        self.started.append(c.name)

    async def cancelled(self) -> bool:
        return self.cancel_after is not None and len(self.steps) >= self.cancel_after


def start() -> RunState:
    return RunState(
        [ChatMessage(role="system", content="sys"), ChatMessage(role="user", content="hi")]
    )


LIMITS = Limits(max_turns=5, token_cap=10_000)


async def test_tool_call_then_final_answer_completes() -> None:
    """A tool call is run and its result appended; the next reply without calls completes."""
    model = ScriptedModel(wants(call("echo", {"text": "x"})), says("done"))
    tools, rec = EchoTools(), Steps()
    result = await loop.run(start(), model, tools, rec, LIMITS)
    assert (result.outcome, result.message) == ("completed", "done")
    assert tools.ran == [{"text": "x"}]
    assert [s.kind for s in rec.steps] == ["model", "tool", "model"]
    assert [s.seq for s in rec.steps] == [1, 2, 3]
    tool_message = model.seen[1][0][-1]
    assert (tool_message.role, tool_message.tool_call_id) == ("tool", "c1")
    assert json.loads(tool_message.content) == {"echo": "x"}
    assert result.state.turns == 2
    assert result.state.total_tokens == 40


async def test_a_model_that_keeps_calling_tools_stops_at_max_turns() -> None:
    """max_turns model calls, then max_turns_exceeded; the last reply's calls are not run."""
    model = ScriptedModel(*(wants(call("echo", {"text": str(i)})) for i in range(3)))
    tools = EchoTools()
    result = await loop.run(start(), model, tools, Steps(), Limits(max_turns=3, token_cap=10_000))
    assert result.outcome == "max_turns_exceeded"
    assert len(model.seen) == 3
    assert len(tools.ran) == 2


async def test_the_token_cap_stops_the_run_and_bounds_each_completion() -> None:
    """Each call may complete at most what is left of the cap; reaching it ends the run."""
    model = ScriptedModel(*(wants(call("echo", {"text": "x"})) for _ in range(5)), tokens=30)
    result = await loop.run(
        start(), model, EchoTools(), Steps(), Limits(max_turns=50, token_cap=100)
    )
    assert result.outcome == "token_cap_exceeded"
    assert [seen[3] for seen in model.seen] == [100, 40]
    assert result.state.total_tokens == 120  # the overshoot is at most one call's prompt


async def test_a_tool_not_on_the_allowlist_is_refused_and_the_model_told() -> None:
    """A call naming an unknown tool never runs; the model gets the refusal as the result."""
    model = ScriptedModel(wants(call("shell", {"cmd": "rm -rf /"})), says("ok"))
    tools, rec = EchoTools(), Steps()
    result = await loop.run(start(), model, tools, rec, LIMITS)
    assert result.outcome == "completed"
    assert tools.ran == []
    refusal = model.seen[1][0][-1].content
    assert "not available to this agent" in refusal
    assert "echo" in refusal
    assert rec.steps[1].error == refusal


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "must be a JSON object"),
        ({"text": 5}, "schema"),
        ({}, "schema"),
    ],
)
async def test_invalid_arguments_go_back_to_the_model_which_corrects_them(
    arguments: Any, expected: str
) -> None:
    """Invalid arguments are not run; the model sees why and its corrected call runs."""
    model = ScriptedModel(
        wants(call("echo", arguments)), wants(call("echo", {"text": "ok"}, "c2")), says("done")
    )
    tools = EchoTools()
    result = await loop.run(start(), model, tools, Steps(), LIMITS)
    assert expected in model.seen[1][0][-1].content
    assert tools.ran == [{"text": "ok"}]
    assert result.outcome == "completed"


async def test_calls_of_one_reply_run_concurrently_and_results_keep_their_order() -> None:
    """Three calls in one reply run at once; results follow the order of the calls."""
    calls = [call("echo", {"text": str(i)}, f"c{i}") for i in range(3)]
    model = ScriptedModel(wants(*calls), says("done"))
    tools = EchoTools(delay=0.05)
    await loop.run(start(), model, tools, Steps(), LIMITS)
    assert tools.most_active == 3
    assert [m.tool_call_id for m in model.seen[1][0][-3:]] == ["c0", "c1", "c2"]


async def test_a_rate_limited_model_call_is_the_run_outcome() -> None:
    """A 429 from the gateway ends the run as rate_limited, carrying the error."""
    result = await loop.run(
        start(), ScriptedModel(RateLimited("slow down")), EchoTools(), Steps(), LIMITS
    )
    assert result.outcome == "rate_limited"
    assert isinstance(result.error, RateLimited)
    failed = await loop.run(
        start(), ScriptedModel(Unavailable("down")), EchoTools(), Steps(), LIMITS
    )
    assert failed.outcome == "failed"


async def test_a_cancelled_run_stops_before_its_next_model_call() -> None:
    """The recorder's cancel is checked before each model call."""
    model = ScriptedModel(wants(call("echo", {"text": "x"})), says("never"))
    result = await loop.run(start(), model, EchoTools(), Steps(cancel_after=2), LIMITS)
    assert result.outcome == "cancelled"
    assert len(model.seen) == 1


async def test_a_resumed_run_does_not_repeat_recorded_tool_calls() -> None:
    """Resumed after one of two calls was recorded: only the other runs, then the model."""
    calls = [call("echo", {"text": "a"}, "ca"), call("echo", {"text": "b"}, "cb")]
    first = Steps()
    initial = start().messages
    model = ScriptedModel(wants(*calls))
    tools = EchoTools()
    await loop.run(RunState(list(initial)), model, tools, first, Limits(max_turns=1, token_cap=999))
    # Max turns 1 stops before running the calls: record only "cb" as if the worker died then.
    recorded = [
        first.steps[0],
        Step(seq=3, kind="tool", message=ChatMessage(role="tool", tool_call_id="cb", content="B")),
    ]
    state = RunState.resume(initial, recorded)
    assert (state.turns, state.next_seq, state.last_model_seq) == (1, 4, 1)
    model2, tools2, rec2 = ScriptedModel(says("done")), EchoTools(), Steps()
    result = await loop.run(state, model2, tools2, rec2, LIMITS)
    assert tools2.ran == [{"text": "a"}]
    assert [(s.seq, s.tool_call_id) for s in rec2.steps if s.kind == "tool"] == [(2, "ca")]
    assert [m.tool_call_id for m in model2.seen[0][0][-2:]] == ["ca", "cb"]
    assert result.outcome == "completed"
    assert result.state.turns == 2


async def test_the_first_call_forces_the_tool_choice_and_later_ones_do_not() -> None:
    """first_tool_choice applies to turn 1 only, so a forced call cannot loop."""
    model = ScriptedModel(wants(call("echo", {"text": "x"})), says("done"))
    limits = Limits(max_turns=5, token_cap=1000, first_tool_choice="required")
    await loop.run(start(), model, EchoTools(), Steps(), limits)
    assert [seen[2] for seen in model.seen] == ["required", "auto"]


class BinaryTools(EchoTools):
    """A tool whose result holds a NUL character (a binary body read as text)."""

    async def run(self, c: CheckedCall) -> ToolResult:
        self.ran.append(c.arguments)
        return ToolResult("bytes\x00here")


async def test_nul_characters_in_arguments_and_results_are_replaced() -> None:
    """PostgreSQL stores no NUL: the tool gets its arguments, and the model and the record the
    tool's result, with U+FFFD in their place."""
    model = ScriptedModel(wants(call("echo", {"text": "a\u0000b"})), says("done"))
    tools, rec = BinaryTools(), Steps()
    result = await loop.run(start(), model, tools, rec, LIMITS)
    assert result.outcome == "completed"
    assert tools.ran == [{"text": "a\ufffdb"}]
    assert model.seen[1][0][-1].content == "bytes\ufffdhere"
    assert rec.steps[1].message.content == "bytes\ufffdhere"
