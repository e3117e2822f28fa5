"""Chat in server-side sessions, streamed or not, and reading sessions and runs.

The client sends only the new message. The history is read from PostgreSQL and fitted to the
agent's token budget by prompt.build_context (system prompt and newest turns kept); the run's
new messages are appended to the session when it ends, whatever its outcome.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from schemas.errors import NotFound, RateLimited, ServiceError
from schemas.v1.agent_pb2 import (
    ChatEvent,
    ChatRequest,
    ChatResponse,
    DeleteSessionRequest,
    DeleteSessionResponse,
    GetRunRequest,
    GetRunResponse,
    GetSessionRequest,
    GetSessionResponse,
    ListSessionsRequest,
    ListSessionsResponse,
)
from schemas.v1.common_pb2 import ChatMessage
from schemas.v1.prompt_pb2 import BuildContextRequest
from schemas.v1.prompt_rpc import PromptService
from workers.agent import access, convert
from workers.agent.base import Handlers
from workers.agent.context_fit import surely_fits
from workers.agent.definitions import check_id
from workers.agent.loop import RunState
from workers.agent.runner import definition_of, new_id, system_messages
from workers.runtime import paging as pages
from workers.runtime.context import Context

Sink = Callable[[ChatEvent], Awaitable[None]]


class ChatHandlers(Handlers):
    async def chat(self, ctx: Context, req: ChatRequest) -> ChatResponse:
        return await self._chat(ctx, req, None)

    async def chat_stream(self, ctx: Context, req: ChatRequest) -> AsyncIterator[ChatEvent]:
        queue: asyncio.Queue[ChatEvent | None] = asyncio.Queue()

        async def sink(event: ChatEvent) -> None:
            await queue.put(event)

        async def drive() -> ChatResponse:
            try:
                return await self._chat(ctx, req, sink)
            finally:
                await queue.put(None)

        task = asyncio.create_task(drive())
        try:
            while (event := await queue.get()) is not None:
                yield event
            response = await task  # raises the run's error as the stream's last message
            yield ChatEvent(
                type="final",
                session_id=response.session_id,
                run_id=response.run_id,
                response=response,
            )
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, ServiceError):
                    await task

    async def _chat(self, ctx: Context, req: ChatRequest, sink: Sink | None) -> ChatResponse:
        message = self.check_text(req.message, "message")
        check_id(req.session_id, "session_id", required=False)
        agent_id = check_id(req.agent_id, "agent_id")
        # The agent and the session in one query (a new id of ours has no session to find).
        row, owner = await self.runs.agent_and_session(ctx.tenant, agent_id, req.session_id)
        await access.require_existing(
            ctx, self.store, "agent", agent_id, "execute", row is not None
        )
        user = access.user_of(ctx)
        session_id = req.session_id or new_id("s")
        # A user may only use their own sessions; an id not used yet is free (the session is
        # created with its first messages).
        if owner is not None and user and owner != user:
            raise NotFound("session not found", details={"field": "session_id"})
        definition = definition_of(row)
        run_id = new_id("r")
        box = await self.runner.toolbox(ctx, row, definition, run_id, depth=0)
        history = (
            await self.runs.history(
                ctx.tenant, row["agent_id"], session_id, self.settings.history_messages
            )
            if owner is not None
            else []
        )
        user_message = ChatMessage(role="user", content=message)
        initial = await self._fitted(
            ctx, definition, await box.system_prompt(), [*history, user_message]
        )
        state = RunState(list(initial))
        if sink is not None:
            await sink(ChatEvent(type="run_started", session_id=session_id, run_id=run_id))

        async def delta(text: str) -> None:
            assert sink is not None
            await sink(ChatEvent(type="token", delta=text))

        recorder = self.runner.recorder(
            ctx, row["agent_id"], run_id, session_id=session_id, sink=sink, buffered=True
        )

        def session_messages() -> list[ChatMessage]:
            """The turn's messages for the session: the user's and what the run appended."""
            return [user_message, *state.messages[len(initial) :]]

        result, _ = await self.runner.run(
            ctx,
            row,
            box,
            state,
            recorder,
            on_delta=delta if sink is not None else None,
            initial=initial,
            session_messages=session_messages,
        )
        if result.error is not None:
            details = {"run_id": run_id, "session_id": session_id, "outcome": result.outcome}
            if isinstance(result.error, RateLimited):
                raise RateLimited(
                    f"the run was rate limited: {result.error.message}", details=details
                )
            raise type(result.error)(
                result.error.message, details=details, retryable=result.error.retryable
            )
        return ChatResponse(
            session_id=session_id,
            run_id=run_id,
            message=result.message,
            outcome=result.outcome,
            turns=result.state.turns,
            tool_calls=result.state.tool_calls,
            usage=convert.usage(result.state.prompt_tokens, result.state.completion_tokens),
            cost_usd=result.state.cost_usd,
        )

    async def _fitted(
        self,
        ctx: Context,
        definition: dict[str, Any],
        system_prompt: str,
        messages: list[ChatMessage],
    ) -> list[ChatMessage]:
        """The messages the model gets: all of them when they surely fit the budget, else
        what prompt.build_context keeps (the system prompt and the newest turns)."""
        budget = definition.get("context_budget_tokens") or self.settings.default_context_tokens
        if surely_fits(system_prompt, messages, budget):
            return [*system_messages(system_prompt), *messages]
        fitted = await ctx.call(
            PromptService.BuildContext,
            BuildContextRequest(
                model=definition.get("model") or self.settings.context_model,
                budget_tokens=budget,
                system_prompt=system_prompt,
                messages=messages,
            ),
        )
        return list(fitted.messages)

    async def list_sessions(self, ctx: Context, req: ListSessionsRequest) -> ListSessionsResponse:
        user = self.subject_user(ctx, req.user_id)
        row = await self.agent_row(ctx, req.agent_id, "execute")
        page = pages.start(
            ctx.tenant, req.page, {"op": "sessions", "agent": row["agent_id"], "user": user}
        )
        rows = await self.runs.list_sessions(
            ctx.tenant, row["agent_id"], user, page.after, page.size + 1
        )
        kept, token = pages.finish(
            ctx.tenant, page, rows, lambda r: (r["updated_at"], r["session_id"])
        )
        return ListSessionsResponse(sessions=[convert.session(r) for r in kept], page=token)

    async def get_session(self, ctx: Context, req: GetSessionRequest) -> GetSessionResponse:
        check_id(req.session_id, "session_id")
        row = await self.agent_row(ctx, req.agent_id, "execute")
        session = await self._session(ctx, row["agent_id"], req.session_id)
        page = pages.start(
            ctx.tenant,
            req.page,
            {"op": "messages", "agent": row["agent_id"], "session": req.session_id},
        )
        after = int(page.after[0]) if page.after else 0
        rows = await self.runs.session_messages(
            ctx.tenant, row["agent_id"], req.session_id, after, page.size + 1
        )
        kept, token = pages.finish(ctx.tenant, page, rows, lambda r: (r["seq"],))
        return GetSessionResponse(
            session=convert.session(session),
            messages=[convert.session_message(r) for r in kept],
            page=token,
        )

    async def delete_session(
        self, ctx: Context, req: DeleteSessionRequest
    ) -> DeleteSessionResponse:
        check_id(req.session_id, "session_id")
        row = await self.agent_row(ctx, req.agent_id, "execute")
        deleted = await self.runs.delete_session(
            ctx.tenant, row["agent_id"], req.session_id, access.user_of(ctx)
        )
        if not deleted:
            raise NotFound("session not found", details={"field": "session_id"})
        return DeleteSessionResponse(deleted=True)

    async def get_run(self, ctx: Context, req: GetRunRequest) -> GetRunResponse:
        check_id(req.run_id, "run_id")
        row = await self.agent_row(ctx, req.agent_id, "execute")
        run = await self.runs.get_run(ctx.tenant, row["agent_id"], req.run_id)
        user = access.user_of(ctx)
        if run is None or (user and run["user_id"] != user):
            raise NotFound("run not found", details={"field": "run_id"})
        steps = await self.runs.steps(ctx.tenant, row["agent_id"], req.run_id)
        return GetRunResponse(run=convert.run(run), steps=[convert.step(s) for s in steps])

    async def _session(self, ctx: Context, agent_id: str, session_id: str) -> Any:
        session, usable = await self.runs.open_session(
            ctx.tenant, agent_id, session_id, access.user_of(ctx)
        )
        if session is None or not usable:
            raise NotFound("session not found", details={"field": "session_id"})
        return session
