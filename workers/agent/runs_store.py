"""Sessions and their messages, runs and their steps, and tasks (schema `agent`); every
statement names its tenant and the agent.

A step is stored the moment it is done, with the message it appended, so a run can be
rebuilt from `runs.initial` plus its steps after a crash (`loop.RunState.resume`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from schemas.v1.common_pb2 import ChatMessage
from workers.agent.loop import Step
from workers.agent.messages import message_json, message_of
from workers.agent.store import PgStore
from workers.runtime.outbox import EventRows, StagedEvent

Row = Any
Db = Any  # an asyncpg pool or a connection in a transaction


def step_fields(step: Step) -> dict[str, Any]:
    """A step's columns but its message (and `created_at`, set by the database)."""
    return {
        "seq": step.seq,
        "kind": step.kind,
        "turn": step.turn,
        "tool_name": step.tool_name,
        "tool_call_id": step.tool_call_id,
        "arguments": step.arguments,
        "result_bytes": step.result_bytes,
        "error": step.error,
        "prompt_tokens": step.prompt_tokens,
        "completion_tokens": step.completion_tokens,
        "cost_usd": step.cost_usd,
        "finish_reason": step.finish_reason,
        "duration_ms": step.duration_ms,
    }


def step_json(step: Step) -> dict[str, Any]:
    return {**step_fields(step), "message": message_json(step.message)}


