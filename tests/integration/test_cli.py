"""The `aifleet` command as a person uses it, against a running cache worker."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from collections.abc import AsyncIterator

import pytest

from aifleet.embedded import EmbeddedNats, EmbeddedValkey
from tests.conftest import NatsFactory
from tests.support.fleet import running_worker
from workers.cache.service import component as cache
from workers.runtime.worker import Worker


async def aifleet(nats_url: str, *args: str) -> tuple[int, str, str]:
    """Run the CLI in a child process (the worker keeps serving in this one)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "aifleet.cli",
        *args,
        env={**os.environ, "NATS_URL": nats_url, "COLUMNS": "200"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=30)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@pytest.fixture
async def cache_worker(nats_server: EmbeddedNats, valkey: EmbeddedValkey) -> AsyncIterator[Worker]:
    async with running_worker([cache], nats_server.url, redis_url=valkey.url) as worker:
        yield worker


@pytest.fixture
def tenant() -> str:
    return "cli-" + uuid.uuid4().hex[:10]


async def test_call_round_trips_a_json_value(
    cache_worker: Worker, nats_server: EmbeddedNats, tenant: str
) -> None:
    """`call cache.set` then `call cache.get` prints the stored value as JSON."""
    code, out, _ = await aifleet(
        nats_server.url, "call", "cache.set", '{"key":"k","value":{"a":1}}', "--tenant", tenant
    )
    assert code == 0
    assert json.loads(out) == {"stored": True}
    code, out, _ = await aifleet(
        nats_server.url, "call", "cache.get", '{"key":"k"}', "--tenant", tenant
    )
    assert code == 0
    reply = json.loads(out)
    assert reply["found"] is True
    assert reply["value"] == {"a": 1}


async def test_call_prints_the_error_and_fails_on_bad_input(
    cache_worker: Worker, nats_server: EmbeddedNats, tenant: str
) -> None:
    """An unknown field is reported with its code on stderr and a non-zero exit status."""
    code, out, err = await aifleet(
        nats_server.url, "call", "cache.get", '{"kex":"k"}', "--tenant", tenant
    )
    assert code == 1
    assert out == ""
    assert "400" in err
    assert "INVALID_ARGUMENT" in err


async def test_call_rejects_an_unknown_operation(nats_server: EmbeddedNats) -> None:
    """An operation no contract declares is refused before anything is sent."""
    code, _, err = await aifleet(nats_server.url, "call", "cache.explode", "{}")
    assert code == 2
    assert "unknown operation" in err


async def test_call_with_no_worker_says_unavailable(nats_factory: NatsFactory) -> None:
    """With nobody serving the operation the CLI reports 503 at once."""
    empty = nats_factory()
    code, _, err = await aifleet(
        empty.url, "call", "cache.stats", "{}", "--tenant", "nobody-home", "--timeout", "5"
    )
    assert code == 1
    assert "503" in err


async def test_status_lists_the_running_component(
    cache_worker: Worker, nats_server: EmbeddedNats
) -> None:
    """`status` shows each instance with its endpoints, found by micro discovery."""
    code, out, _ = await aifleet(nats_server.url, "status")
    assert code == 0
    assert "aifleet-cache" in out
    for op in ("get", "set", "delete", "invalidate", "clear", "stats"):
        assert f" {op} " in out


async def test_streams_shows_the_three_streams(nats_server: EmbeddedNats) -> None:
    """`streams` provisions and lists AI_EVENTS, AI_JOBS and AI_DLQ."""
    code, out, _ = await aifleet(nats_server.url, "streams")
    assert code == 0
    for name in ("AI_EVENTS", "AI_JOBS", "AI_DLQ"):
        assert name in out


async def test_replay_prints_one_tenants_events_as_json_lines(
    cache_worker: Worker, nats_server: EmbeddedNats, tenant: str
) -> None:
    """`replay --tenant` prints that tenant's events, decoded, and nobody else's."""
    other = tenant + "-other"
    for who in (tenant, other):
        await aifleet(nats_server.url, "call", "cache.clear", "{}", "--tenant", who)
    code, out, err = await aifleet(nats_server.url, "replay", "--tenant", tenant, "--since", "5m")
    assert code == 0, err
    records = [json.loads(line) for line in out.splitlines()]
    assert len(records) == 1
    assert records[0]["tenant"] == tenant
    assert records[0]["type"] == "aifleet.v1.CacheInvalidatedEvent"
    assert records[0]["data"]["reason"] == "clear"


async def test_replay_rejects_an_invalid_tenant_filter(nats_server: EmbeddedNats) -> None:
    """A filter that is not a tenant token is an error, not an empty result."""
    code, _, err = await aifleet(nats_server.url, "replay", "--tenant", "Not*Valid")
    assert code == 2
    assert "invalid filter" in err


async def test_replay_filters_by_time(
    cache_worker: Worker, nats_server: EmbeddedNats, tenant: str
) -> None:
    """Events before `--since` or after `--until` are not printed."""
    await aifleet(nats_server.url, "call", "cache.clear", "{}", "--tenant", tenant)
    code, out, _ = await aifleet(nats_server.url, "replay", "--tenant", tenant, "--since", "0s")
    assert (code, out) == (0, "")
    code, out, _ = await aifleet(
        nats_server.url, "replay", "--tenant", tenant, "--until", "2000-01-01T00:00:00"
    )
    assert (code, out) == (0, "")
    code, out, _ = await aifleet(nats_server.url, "replay", "--tenant", tenant, "--since", "1h")
    assert len(out.splitlines()) == 1
