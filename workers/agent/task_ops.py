"""Tasks: `execute` over request-reply stores the task and publishes the JetStream job
`ai.v1.<tenant>.job.agent.execute`; the same op delivered as that job runs it.

Idempotent by task id: the job's Nats-Msg-Id is `agent-task:<tenant>:<task id>` (the tenant in
it, so two tenants' ids never collide in the stream's duplicate window), a task id already
stored is not created twice, a finished task is never run again, and a redelivered job (after
a crash) resumes the task's run from its recorded steps: tool calls whose results were
recorded are not made again. The run id is derived from the task id for that reason.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from schemas.errors import BadRequest, Conflict, NotFound
from schemas.v1.agent_pb2 import (
    AgentTaskProgressEvent,
    CancelTaskRequest,
    ExecuteRequest,
    ExecuteResponse,
    GetTaskRequest,
    GetTaskResponse,
    ListTasksRequest,
    ListTasksResponse,
)
from schemas.v1.agent_rpc import AgentService
from schemas.v1.common_pb2 import ChatMessage
from subjects.events import AGENT_TASK_PROGRESS
from workers.agent import access, convert, loop
from workers.agent.base import Handlers
from workers.agent.definitions import check_id
from workers.agent.loop import RunState, Step
from workers.agent.messages import message_of
from workers.agent.runner import definition_of, new_id, system_messages
from workers.runtime import paging as pages
from workers.runtime import validation as check
from workers.runtime.context import Context

FINISHED = ("completed", "failed", "cancelled")
MAX_PARAMETERS_BYTES = 64 * 1024


def task_message(task_type: str, parameters: dict[str, Any]) -> str:
    return f"Task: {task_type}\nParameters (JSON): {json.dumps(parameters, ensure_ascii=False)}"


def step_of(row: Any) -> Step:
    return Step(
        seq=row["seq"],
        kind=row["kind"],
        message=message_of(json.loads(row["message"])),
        turn=row["turn"],
        tool_name=row["tool_name"],
        tool_call_id=row["tool_call_id"],
        arguments=row["arguments"],
        result_bytes=row["result_bytes"],
        error=row["error"],
        prompt_tokens=row["prompt_tokens"],
        completion_tokens=row["completion_tokens"],
        cost_usd=row["cost_usd"],
        finish_reason=row["finish_reason"],
        duration_ms=row["duration_ms"],
    )


class TaskHandlers(Handlers):
    async def execute(self, ctx: Context, req: ExecuteRequest) -> ExecuteResponse:
        check_id(req.task_type, "task_type")
        task_id = check_id(req.task_id, "task_id", required=False)
        if req.priority > 9:
            raise BadRequest("priority must be 0 to 9", details={"field": "priority"})
        parameters = check.struct(req.parameters, "parameters", max_bytes=MAX_PARAMETERS_BYTES)
        row = await self.agent_row(ctx, req.agent_id, "execute")
        if ctx.message_id is None:
            task_id = task_id or new_id("t")
        else:
            task_id = task_id or "j-" + hashlib.sha256(ctx.message_id.encode()).hexdigest()[:32]
        task, created = await self.runs.create_task(
            ctx.tenant,
            row["agent_id"],
            task_id,
            req.task_type,
            parameters,
            req.priority,
            access.user_of(ctx),
        )
        if task is None or task["agent_id"] != row["agent_id"]:
            raise Conflict("task_id is used by another agent's task", details={"field": "task_id"})
        if ctx.message_id is None:
            if task["status"] == "queued":
                await self._publish(ctx, req, task_id)
            return ExecuteResponse(task_id=task_id, status=task["status"], created=created)
        return await self._run_task(ctx, row, task)

    async def _publish(self, ctx: Context, req: ExecuteRequest, task_id: str) -> None:
        job = ExecuteRequest()
        job.CopyFrom(req)
        job.task_id = task_id
        # The caller's X-User-ID travels with the job (the runtime forwards it).
        await ctx.enqueue(AgentService.Execute, job, msg_id=f"agent-task:{ctx.tenant}:{task_id}")

    async def _run_task(self, ctx: Context, row: Any, task: Any) -> ExecuteResponse:
        task_id = task["task_id"]
        if task["status"] in FINISHED:
            return ExecuteResponse(task_id=task_id, status=task["status"])
        run_id = "r-" + task_id
        started = await self._update(
            ctx, task_id, status="running", run_id=run_id, attempts=ctx.attempt
        )
        if started is None:  # cancelled meanwhile
            return ExecuteResponse(
                task_id=task_id, status=await self.runs.task_status(ctx.tenant, task_id)
            )
        definition = definition_of(row)
        box = await self.runner.toolbox(ctx, row, definition, run_id, depth=0)
        run = await self.runs.get_run(ctx.tenant, row["agent_id"], run_id)
        if run is None:
            prompt = ChatMessage(
                role="user", content=task_message(task["task_type"], json.loads(task["parameters"]))
            )
            initial = [*system_messages(await box.system_prompt()), prompt]
            state = await self.runner.start(ctx, row, run_id, initial, task_id=task_id)
        elif run["outcome"] != "running":
            return await self._settle(ctx, task_id, run, None)
        else:
            steps = [step_of(s) for s in await self.runs.steps(ctx.tenant, row["agent_id"], run_id)]
            initial = [message_of(m) for m in json.loads(run["initial"])]
            state = RunState.resume(initial, steps)
        max_turns = self.runner.limits(definition).max_turns

        async def cancelled() -> bool:
            return await self.runs.task_status(ctx.tenant, task_id) == "cancelled"

        async def progressed(step: Step) -> None:
            await self._update(ctx, task_id, progress=min(step.turn / max_turns, 0.99))

        recorder = self.runner.recorder(
            ctx,
            row["agent_id"],
            run_id,
            task_id=task_id,
            cancel_check=cancelled,
            on_model_step=progressed,
        )
        # A retryable failure leaves the run open for the job's next attempt, except on the last.
        resumable = ctx.attempt < self.job_attempts
        result, finished = await self.runner.run(
            ctx, row, box, state, recorder, resumable=resumable
        )
        if finished is None:
            assert result.error is not None
            raise result.error  # retried by the job runtime; the run resumes from its steps
        return await self._settle(ctx, task_id, finished, result)

    async def _settle(
        self, ctx: Context, task_id: str, run: Any, result: loop.RunResult | None
    ) -> ExecuteResponse:
        outcome = run["outcome"]
        status = {"completed": "completed", "cancelled": "cancelled"}.get(outcome, "failed")
        text = result.message if result is not None else ""
        await self._update(
            ctx,
            task_id,
            status=status,
            progress=1.0,
            outcome=outcome,
            result=text,
            error=run["error"] or ("" if status != "failed" else outcome),
        )
        return ExecuteResponse(
            task_id=task_id, status=await self.runs.task_status(ctx.tenant, task_id)
        )

    async def _update(self, ctx: Context, task_id: str, **fields: Any) -> Any:
        """Change a task that is not finished and stage its progress event in the same
        transaction (published after the commit); None when it is finished."""
        async with self.runs.pool.acquire() as conn, conn.transaction():
            task = await self.runs.update_task(ctx.tenant, task_id, conn=conn, **fields)
            if task is None:
                return None
            event = AgentTaskProgressEvent(
                task_id=task["task_id"],
                agent_id=task["agent_id"],
                status=task["status"],
                progress=task["progress"],
                outcome=task["outcome"],
            )
            staged = await self.runner.outbox.stage(conn, ctx, AGENT_TASK_PROGRESS, event)
        await self.runner.outbox.publish(staged)
        return task

    async def get_task(self, ctx: Context, req: GetTaskRequest) -> GetTaskResponse:
        return GetTaskResponse(task=convert.task(await self._task(ctx, req.agent_id, req.task_id)))

    async def cancel_task(self, ctx: Context, req: CancelTaskRequest) -> GetTaskResponse:
        task = await self._task(ctx, req.agent_id, req.task_id)
        updated = await self._update(ctx, task["task_id"], status="cancelled")
        return GetTaskResponse(task=convert.task(updated or task))

    async def list_tasks(self, ctx: Context, req: ListTasksRequest) -> ListTasksResponse:
        row = await self.agent_row(ctx, req.agent_id, "execute")
        page = pages.start(ctx.tenant, req.page, {"op": "tasks", "agent": row["agent_id"]})
        rows = await self.runs.list_tasks(ctx.tenant, row["agent_id"], page.after, page.size + 1)
        kept, token = pages.finish(
            ctx.tenant, page, rows, lambda r: (r["created_at"], r["task_id"])
        )
        return ListTasksResponse(tasks=[convert.task(r) for r in kept], page=token)

    async def _task(self, ctx: Context, agent_id: str, task_id: str) -> Any:
        check_id(task_id, "task_id")
        row = await self.agent_row(ctx, agent_id, "execute")
        task = await self.runs.get_task(ctx.tenant, row["agent_id"], task_id)
        if task is None:
            raise NotFound("task not found", details={"field": "task_id"})
        return task
