"""Running the generator in tests: with the agent, gateway, prompt and cache components it
calls, in one worker, on the offline model or the fake OpenAI server."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.support.agent import Agents
from tests.support.database import ComponentDb
from tests.support.fake_openai import FakeOpenAI, Fault
from tests.support.fleet import running_worker
from tests.support.gateway import configure
from workers.agent import service as agent
from workers.cache import service as cache
from workers.gateway import service as gateway
from workers.generator import service as generator
from workers.generator.store import SCHEMA
from workers.prompt import service as prompt
from workers.runtime.worker import Worker

COMPONENTS = [
    generator.component,
    agent.component,
    gateway.component,
    prompt.component,
    cache.component,
]


class Generator(Agents):
    """Typed calls to the generator component, as a user or tenant-level."""

    component = "generator"


@asynccontextmanager
async def running_generator(
    mp: pytest.MonkeyPatch, nats_url: str, redis_url: str, dsn: str, config: Path | None
) -> AsyncIterator[Worker]:
    """The generator with the agent fleet in one worker (config: a gateway model list)."""
    if config is not None:
        configure(mp, config=config, cache_ttl_seconds=0)
    async with running_worker(COMPONENTS, nats_url, redis_url=redis_url, database_url=dsn) as w:
        yield w


def answer(spec: dict[str, Any] | str) -> Fault:
    """The scripted model's next reply: a definition (or any text)."""
    content = spec if isinstance(spec, str) else json.dumps(spec)
    return Fault(reply={"content": content})


def drafting_calls(fake: FakeOpenAI, model: str = "attacker") -> list[dict[str, Any]]:
    """The bodies of the chat requests the fake model received."""
    return [s.body for s in fake.requests(model, path="/v1/chat/completions")]


class GeneratorDb(ComponentDb):
    schema = SCHEMA
    migrations = generator.MIGRATIONS
    tables = ("drafts", "ratings", "outbox")
