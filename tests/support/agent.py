"""Running the agent component in tests: with the gateway, prompt and cache components it
calls, a model list on the fake OpenAI server, and typed calls as a user or tenant-level."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest
from google.protobuf import json_format
from google.protobuf.message import Message

from aifleet.embedded import EmbeddedNats, EmbeddedPostgres, EmbeddedValkey
from schemas.registry import rpc
from subjects import HEADER_USER_ID
from tests.support.database import ComponentDb
from tests.support.fake_openai import FakeOpenAI, Fault
from tests.support.fleet import running_worker
from tests.support.gateway import configure, deployment, model_list
from workers.agent import service as agent
from workers.agent.store import SCHEMA
from workers.cache import service as cache
from workers.gateway import service as gateway
from workers.prompt import service as prompt
from workers.runtime.client import Client
from workers.runtime.worker import Worker

M = TypeVar("M", bound=Message)
SCRIPTED = "scripted"  # alias of the fake's "attacker" model, answering what a test scripts
LOOPER = "looper"  # alias of the fake's "primary" model: always calls the first tool offered


def new_tenant(prefix: str = "a") -> str:
    return prefix + uuid.uuid4().hex[:12]


def agent_models(fake: FakeOpenAI, path: Path, limited: list[str]) -> Path:
    return model_list(
        path,
        [
            deployment(SCRIPTED, "attacker", fake.base_url),
            deployment(LOOPER, "primary", fake.base_url),
        ],
        router_settings={"num_retries": 0},
        aifleet={
            "default_model": "offline",
            "limits": {"tenants": {t: {"requests_per_minute": 1} for t in limited}},
        },
    )


@asynccontextmanager
async def running_agents(
    mp: pytest.MonkeyPatch, nats_url: str, redis_url: str, dsn: str, config: Path | None, **env: Any
) -> AsyncIterator[Worker]:
    """The agent component with gateway, prompt and cache in one worker."""
    if config is not None:
        configure(mp, config=config, cache_ttl_seconds=0)
    for name, value in env.items():
        mp.setenv(
            f"AIFLEET_AGENT_{name.upper()}", value if isinstance(value, str) else json.dumps(value)
        )
    async with running_worker(
        [agent.component, gateway.component, prompt.component, cache.component],
        nats_url,
        redis_url=redis_url,
        database_url=dsn,
    ) as worker:
        yield worker


@asynccontextmanager
async def offline_fleet(
    nats_server: EmbeddedNats, valkey: EmbeddedValkey, postgres: EmbeddedPostgres
) -> AsyncIterator[Worker]:
    """The agent fleet on the gateway's offline model (a test module's fixture)."""
    with pytest.MonkeyPatch.context() as mp:
        async with running_agents(mp, nats_server.url, valkey.url, postgres.dsn, None) as w:
            yield w


def reply(content: str | None = None, *calls: tuple[str, dict[str, Any]]) -> Fault:
    """A scripted answer of the fake's `attacker` model: text and/or tool calls."""
    tool_calls = [
        {
            "id": f"call_{i}_{name}",
            "type": "function",
            "function": {"name": name, "arguments": json.dumps(args)},
        }
        for i, (name, args) in enumerate(calls)
    ]
    return Fault(reply={"content": content, "tool_calls": tool_calls})


def script(fake: FakeOpenAI, *faults: Fault) -> None:
    for fault in faults:
        fake.fault("attacker", fault)


class Agents:
    """Typed calls to the agent component, as a user (X-User-ID) or tenant-level."""

    component = "agent"

    def __init__(self, client: Client, tenant: str, user: str | None = None) -> None:
        self.client, self.tenant, self.user = client, tenant, user

    def as_user(self, user: str | None) -> Agents:
        return type(self)(self.client, self.tenant, user)

    def of_tenant(self, tenant: str) -> Agents:
        return type(self)(self.client, tenant, self.user)

    async def __call__(self, op: str, body: dict[str, Any] | Message, timeout: float = 30.0) -> Any:
        found = rpc(self.component, op)
        assert found is not None
        request = (
            body if isinstance(body, Message) else json_format.ParseDict(body, found.request())
        )
        headers = {HEADER_USER_ID: self.user} if self.user else None
        return await self.client.call(
            self.tenant,
            self.component,
            op,
            request,
            found.response,
            headers=headers,
            timeout=timeout,
        )

    async def stream(self, op: str, body: dict[str, Any]) -> list[Any]:
        found = rpc("agent", op)
        assert found is not None
        headers = {HEADER_USER_ID: self.user} if self.user else None
        return [
            m
            async for m in self.client.stream(
                self.tenant,
                "agent",
                op,
                json_format.ParseDict(body, found.request()),
                found.response,
                headers=headers,
                timeout=30.0,
            )
        ]


def http_tool(base_url: str, name: str = "lookup", path: str = "/echo/{q}") -> dict[str, Any]:
    """A tool definition calling the local tool server."""
    return {
        "name": name,
        "description": "Look something up",
        "parameters": {
            "type": "object",
            "properties": {"q": {"type": "string"}},
            "required": ["q"],
            "additionalProperties": False,
        },
        "http": {
            "method": "GET",
            "url": base_url + path,
            "allowed_hosts": ["127.0.0.1"],
            "allow_private_addresses": True,
        },
    }


class AgentDb(ComponentDb):
    schema = SCHEMA
    migrations = agent.MIGRATIONS
    tables = (
        "agents",
        "tools",
        "agent_tools",
        "grants",
        "sessions",
        "messages",
        "runs",
        "run_steps",
        "tasks",
        "core_blocks",
        "memories",
    )
