"""The bounded agent loop: model call with the agent's tools → run the requested calls (those
of one reply concurrently) → append their results → repeat, until a final answer, `max_turns`
model calls, the run's token cap, a cancel, or a model error.

It knows nothing of NATS or SQL: the model, the tools and the recorder are small interfaces,
so the loop is tested with scripted replies. Every step (one model call, one tool call) is
handed to the recorder as soon as it is done, with the message it appends; a run restarted
from those steps (`RunState.resume`) goes on where it stopped and never repeats a tool call
whose result was recorded.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from schemas.errors import ServiceError
from schemas.v1.common_pb2 import ChatMessage, ToolCall
from workers.agent.calls import CheckedCall, ToolSpec, check_call
from workers.runtime.validation import storable

COMPLETED = "completed"
MAX_TURNS_EXCEEDED = "max_turns_exceeded"
TOKEN_CAP_EXCEEDED = "token_cap_exceeded"  # noqa: S105 (not a secret)
CANCELLED = "cancelled"
RATE_LIMITED = "rate_limited"
FAILED = "failed"


@dataclass(frozen=True)
class Limits:
    max_turns: int
    token_cap: int
    max_output_tokens: int = 0  # 0: only the cap limits a call's completion
    first_tool_choice: str = "auto"
    max_argument_bytes: int = 64 * 1024
    max_result_chars: int = 16_000


@dataclass(frozen=True)
class ModelReply:
    message: ChatMessage
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    duration_ms: float


class Model(Protocol):
    async def complete(
        self,
        messages: Sequence[ChatMessage],
        tools: Sequence[ToolSpec],
        tool_choice: str,
        max_tokens: int | None,
    ) -> ModelReply: ...


@dataclass(frozen=True)
class ToolResult:
    content: str
    is_error: bool = False


class Tools(Protocol):
    @property
    def specs(self) -> dict[str, ToolSpec]: ...

    async def run(self, call: CheckedCall) -> ToolResult: ...

    async def system_message(self) -> ChatMessage | None:
        """A new system message when what it shows (core memory) changed, else None."""
        ...


@dataclass(frozen=True)
class Step:
    seq: int
    kind: str  # model or tool
    message: ChatMessage  # what the step appended to the conversation
    turn: int = 0
    tool_name: str = ""
    tool_call_id: str = ""
    arguments: str = ""
    result_bytes: int = 0
    error: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    finish_reason: str = ""
    duration_ms: float = 0.0


class Recorder(Protocol):
    async def step(self, step: Step) -> None: ...

    async def tool_started(self, call: CheckedCall) -> None: ...

    async def cancelled(self) -> bool: ...


@dataclass
class RunState:
    messages: list[ChatMessage]
    turns: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    tool_calls: int = 0
    next_seq: int = 1
    last_model_seq: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @classmethod
    def resume(cls, initial: Sequence[ChatMessage], steps: Sequence[Step]) -> RunState:
        """The state after the recorded `steps` (in seq order) of a run that began with
        `initial`: its conversation, counters and where numbering goes on."""
        state = cls(list(initial))
        for step in sorted(steps, key=lambda s: s.seq):
            state.messages.append(step.message)
            state.next_seq = max(state.next_seq, step.seq + 1)
            if step.kind == "model":
                state.turns += 1
                state.prompt_tokens += step.prompt_tokens
                state.completion_tokens += step.completion_tokens
                state.cost_usd += step.cost_usd
                state.last_model_seq = step.seq
            else:
                state.tool_calls += 1
        return state

    def unanswered(self) -> tuple[list[ToolCall], list[ChatMessage]]:
        """The calls of the last model reply that have no recorded result, and the results
        recorded so far (a run resumed between a reply and all of its results)."""
        for i in range(len(self.messages) - 1, -1, -1):
            message = self.messages[i]
            if message.role == "assistant":
                answered = self.messages[i + 1 :]
                if not message.tool_calls or any(m.role != "tool" for m in answered):
                    return [], []
                done = {m.tool_call_id for m in answered}
                missing = [c for c in message.tool_calls if c.id not in done]
                del self.messages[i + 1 :]
                return missing, list(answered)
        return [], []


@dataclass
class RunResult:
    outcome: str
    message: str
    state: RunState
    error: ServiceError | None = None
    steps: list[Step] = field(default_factory=list)


async def run(
    state: RunState, model: Model, tools: Tools, recorder: Recorder, limits: Limits
) -> RunResult:
    """Drive the run to an outcome; model errors end it (rate_limited / failed) with the error."""
    missing, answered = state.unanswered()
    if missing or answered:
        last = state.messages[-1]
        await _run_calls(state, list(last.tool_calls), tools, recorder, limits, answered)
    while True:
        if await recorder.cancelled():
            return _result(CANCELLED, state)
        if state.turns >= limits.max_turns:
            return _result(MAX_TURNS_EXCEEDED, state)
        remaining = limits.token_cap - state.total_tokens
        if remaining <= 0:
            return _result(TOKEN_CAP_EXCEEDED, state)
        max_tokens = min(limits.max_output_tokens or remaining, remaining)
        choice = limits.first_tool_choice if state.turns == 0 else "auto"
        refreshed = await tools.system_message()
        if refreshed is not None and state.messages and state.messages[0].role == "system":
            state.messages[0] = refreshed
        try:
            reply = await model.complete(
                state.messages, list(tools.specs.values()), choice, max_tokens
            )
        except ServiceError as exc:
            return _result(RATE_LIMITED if exc.status == 429 else FAILED, state, error=exc)
        state.turns += 1
        state.prompt_tokens += reply.prompt_tokens
        state.completion_tokens += reply.completion_tokens
        state.cost_usd += reply.cost_usd
        state.messages.append(reply.message)
        seq = state.last_model_seq = state.next_seq
        state.next_seq += 1 + len(reply.message.tool_calls)
        await recorder.step(
            Step(
                seq=seq,
                kind="model",
                message=reply.message,
                turn=state.turns,
                prompt_tokens=reply.prompt_tokens,
                completion_tokens=reply.completion_tokens,
                cost_usd=reply.cost_usd,
                finish_reason=reply.finish_reason,
                duration_ms=reply.duration_ms,
            )
        )
        if not reply.message.tool_calls:
            return _result(COMPLETED, state)
        if state.total_tokens >= limits.token_cap:
            return _result(TOKEN_CAP_EXCEEDED, state)
        if state.turns >= limits.max_turns:
            return _result(MAX_TURNS_EXCEEDED, state)
        await _run_calls(state, list(reply.message.tool_calls), tools, recorder, limits, [])


async def _run_calls(
    state: RunState,
    calls: list[ToolCall],
    tools: Tools,
    recorder: Recorder,
    limits: Limits,
    answered: list[ChatMessage],
) -> None:
    """Run the calls without a recorded result concurrently, record each as it finishes, then
    append every result in the order of the calls."""
    done = {m.tool_call_id: m for m in answered}
    specs = tools.specs

    async def one(index: int, call: ToolCall) -> ChatMessage:
        if call.id in done:
            return done[call.id]
        checked = check_call(call, specs, max_argument_bytes=limits.max_argument_bytes)
        await recorder.tool_started(checked)
        started = time.perf_counter()
        if checked.error:
            result = ToolResult(checked.error, is_error=True)
        else:
            result = await _execute(tools, checked)
        content = storable(result.content)
        if len(content) > limits.max_result_chars:
            content = content[: limits.max_result_chars] + " …[cut]"
        message = ChatMessage(role="tool", tool_call_id=call.id, content=content)
        await recorder.step(
            Step(
                seq=state.last_model_seq + 1 + index,
                kind="tool",
                message=message,
                tool_name=call.function.name[:64],
                tool_call_id=call.id,
                arguments=call.function.arguments,
                result_bytes=len(content.encode()),
                error=content if result.is_error else "",
                duration_ms=(time.perf_counter() - started) * 1000,
            )
        )
        return message

    results = await asyncio.gather(*(one(i, c) for i, c in enumerate(calls)))
    state.tool_calls += sum(1 for c in calls if c.id not in done)
    state.messages.extend(results)


async def _execute(tools: Tools, call: CheckedCall) -> ToolResult:
    try:
        return await tools.run(call)
    except ServiceError as exc:
        return ToolResult(f"the tool failed: {exc.message[:500]}", is_error=True)


def _result(outcome: str, state: RunState, *, error: ServiceError | None = None) -> RunResult:
    text = next(
        (m.content for m in reversed(state.messages) if m.role == "assistant" and m.content), ""
    )
    return RunResult(outcome, text, state, error=error)
