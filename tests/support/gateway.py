"""Running the gateway in tests: its settings, its model list, and the events it published."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import nats
import pytest
import yaml
from google.protobuf import json_format
from nats.aio.client import Client as NATS

from schemas.v1.gateway_pb2 import GenerateRequest, GenerateResponse
from schemas.v1.llmops_pb2 import LlmOperationEvent
from subjects import STREAM_EVENTS, event_subject
from tests.support.fleet import running_worker
from workers.cache import service as cache
from workers.gateway import service as gateway
from workers.runtime.client import Client
from workers.runtime.worker import Worker


def ask(text: str, **fields: Any) -> GenerateRequest:
    """A GenerateRequest of one user message, other fields given as JSON."""
    return json_format.ParseDict(
        {"messages": [{"role": "user", "content": text}], **fields}, GenerateRequest()
    )


async def generate(client: Client, tenant: str, req: GenerateRequest) -> GenerateResponse:
    return await client.call(tenant, "gateway", "generate", req, GenerateResponse)


def configure(monkeypatch: pytest.MonkeyPatch, **settings: Any) -> None:
    """Set AIFLEET_GATEWAY_* for the next gateway started in this process."""
    for name, value in settings.items():
        monkeypatch.setenv(f"AIFLEET_GATEWAY_{name.upper()}", str(value))


def model_list(path: Path, models: list[dict[str, Any]], **sections: Any) -> Path:
    """Write a litellm model list (YAML) and return its path."""
    path.write_text(yaml.safe_dump({"model_list": models, **sections}))
    return path


def deployment(alias: str, model: str, base_url: str, **params: Any) -> dict[str, Any]:
    """One model_list entry for a model of the fake OpenAI server."""
    return {
        "model_name": alias,
        "litellm_params": {
            "model": f"openai/{model}",
            "api_base": base_url,
            "api_key": "k",
            **params,
        },
    }


@asynccontextmanager
async def running_gateway(
    nats_url: str, redis_url: str, database_url: str = "", **overrides: Any
) -> AsyncIterator[Worker]:
    """The gateway and the cache component (its exact response cache) in one worker."""
    async with running_worker(
        [gateway.component, cache.component],
        nats_url,
        redis_url=redis_url,
        database_url=database_url or None,
        **overrides,
    ) as worker:
        yield worker


async def fresh_minute(needed: float = 10.0) -> None:
    """Wait for the next UTC minute if fewer than `needed` seconds are left in this one: the
    gateway's request and token windows are fixed minutes, and a test counting within one must
    not straddle two."""
    left = 60 - time.time() % 60
    if left < needed:
        await asyncio.sleep(left + 0.05)


@asynccontextmanager
async def connected(url: str) -> AsyncIterator[NATS]:
    nc = await nats.connect(url, connect_timeout=5)
    try:
        yield nc
    finally:
        await nc.close()


async def operations(nc: NATS, tenant: str) -> list[tuple[Mapping[str, str], LlmOperationEvent]]:
    """Every `evt.gateway.llm_operation` of the tenant in AI_EVENTS, oldest first."""
    js = nc.jetstream()
    subject = event_subject(tenant, "gateway", "llm_operation")
    info = await js.stream_info(STREAM_EVENTS, subjects_filter=subject)
    count = (info.state.subjects or {}).get(subject, 0)
    if not count:
        return []
    sub = await js.subscribe(subject, ordered_consumer=True)
    try:
        msgs = [await sub.next_msg(timeout=2.0) for _ in range(count)]
    finally:
        await sub.unsubscribe()
    return [(m.headers or {}, LlmOperationEvent.FromString(m.data)) for m in msgs]
