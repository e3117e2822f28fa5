"""One run of an agent, wired to the fleet: the agent's prompt (a template reference is rendered
through prompt.render at every run), its tools, the gateway as the model, and a recorder that
stores every step, publishes it as an event and, for streamed chats, passes it on.
"""

from __future__ import annotations

import asyncio
import functools
import json
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from google.protobuf.message import Message

from schemas.errors import NotFound, PermissionDenied, ServiceError, Unprocessable
from schemas.v1.agent_pb2 import AgentRunFinishedEvent, AgentRunStepEvent, ChatEvent
from schemas.v1.common_pb2 import ChatMessage
from schemas.v1.prompt_pb2 import RenderRequest
from schemas.v1.prompt_rpc import PromptService
from subjects.events import AGENT_RUN_FINISHED, AGENT_RUN_STEP, EventName
from workers.agent import access, convert, loop
from workers.agent.calls import CheckedCall
from workers.agent.definitions import parse_prompt_ref
from workers.agent.gateway_model import GatewayModel
from workers.agent.loop import Limits, RunResult, RunState, Step, ToolResult
from workers.agent.memory_store import MemoryStore
from workers.agent.runs_store import RunsStore, step_fields
from workers.agent.settings import AgentSettings
from workers.agent.store import AgentStore
from workers.agent.toolbox import Toolbox, specs_of
from workers.runtime.context import Context
from workers.runtime.outbox import Outbox, StagedEvent

Sink = Callable[[ChatEvent], Awaitable[None]]
# Publishes under way, referenced until done (a bare task may be collected mid-flight).
_PUBLISHING: set[asyncio.Task[int]] = set()


def definition_of(row: Any) -> dict[str, Any]:
    value = row["definition"]
    return json.loads(value) if isinstance(value, str) else dict(value)


def system_messages(prompt: str) -> list[ChatMessage]:
    """The system message of a run, none when the agent has no prompt (providers refuse an
    empty one)."""
    return [ChatMessage(role="system", content=prompt)] if prompt else []


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def run_finished(ctx: Context, run: Any) -> tuple[EventName, Message, str]:
    """A finished run's event and its msg_id (one per run)."""
    return (
        AGENT_RUN_FINISHED,
        AgentRunFinishedEvent(run=convert.run(run)),
        f"agent-run:{ctx.tenant}:{run['run_id']}",
    )


@dataclass
class Recorder:
    """Stores each step as it is done with its event (the fleet's outbox, published after the
    commit); tells the loop about a cancel."""

    ctx: Context
    runs: RunsStore
    outbox: Outbox
    agent_id: str
    run_id: str
    session_id: str = ""
    task_id: str = ""
    sink: Sink | None = None
    cancel_check: Callable[[], Awaitable[bool]] | None = None
    on_model_step: Callable[[Step], Awaitable[None]] | None = None
    # Buffered: steps are kept and stored with the run's end in one transaction (chat turns:
    # a crashed worker's request is lost with it, only tasks resume from stored steps).
    buffered: bool = False
    pending: list[Step] = field(default_factory=list)
    # A buffered run's start (its row is written at its end).
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    async def step(self, step: Step) -> None:
        if self.buffered:
            self.pending.append(step)
        else:
            await self.store_step(step)
        if step.kind == "tool" and self.sink is not None:
            await self.sink(
                ChatEvent(
                    type="tool_result",
                    tool_call_id=step.tool_call_id,
                    tool_name=step.tool_name,
                    content=step.message.content,
                    is_error=bool(step.error),
                )
            )
        if step.kind == "model" and self.on_model_step is not None:
            await self.on_model_step(step)

    async def store_step(self, step: Step) -> None:
        """Store a step with its event in a transaction of its own, and publish the event."""
        async with self.runs.pool.acquire() as own, own.transaction():
            staged = await self.stage_step(step, own)
        if staged is not None:
            self.publish([staged])

    async def stage_step(self, step: Step, conn: Any) -> StagedEvent | None:
        """Store a step and stage its event in `conn`'s transaction (None: a repeat)."""
        stored = await self.runs.add_step(
            self.ctx.tenant, self.agent_id, self.run_id, step, conn=conn
        )
        if stored is None:  # a repeat of a recorded step
            return None
        name, event, msg_id = self.step_event(step, stored["created_at"])
        return await self.outbox.stage(conn, self.ctx, name, event, msg_id=msg_id)

    def step_event(
        self, step: Step, created_at: datetime
    ) -> tuple[EventName, AgentRunStepEvent, str]:
        """A stored step's event and its msg_id (the same for a repeat of the step)."""
        event = AgentRunStepEvent(
            run_id=self.run_id,
            agent_id=self.agent_id,
            session_id=self.session_id,
            task_id=self.task_id,
        )
        event.step.CopyFrom(convert.step({**step_fields(step), "created_at": created_at}))
        return AGENT_RUN_STEP, event, f"agent-step:{self.ctx.tenant}:{self.run_id}:{step.seq}"

    async def tool_started(self, call: CheckedCall) -> None:
        if self.sink is not None:
            await self.sink(
                ChatEvent(
                    type="tool_call_started",
                    tool_call_id=call.id,
                    tool_name=call.name[:64],
                    content=call.raw_arguments,
                )
            )

    async def cancelled(self) -> bool:
        return await self.cancel_check() if self.cancel_check is not None else False

    def publish(self, staged: Sequence[StagedEvent]) -> None:
        """Publish committed events in the background, in order, their outbox rows deleted in
        one statement (it never raises; what fails stays in the outbox for its flusher), so
        events add nothing to a run's or a reply's time."""
        task = asyncio.create_task(self.outbox.publish(staged))
        _PUBLISHING.add(task)
        task.add_done_callback(_PUBLISHING.discard)

    async def finished(self) -> None:
        """The run ended; its events are on their way (or left to the flusher)."""


