"""Stored rows as the contract's messages."""

from __future__ import annotations

import json
from typing import Any

from google.protobuf import json_format

from schemas.v1.agent_pb2 import (
    Agent,
    AgentDefinition,
    Grant,
    Memory,
    Run,
    RunStep,
    Session,
    SessionMessage,
    Task,
    ToolDefinition,
    ToolRecord,
)
from schemas.v1.gateway_pb2 import Usage
from workers.agent.messages import message_of
from workers.runtime.validation import to_struct, to_timestamp

Row = Any


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def agent(row: Row) -> Agent:
    return Agent(
        agent_id=row["agent_id"],
        definition=json_format.ParseDict(_json(row["definition"]), AgentDefinition()),
        version=row["version"],
        created_by=row["created_by"],
        created_at=to_timestamp(row["created_at"]),
        updated_at=to_timestamp(row["updated_at"]),
    )


def tool(row: Row) -> ToolRecord:
    return ToolRecord(
        tool_id=row["tool_id"],
        definition=json_format.ParseDict(_json(row["definition"]), ToolDefinition()),
        version=row["version"],
        created_by=row["created_by"],
        created_at=to_timestamp(row["created_at"]),
        updated_at=to_timestamp(row["updated_at"]),
    )


def grant(row: Row) -> Grant:
    return Grant(
        user_id=row["user_id"],
        resource_type=row["resource_type"],
        resource_id=row["resource_id"],
        permission=row["permission"],
        granted_by=row["granted_by"],
        granted_at=to_timestamp(row["granted_at"]),
    )


def session(row: Row) -> Session:
    return Session(
        session_id=row["session_id"],
        agent_id=row["agent_id"],
        user_id=row["user_id"],
        message_count=row["message_count"],
        created_at=to_timestamp(row["created_at"]),
        updated_at=to_timestamp(row["updated_at"]),
    )


def session_message(row: Row) -> SessionMessage:
    return SessionMessage(
        seq=row["seq"],
        message=message_of(_json(row["message"])),
        run_id=row["run_id"],
        created_at=to_timestamp(row["created_at"]),
    )


def usage(prompt: int, completion: int) -> Usage:
    return Usage(
        prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion
    )


def run(row: Row) -> Run:
    return Run(
        run_id=row["run_id"],
        agent_id=row["agent_id"],
        session_id=row["session_id"],
        task_id=row["task_id"],
        outcome=row["outcome"],
        turns=row["turns"],
        usage=usage(row["prompt_tokens"], row["completion_tokens"]),
        cost_usd=row["cost_usd"],
        error=row["error"],
        started_at=to_timestamp(row["started_at"]),
        finished_at=to_timestamp(row["finished_at"]),
        agent_version=row["agent_version"],
    )


def step(row: Row) -> RunStep:
    return RunStep(
        seq=row["seq"],
        kind=row["kind"],
        turn=row["turn"],
        tool_name=row["tool_name"],
        tool_call_id=row["tool_call_id"],
        arguments=row["arguments"],
        result_bytes=row["result_bytes"],
        error=row["error"],
        usage=usage(row["prompt_tokens"], row["completion_tokens"]),
        cost_usd=row["cost_usd"],
        finish_reason=row["finish_reason"],
        duration_ms=row["duration_ms"],
        created_at=to_timestamp(row["created_at"]),
    )


def task(row: Row) -> Task:
    return Task(
        task_id=row["task_id"],
        agent_id=row["agent_id"],
        task_type=row["task_type"],
        parameters=to_struct(_json(row["parameters"])),
        priority=row["priority"],
        status=row["status"],
        progress=row["progress"],
        result=row["result"],
        outcome=row["outcome"],
        error=row["error"],
        run_id=row["run_id"],
        created_by=row["created_by"],
        created_at=to_timestamp(row["created_at"]),
        updated_at=to_timestamp(row["updated_at"]),
        attempts=row["attempts"],
    )


def memory(row: Row, score: float = 0.0) -> Memory:
    return Memory(
        memory_id=row["memory_id"],
        user_id=row["user_id"],
        text=row["text"],
        metadata=to_struct(_json(row["metadata"])),
        created_at=to_timestamp(row["created_at"]),
        score=score,
    )
