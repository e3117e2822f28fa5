"""`aifleet agent chat` and `aifleet agent task`: where a person watches an agent work.

chat reads lines from the terminal and streams each answer (`agent.chat_stream`): tokens as
they come, each tool call and its result on a line of its own, then the usage. task shows a
task's status, and with `--watch` a progress bar until it finishes.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn

from aifleet.connection import connect
from schemas.errors import ServiceError
from schemas.v1.agent_pb2 import ChatEvent, ChatRequest, GetTaskRequest, Task
from schemas.v1.agent_rpc import AgentService
from subjects import HEADER_USER_ID, is_valid_tenant
from workers.runtime.client import Client
from workers.runtime.config import Settings

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)
FINISHED = ("completed", "failed", "cancelled")


def _headers(user: str | None) -> dict[str, str] | None:
    return {HEADER_USER_ID: user} if user else None


def show_event(event: ChatEvent, write: Callable[[str], None]) -> None:
    """One streamed event as the terminal shows it."""
    if event.type == "token":
        write(event.delta)
    elif event.type == "tool_call_started":
        write(f"\n  [tool] {event.tool_name}({event.content[:200]})\n")
    elif event.type == "tool_result":
        mark = "error" if event.is_error else "result"
        write(f"  [{mark}] {event.content[:300]}\n")
    elif event.type == "final":
        r = event.response
        note = "" if r.outcome == "completed" else f" [{r.outcome}]"
        write(
            f"\n  ({r.turns} model calls, {r.tool_calls} tool calls,"
            f" {r.usage.total_tokens} tokens, ${r.cost_usd:.6f}){note}\n"
        )


async def chat(
    settings: Settings,
    agent_id: str,
    tenant: str,
    user: str | None,
    session_id: str,
    timeout: float,
) -> int:
    if not is_valid_tenant(tenant):
        err.print(f"[red]invalid tenant {tenant!r}[/red]")
        return 2
    client = Client(await connect(settings), timeout=timeout)
    loop = asyncio.get_running_loop()
    err.print(f"chatting with agent {agent_id} (tenant {tenant}); an empty line or Ctrl-D ends")
    try:
        while True:
            line = await loop.run_in_executor(None, _read_line)
            if line is None or not line.strip():
                return 0
            request = ChatRequest(agent_id=agent_id, message=line, session_id=session_id)
            try:
                async for event in client.stream_rpc(
                    tenant,
                    AgentService.ChatStream,
                    request,
                    headers=_headers(user),
                    timeout=timeout,
                ):
                    show_event(event, _write)
                    if event.type in ("run_started", "final"):
                        session_id = event.session_id or session_id
            except ServiceError as exc:
                err.print(f"[red]error {exc.status}[/red] {exc.code}: {exc.message}")
    finally:
        await client.nc.close()


def _read_line() -> str | None:
    try:
        return input("you> ")
    except EOFError:
        return None


def _write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


async def task(
    settings: Settings,
    agent_id: str,
    task_id: str,
    tenant: str,
    user: str | None,
    watch: bool,
    interval: float = 0.5,
) -> int:
    if not is_valid_tenant(tenant):
        err.print(f"[red]invalid tenant {tenant!r}[/red]")
        return 2
    client = Client(await connect(settings))
    request = GetTaskRequest(agent_id=agent_id, task_id=task_id)

    async def fetch() -> Task:
        reply = await client.call_rpc(tenant, AgentService.GetTask, request, headers=_headers(user))
        return reply.task

    try:
        current = await fetch()
        if watch and current.status not in FINISHED:
            columns = (
                TextColumn("{task.description}"),
                BarColumn(),
                TextColumn("{task.percentage:>3.0f}%"),
            )
            with Progress(*columns, console=err, transient=True) as bar:
                shown = bar.add_task(current.status, total=1.0)
                while current.status not in FINISHED:
                    bar.update(shown, completed=current.progress, description=current.status)
                    await asyncio.sleep(interval)
                    current = await fetch()
        out.print(f"task {current.task_id}: {current.status} ({current.progress:.0%})")
        if current.outcome:
            out.print(f"outcome: {current.outcome}")
        if current.result:
            out.print(current.result)
        if current.error:
            err.print(f"[red]error:[/red] {current.error}")
        return 0 if current.status != "failed" else 1
    except ServiceError as exc:
        err.print(f"[red]error {exc.status}[/red] {exc.code}: {exc.message}")
        return 1
    finally:
        await client.nc.close()