class Runner:
    def __init__(
        self,
        store: AgentStore,
        runs: RunsStore,
        memory: MemoryStore,
        settings: AgentSettings,
        outbox: Outbox,
    ) -> None:
        self.store, self.runs, self.memory, self.settings = store, runs, memory, settings
        self.outbox = outbox

    def recorder(self, ctx: Context, agent_id: str, run_id: str, **fields: Any) -> Recorder:
        return Recorder(ctx, self.runs, self.outbox, agent_id, run_id, **fields)

    async def agent(self, ctx: Context, agent_id: str, permission: str) -> Any:
        row = await self.store.get_agent(ctx.tenant, agent_id)
        await access.require_existing(
            ctx, self.store, "agent", agent_id, permission, row is not None
        )
        return row

    async def base_prompt(self, ctx: Context, definition: dict[str, Any]) -> str:
        ref = definition.get("prompt_ref")
        if not ref:
            return str(definition.get("system_prompt", ""))
        name, version, label = parse_prompt_ref(ref)
        try:
            rendered = await ctx.call(
                PromptService.Render,
                RenderRequest(
                    name=name,
                    version=version,
                    label=label,
                    variables=definition.get("prompt_variables", {}),
                ),
            )
        except NotFound:
            raise Unprocessable(
                f"the agent's prompt template {ref} does not exist",
                details={"field": "agent.prompt_ref"},
            ) from None
        if rendered.kind == "text":
            return rendered.text
        return "\n\n".join(m.content for m in rendered.messages if m.role == "system")

    def limits(self, definition: dict[str, Any]) -> Limits:
        s = self.settings
        return Limits(
            max_turns=definition.get("max_turns") or s.default_max_turns,
            token_cap=min(
                definition.get("max_tokens_per_run") or s.default_token_cap, s.max_token_cap
            ),
            max_output_tokens=definition.get("max_output_tokens", 0),
            first_tool_choice=definition.get("tool_choice") or "auto",
            max_argument_bytes=s.max_argument_bytes,
            max_result_chars=s.max_tool_result_chars,
        )

    async def toolbox(
        self, ctx: Context, row: Any, definition: dict[str, Any], run_id: str, depth: int
    ) -> Toolbox:
        tool_ids = definition.get("tools", [])
        found = await self.store.get_tools(ctx.tenant, tool_ids) if tool_ids else {}
        memory = definition.get("memory", {})
        box = Toolbox(
            ctx=ctx,
            settings=self.settings,
            memory_store=self.memory,
            runs_store=self.runs,
            agent_id=row["agent_id"],
            user=access.user_of(ctx),
            run_id=run_id,
            memory=memory,
            base_prompt=await self.base_prompt(ctx, definition),
            depth=depth,
            handoff=lambda agent_id, message, d: self.handoff(ctx, agent_id, message, d),
        )
        box.specs_by_name = specs_of([found[t] for t in tool_ids if t in found], memory)
        return box

    async def run(
        self,
        ctx: Context,
        row: Any,
        box: Toolbox,
        state: RunState,
        recorder: Recorder,
        *,
        on_delta: Callable[[str], Awaitable[None]] | None = None,
        resumable: bool = False,
        initial: Sequence[ChatMessage] = (),
        session_messages: Callable[[], Sequence[ChatMessage]] | None = None,
    ) -> tuple[RunResult, Any]:
        """Drive the loop and store its outcome; returns the result and the finished run row.
        `resumable`: a retryable model failure leaves the run open (row None) to be resumed.
        A buffered recorder's run (begun with `initial`) is stored here, with its steps, in
        the statement of its end, with what `session_messages` gives appended to its session."""
        definition = definition_of(row)
        metadata = {"run_id": recorder.run_id}
        if recorder.session_id:
            metadata["session_id"] = recorder.session_id
        if recorder.task_id:
            metadata["task_id"] = recorder.task_id
        model = GatewayModel(
            ctx,
            row["agent_id"],
            definition.get("model", ""),
            definition.get("temperature"),
            metadata,
            on_delta=on_delta,
        )
        result = await loop.run(state, model, box, recorder, self.limits(definition))
        if resumable and result.outcome == loop.FAILED and result.error and result.error.retryable:
            await recorder.finished()
            return result, None
        end: dict[str, Any] = {
            "outcome": result.outcome,
            "turns": result.state.turns,
            "prompt_tokens": result.state.prompt_tokens,
            "completion_tokens": result.state.completion_tokens,
            "cost_usd": result.state.cost_usd,
            "error": result.error.message if result.error else "",
        }
        if recorder.buffered:  # the run and its steps are written now, at its end
            messages = session_messages() if session_messages else ()
            finished, staged = await self._record(ctx, row, recorder, initial, messages, end)
        else:
            async with self.runs.pool.acquire() as conn, conn.transaction():
                finished = await self.runs.finish_run(
                    ctx.tenant, row["agent_id"], recorder.run_id, conn=conn, **end
                )
                staged = await self.outbox.stage_many(conn, ctx, [run_finished(ctx, finished)])
        recorder.publish(staged)
        await recorder.finished()
        return result, finished

    async def _record(
        self,
        ctx: Context,
        row: Any,
        recorder: Recorder,
        initial: Sequence[ChatMessage],
        session_messages: Sequence[ChatMessage],
        end: dict[str, Any],
    ) -> tuple[dict[str, Any], list[StagedEvent]]:
        """A buffered run's end: the run, its steps, the session's new messages and every
        event in one statement. Its times are the worker's (begun when the recorder was made,
        finished now), so the events can be built before the statement."""
        finished: dict[str, Any] = {
            "run_id": recorder.run_id,
            "agent_id": row["agent_id"],
            "session_id": recorder.session_id,
            "task_id": recorder.task_id,
            "agent_version": row["version"],
            "started_at": recorder.started_at,
            "finished_at": datetime.now(UTC),
            **end,
        }
        events: list[tuple[EventName, Message, str]] = [
            recorder.step_event(s, finished["finished_at"]) for s in recorder.pending
        ]
        events.append(run_finished(ctx, finished))
        staged = await self.runs.record_run(
            ctx.tenant,
            finished,
            user=access.user_of(ctx),
            initial=initial,
            steps=recorder.pending,
            session_messages=session_messages,
            events=functools.partial(self.outbox.event_rows, ctx, events),
        )
        return finished, staged

    async def start(
        self, ctx: Context, row: Any, run_id: str, initial: Sequence[ChatMessage], **ids: str
    ) -> RunState:
        await self.runs.start_run(
            ctx.tenant,
            row["agent_id"],
            run_id,
            agent_version=row["version"],
            initial=initial,
            user=access.user_of(ctx),
            **ids,
        )
        return RunState(list(initial))

    async def handoff(self, ctx: Context, agent_id: str, message: str, depth: int) -> ToolResult:
        """Another agent as a tool: a run of its own (no session), its answer as the result."""
        try:
            row = await self.agent(ctx, agent_id, "execute")
        except (NotFound, PermissionDenied) as exc:
            return ToolResult(f"agent {agent_id} cannot be called: {exc.message}", is_error=True)
        run_id = new_id("r")
        box = await self.toolbox(ctx, row, definition_of(row), run_id, depth)
        initial = [
            *system_messages(await box.system_prompt()),
            ChatMessage(role="user", content=message),
        ]
        state = await self.start(ctx, row, run_id, initial)
        recorder = self.recorder(ctx, agent_id, run_id)
        try:
            result, _ = await self.run(ctx, row, box, state, recorder)
        except ServiceError as exc:
            return ToolResult(f"agent {agent_id} failed: {exc.message}", is_error=True)
        if result.outcome != loop.COMPLETED:
            reason = result.error.message if result.error else result.message
            return ToolResult(f"agent {agent_id} ended {result.outcome}: {reason}", is_error=True)
        return ToolResult(result.message)