class RunsStore(PgStore):
    # -- sessions -----------------------------------------------------------------------------

    async def open_session(
        self, tenant: str, agent_id: str, session_id: str, user: str
    ) -> tuple[Row | None, bool]:
        """(the session, whether it may be used): a user may only use their own sessions; an
        id not used yet is free (the session is created with its first messages)."""
        row = await self.pool.fetchrow(
            "SELECT * FROM agent.sessions WHERE tenant = $1 AND agent_id = $2 AND session_id = $3",
            tenant,
            agent_id,
            session_id,
        )
        if row is None:
            return None, True
        return row, not user or row["user_id"] == user

    async def agent_and_session(
        self, tenant: str, agent_id: str, session_id: str
    ) -> tuple[Row, str | None]:
        """The agent's row (None: no such agent) and the user owning `session_id` (None: no
        such session), in one query: a chat turn's first read."""
        row = await self.pool.fetchrow(
            "SELECT a.*, s.user_id AS session_user FROM agent.agents a"
            " LEFT JOIN agent.sessions s ON s.tenant = a.tenant AND s.agent_id = a.agent_id"
            " AND s.session_id = $3 WHERE a.tenant = $1 AND a.agent_id = $2",
            tenant,
            agent_id,
            session_id,
        )
        if row is None:
            return None, None
        return row, row["session_user"]

    async def history(
        self, tenant: str, agent_id: str, session_id: str, limit: int
    ) -> list[ChatMessage]:
        """The newest `limit` messages, oldest first."""
        rows = await self.pool.fetch(
            "SELECT message FROM (SELECT seq, message FROM agent.messages WHERE tenant = $1"
            " AND agent_id = $2 AND session_id = $3 ORDER BY seq DESC LIMIT $4) m ORDER BY seq",
            tenant,
            agent_id,
            session_id,
            limit,
        )
        return [message_of(json.loads(r["message"])) for r in rows]

    async def list_sessions(
        self, tenant: str, agent_id: str, user: str, after: tuple[Any, ...] | None, limit: int
    ) -> list[Row]:
        when, last = after if after else (None, None)
        return await self._fetch(
            "SELECT * FROM agent.sessions WHERE tenant = $1 AND agent_id = $2"
            " AND ($3 = '' OR user_id = $3)"
            " AND ($4::timestamptz IS NULL OR (updated_at, session_id) < ($4, $5::text))"
            " ORDER BY updated_at DESC, session_id DESC LIMIT $6",
            tenant,
            agent_id,
            user,
            when,
            last,
            limit,
        )

    async def session_messages(
        self, tenant: str, agent_id: str, session_id: str, after: int, limit: int
    ) -> list[Row]:
        return await self._fetch(
            "SELECT seq, message, run_id, created_at FROM agent.messages WHERE tenant = $1"
            " AND agent_id = $2 AND session_id = $3 AND seq > $4 ORDER BY seq LIMIT $5",
            tenant,
            agent_id,
            session_id,
            after,
            limit,
        )

    async def delete_session(self, tenant: str, agent_id: str, session_id: str, user: str) -> bool:
        return bool(
            await self.pool.fetchval(
                "DELETE FROM agent.sessions WHERE tenant = $1 AND agent_id = $2"
                " AND session_id = $3 AND ($4 = '' OR user_id = $4) RETURNING true",
                tenant,
                agent_id,
                session_id,
                user,
            )
        )

    async def recall(
        self, tenant: str, agent_id: str, user: str, query: str, limit: int
    ) -> list[Row]:
        """The user's past messages with this agent that match `query`, best first."""
        return await self._fetch(
            "SELECT m.session_id, m.seq, m.message, m.created_at,"
            " ts_rank(m.search, q) AS rank"
            " FROM agent.messages m JOIN agent.sessions s USING (tenant, agent_id, session_id),"
            " websearch_to_tsquery('simple', $4) q"
            " WHERE m.tenant = $1 AND m.agent_id = $2 AND s.user_id = $3 AND m.search @@ q"
            " AND m.message->>'role' IN ('user', 'assistant')"
            " ORDER BY rank DESC, m.created_at DESC LIMIT $5",
            tenant,
            agent_id,
            user,
            query,
            limit,
        )

    # -- runs ---------------------------------------------------------------------------------

    async def start_run(
        self,
        tenant: str,
        agent_id: str,
        run_id: str,
        *,
        agent_version: int,
        initial: Sequence[ChatMessage],
        session_id: str = "",
        task_id: str = "",
        user: str = "",
        conn: Db | None = None,
    ) -> None:
        await (conn or self.pool).execute(
            "INSERT INTO agent.runs (tenant, agent_id, run_id, session_id, task_id, user_id,"
            " agent_version, initial) VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb)"
            " ON CONFLICT DO NOTHING",
            tenant,
            agent_id,
            run_id,
            session_id,
            task_id,
            user,
            agent_version,
            json.dumps([message_json(m) for m in initial]),
        )

    async def record_run(
        self,
        tenant: str,
        run: Mapping[str, Any],
        *,
        user: str,
        initial: Sequence[ChatMessage],
        steps: Sequence[Step],
        session_messages: Sequence[ChatMessage],
        events: Callable[[int], EventRows],
    ) -> list[StagedEvent]:
        """Store a run that has ended (`run`: its columns, times included) with its steps,
        append `session_messages` to its session and write the outbox rows of
        `events(first_parameter)`, in one statement and so with no transaction around it; a
        chat turn's run is written once, at its end (`start_run`, `add_step`, `finish_run`,
        the session's write and the events together). Returns the events, staged. The
        steps' `created_at` is the run's `finished_at`.

        The session is created with its first messages, or its count raised under its row
        lock and the messages numbered after its previous last one (concurrent turns of one
        session do not interleave numbers); another user's session (taken meanwhile) gets
        none."""
        args = [
            tenant,
            run["agent_id"],
            run["run_id"],
            run["session_id"],
            run["task_id"],
            user,
            run["agent_version"],
            json.dumps([message_json(m) for m in initial]),
            run["outcome"],
            run["turns"],
            run["prompt_tokens"],
            run["completion_tokens"],
            run["cost_usd"],
            run["error"],
            json.dumps([step_json(s) for s in steps]),
            len(session_messages),
            json.dumps([message_json(m) for m in session_messages]),
            run["started_at"],
            run["finished_at"],
        ]
        outbox = events(len(args) + 1)  # its parameters follow ours
        ids: list[int] = await self.pool.fetchval(
            "WITH run AS (INSERT INTO agent.runs (tenant, agent_id, run_id, session_id, task_id,"  # noqa: S608 (the kit's outbox SQL)
            " user_id, agent_version, initial, outcome, turns, prompt_tokens, completion_tokens,"
            " cost_usd, error, started_at, finished_at) VALUES ($1, $2, $3, $4, $5, $6, $7,"
            " $8::jsonb, $9, $10, $11, $12, $13, $14, $18, $19) RETURNING tenant, agent_id,"
            " run_id, finished_at),"
            " steps AS (INSERT INTO agent.run_steps (tenant, agent_id, run_id, seq, kind, turn,"
            " tool_name, tool_call_id, arguments, result_bytes, error, prompt_tokens,"
            " completion_tokens, cost_usd, finish_reason, duration_ms, message, created_at)"
            " SELECT run.tenant, run.agent_id, run.run_id, t.seq, t.kind, t.turn, t.tool_name,"
            " t.tool_call_id, t.arguments, t.result_bytes, t.error, t.prompt_tokens,"
            " t.completion_tokens, t.cost_usd, t.finish_reason, t.duration_ms, t.message,"
            " run.finished_at"
            " FROM run, jsonb_to_recordset($15::jsonb) AS t(seq integer, kind text,"
            " turn integer, tool_name text, tool_call_id text, arguments text,"
            " result_bytes integer, error text, prompt_tokens bigint, completion_tokens bigint,"
            " cost_usd double precision, finish_reason text, duration_ms double precision,"
            " message jsonb)),"
            # The agent's row before the session's, as the agent's delete (and the cascade to
            # its sessions) and forget_user take them: the foreign keys' checks would take it
            # only at the statement's end, after the session's row, and could deadlock.
            " session AS (INSERT INTO agent.sessions AS s (tenant, agent_id, session_id, user_id,"
            " message_count) SELECT $1, $2, $4, $6, $16 FROM agent.agents a"
            " WHERE a.tenant = $1 AND a.agent_id = $2 AND $16 > 0 FOR KEY SHARE OF a"
            " ON CONFLICT (tenant, agent_id, session_id) DO UPDATE"
            " SET message_count = s.message_count + $16, updated_at = now()"
            " WHERE s.user_id = $6 OR $6 = '' RETURNING message_count),"
            " appended AS (INSERT INTO agent.messages (tenant, agent_id, session_id, seq,"
            " message, run_id) SELECT $1, $2, $4, session.message_count - $16 + m.n, m.message,"
            " $3 FROM session, jsonb_array_elements($17::jsonb) WITH ORDINALITY AS m(message, n)),"
            f" staged AS ({outbox.sql})"
            " SELECT ARRAY(SELECT id FROM staged) FROM run",
            *args,
            *outbox.args,
        )
        return outbox.staged(ids)

    async def get_run(self, tenant: str, agent_id: str, run_id: str) -> Row | None:
        return await self.pool.fetchrow(
            "SELECT * FROM agent.runs WHERE tenant = $1 AND agent_id = $2 AND run_id = $3",
            tenant,
            agent_id,
            run_id,
        )

    async def steps(self, tenant: str, agent_id: str, run_id: str) -> list[Row]:
        return await self._fetch(
            "SELECT * FROM agent.run_steps WHERE tenant = $1 AND agent_id = $2 AND run_id = $3"
            " ORDER BY seq",
            tenant,
            agent_id,
            run_id,
        )

    async def add_step(
        self, tenant: str, agent_id: str, run_id: str, step: Step, conn: Db | None = None
    ) -> Row:
        """Store a step (once: a repeat of the same seq keeps the first)."""
        return await (conn or self.pool).fetchrow(
            "INSERT INTO agent.run_steps (tenant, agent_id, run_id, seq, kind, turn, tool_name,"
            " tool_call_id, arguments, result_bytes, error, prompt_tokens, completion_tokens,"
            " cost_usd, finish_reason, duration_ms, message)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16,"
            " $17::jsonb) ON CONFLICT DO NOTHING RETURNING created_at",
            tenant,
            agent_id,
            run_id,
            step.seq,
            step.kind,
            step.turn,
            step.tool_name,
            step.tool_call_id,
            step.arguments,
            step.result_bytes,
            step.error,
            step.prompt_tokens,
            step.completion_tokens,
            step.cost_usd,
            step.finish_reason,
            step.duration_ms,
            json.dumps(message_json(step.message)),
        )

    async def finish_run(
        self,
        tenant: str,
        agent_id: str,
        run_id: str,
        *,
        outcome: str,
        turns: int,
        prompt_tokens: int,
        completion_tokens: int,
        cost_usd: float,
        error: str,
        conn: Db | None = None,
    ) -> Row:
        return await (conn or self.pool).fetchrow(
            "UPDATE agent.runs SET outcome = $4, turns = $5, prompt_tokens = $6,"
            " completion_tokens = $7, cost_usd = $8, error = $9, finished_at = now()"
            " WHERE tenant = $1 AND agent_id = $2 AND run_id = $3 RETURNING *",
            tenant,
            agent_id,
            run_id,
            outcome,
            turns,
            prompt_tokens,
            completion_tokens,
            cost_usd,
            error,
        )

    # -- tasks --------------------------------------------------------------------------------

    async def create_task(
        self,
        tenant: str,
        agent_id: str,
        task_id: str,
        task_type: str,
        parameters: dict[str, Any],
        priority: int,
        user: str,
    ) -> tuple[Row, bool]:
        row = await self.pool.fetchrow(
            "INSERT INTO agent.tasks (tenant, task_id, agent_id, task_type, parameters,"
            " priority, status, created_by) VALUES ($1, $2, $3, $4, $5::jsonb, $6, 'queued', $7)"
            " ON CONFLICT DO NOTHING RETURNING *",
            tenant,
            task_id,
            agent_id,
            task_type,
            json.dumps(parameters),
            priority,
            user,
        )
        if row is not None:
            return row, True
        return await self.get_task(tenant, agent_id, task_id), False

    async def get_task(self, tenant: str, agent_id: str, task_id: str) -> Row | None:
        return await self.pool.fetchrow(
            "SELECT * FROM agent.tasks WHERE tenant = $1 AND agent_id = $2 AND task_id = $3",
            tenant,
            agent_id,
            task_id,
        )

    async def task_by_id(self, tenant: str, task_id: str) -> Row | None:
        return await self.pool.fetchrow(
            "SELECT * FROM agent.tasks WHERE tenant = $1 AND task_id = $2", tenant, task_id
        )

    async def update_task(
        self, tenant: str, task_id: str, conn: Db | None = None, **fields: Any
    ) -> Row | None:
        """Set fields of a task that is not finished; None when it is (a cancel stands)."""
        names = sorted(fields)
        sets = ", ".join(f"{n} = ${i + 3}" for i, n in enumerate(names))
        return await (conn or self.pool).fetchrow(
            f"UPDATE agent.tasks SET {sets}, updated_at = now()"  # noqa: S608 (names from code)
            " WHERE tenant = $1 AND task_id = $2"
            " AND status NOT IN ('completed', 'failed', 'cancelled') RETURNING *",
            tenant,
            task_id,
            *(fields[n] for n in names),
        )

    async def task_status(self, tenant: str, task_id: str) -> str:
        return str(
            await self.pool.fetchval(
                "SELECT status FROM agent.tasks WHERE tenant = $1 AND task_id = $2",
                tenant,
                task_id,
            )
            or ""
        )

    async def list_tasks(
        self, tenant: str, agent_id: str, after: tuple[Any, ...] | None, limit: int
    ) -> list[Row]:
        when, last = after if after else (None, None)
        return await self._fetch(
            "SELECT * FROM agent.tasks WHERE tenant = $1 AND agent_id = $2"
            " AND ($3::timestamptz IS NULL OR (created_at, task_id) < ($3, $4::text))"
            " ORDER BY created_at DESC, task_id DESC LIMIT $5",
            tenant,
            agent_id,
            when,
            last,
            limit,
        )
