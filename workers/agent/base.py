"""What every group of the agent component's handlers shares, and their common checks."""

from __future__ import annotations

from typing import Any

from schemas.errors import BadRequest, PermissionDenied
from workers.agent import access
from workers.agent.definitions import check_id
from workers.agent.memory_store import MemoryStore
from workers.agent.runner import Runner
from workers.agent.runs_store import RunsStore
from workers.agent.settings import AgentSettings
from workers.agent.store import AgentStore
from workers.runtime import validation as check
from workers.runtime.context import Context


class Handlers:
    store: AgentStore
    runs: RunsStore
    memory: MemoryStore
    settings: AgentSettings
    runner: Runner
    job_attempts: int  # AIFLEET_JOB_MAX_DELIVER: a task's last attempt finishes its run

    async def agent_row(self, ctx: Context, agent_id: str, permission: str) -> Any:
        """The agent (404), if the caller holds `permission` on it (403)."""
        return await self.runner.agent(ctx, check_id(agent_id, "agent_id"), permission)

    def check_text(self, value: str, field: str, *, required: bool = True) -> str:
        """A message or text of a request: no NUL, within AIFLEET_AGENT_MAX_MESSAGE_BYTES."""
        if required and not value.strip():
            raise BadRequest(f"{field} is required", details={"field": field})
        return check.text(value, field, max_bytes=self.settings.max_message_bytes)

    def subject_user(self, ctx: Context, user_id: str) -> str:
        """Whose memories or sessions a request means: a user acts only on their own; a
        tenant-level call names any user (or "" for tenant-level ones)."""
        caller = access.user_of(ctx)
        check_id(user_id, "user_id", required=False)
        if caller:
            if user_id and user_id != caller:
                raise PermissionDenied(
                    "a user may act only on their own memories and sessions",
                    details={"field": "user_id"},
                )
            return caller
        return user_id
