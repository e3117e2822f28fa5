"""kill -9 of the agent worker during a task whose HTTP tool call had completed: after a restart
the task finishes once and the HTTP tool was called once (the run resumes from its steps)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client as NATS

from aifleet.embedded import EmbeddedNats, EmbeddedPostgres, EmbeddedValkey
from schemas.v1.agent_pb2 import Task
from tests.conftest import NatsFactory
from tests.faults.conftest import Spawn
from tests.support.agent import (
    SCRIPTED,
    AgentDb,
    Agents,
    agent_models,
    http_tool,
    new_tenant,
    reply,
    script,
)
from tests.support.fake_openai import FakeOpenAI, Fault
from tests.support.polling import eventually
from tests.support.run_worker import WorkerProcess
from tests.support.tool_server import ToolServer
from workers.runtime.client import Client

pytestmark = [pytest.mark.faults, pytest.mark.timeout(480)]

MODULES = [f"workers.{c}.service" for c in ("agent", "gateway", "prompt", "cache")]
WAIT = 60.0


@pytest.fixture
async def spawn_worker(tmp_path: Path) -> AsyncIterator[Spawn]:
    """Like the fault tests' spawn_worker, with a start timeout for a worker that imports the
    gateway, prompt and agent components on a loaded machine."""
    started: list[WorkerProcess] = []

    async def spawn(modules: list[str], env: Mapping[str, str]) -> WorkerProcess:
        proc = WorkerProcess(modules, env, tmp_path / f"agent-worker-{len(started)}.log")
        started.append(proc)
        return await proc.start(timeout=180)

    try:
        yield spawn
    finally:
        for proc in started:
            await proc.close()


@pytest.fixture
async def nc(nats_factory: NatsFactory) -> AsyncIterator[NATS]:
    server: EmbeddedNats = nats_factory()
    client = await nats.connect(server.url, connect_timeout=5)
    try:
        yield client
    finally:
        await client.close()


async def test_a_killed_task_resumes_without_repeating_its_http_tool_call(
    nc: NATS,
    postgres: EmbeddedPostgres,
    valkey: EmbeddedValkey,
    spawn_worker: Spawn,
    tmp_path: Path,
) -> None:
    """Model asks for the HTTP tool, the tool runs and is recorded, the worker dies in the next
    model call; the restarted worker makes only that model call: one effect, one tool call."""
    async with FakeOpenAI() as fake:
        with ToolServer() as tools:
            env = {
                "NATS_URL": nc.connected_url.geturl() if nc.connected_url else "",
                "DATABASE_URL": postgres.dsn,
                "REDIS_URL": valkey.url,
                "AIFLEET_GATEWAY_CONFIG": str(agent_models(fake, tmp_path / "models.yaml", [])),
                "AIFLEET_GATEWAY_CACHE_TTL_SECONDS": "0",
                "AIFLEET_JOB_ACK_WAIT": "2",
                "AIFLEET_JOB_BACKOFF": json.dumps([0.2]),
            }
            first = await spawn_worker(MODULES, env)
            agents = Agents(Client(nc, timeout=30.0), new_tenant("kill"))
            await agents("tool_create", {"tool_id": "lookup", "tool": http_tool(tools.base_url)})
            await agents(
                "create_agent",
                {"agent_id": "w", "agent": {"name": "W", "model": SCRIPTED, "tools": ["lookup"]}},
            )
            script(
                fake,
                reply(None, ("lookup", {"q": "once"})),
                Fault(delay=60.0, reply={"content": "never seen"}),  # the worker dies waiting
                reply("final answer"),
            )
            async with AgentDb.connect(postgres.dsn) as db:
                await agents("execute", {"agent_id": "w", "task_type": "fetch", "task_id": "k1"})

                async def tool_recorded() -> int:
                    return int(
                        await db.pool.fetchval(
                            "SELECT count(*) FROM agent.run_steps"
                            " WHERE tenant = $1 AND kind = 'tool'",
                            agents.tenant,
                        )
                    )

                await eventually(tool_recorded, timeout=WAIT, what="the tool step recorded")
                await eventually(
                    lambda: _requests(fake, 2), timeout=WAIT, what="the second model call started"
                )
                first.kill()
                assert await first.wait(timeout=10) == -9
                assert tools.count("/echo/") == 1

                await spawn_worker(MODULES, env)

                async def finished() -> Task | None:
                    task = (await agents("get_task", {"agent_id": "w", "task_id": "k1"})).task
                    return task if task.status == "completed" else None

                task = await eventually(finished, timeout=WAIT, what="the task finished")
                assert task is not None
                assert task.result == "final answer"
                assert task.attempts >= 2
                assert tools.count("/echo/") == 1
                steps = await db.pool.fetch(
                    "SELECT seq, kind FROM agent.run_steps WHERE tenant = $1 ORDER BY seq",
                    agents.tenant,
                )
                assert [(s["seq"], s["kind"]) for s in steps] == [
                    (1, "model"),
                    (2, "tool"),
                    (3, "model"),
                ]
                assert len(fake.requests("attacker")) == 3
                counts = await db.row_counts(agents.tenant)
                assert (counts["tasks"], counts["runs"]) == (1, 1)


async def _requests(fake: FakeOpenAI, n: int) -> bool:
    return len(fake.requests("attacker")) >= n
