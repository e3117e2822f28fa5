"""The generator with the components it calls missing: 503 retryable and nothing stored; an
invalid setting stops the worker with exit status 2, naming the variable."""

from __future__ import annotations

import pytest
from nats.aio.client import Client as NATS

from aifleet.embedded import EmbeddedNats, EmbeddedPostgres, EmbeddedValkey
from schemas.errors import Unavailable
from tests.integration.test_runtime import run_cli
from tests.support.agent import new_tenant
from tests.support.fleet import running_worker
from tests.support.generator import Generator, GeneratorDb, running_generator
from workers.agent import service as agent
from workers.gateway import service as gateway
from workers.generator import service as generator
from workers.prompt import service as prompt
from workers.runtime.client import Client


async def test_generate_without_agent_or_gateway_is_503_and_stores_nothing(
    nats_server: EmbeddedNats, nc: NATS, postgres: EmbeddedPostgres, valkey: EmbeddedValkey
) -> None:
    """No agent worker, then no gateway worker: 503 (retryable), no draft; with the fleet
    back, the same request succeeds."""
    gen = Generator(Client(nc, timeout=30.0), new_tenant("dep"), "alice")
    body = {"prompt": "An agent", "approve": True}
    for components in ([generator.component], [generator.component, agent.component]):
        async with running_worker(components, nats_server.url, database_url=postgres.dsn):
            with pytest.raises(Unavailable) as caught:
                await gen("generate_agent", body)
            assert caught.value.retryable
    async with GeneratorDb.connect(postgres.dsn) as db:
        assert (await db.row_counts(gen.tenant))["drafts"] == 0
    with pytest.MonkeyPatch.context() as mp:
        async with running_generator(mp, nats_server.url, valkey.url, postgres.dsn, None):
            made = await gen("generate_agent", body)
    assert made.draft.status == "approved"


async def test_generate_with_the_cache_down_asks_the_model(
    nats_server: EmbeddedNats, nc: NATS, postgres: EmbeddedPostgres, valkey: EmbeddedValkey
) -> None:
    """cache_enabled without a cache worker: the draft is made (not cached), not a 503."""
    gen = Generator(Client(nc, timeout=30.0), new_tenant("dep"), "alice")
    components = [generator.component, agent.component, gateway.component, prompt.component]
    async with running_worker(
        components, nats_server.url, database_url=postgres.dsn, redis_url=valkey.url
    ):
        for _ in range(2):
            made = await gen("generate_agent", {"prompt": "An agent", "cache_enabled": True})
            assert (made.draft.cached, made.draft.model_calls) == (False, 1)


def test_worker_exits_2_naming_an_invalid_generator_variable(nats_server: EmbeddedNats) -> None:
    """AIFLEET_GENERATOR_MAX_TURNS=0 stops `aifleet worker generator` at start."""
    done = run_cli(
        "worker",
        "generator",
        env={"AIFLEET_GENERATOR_MAX_TURNS": "0", "NATS_URL": nats_server.url},
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert "AIFLEET_GENERATOR_MAX_TURNS" in done.stderr
    assert "Traceback" not in done.stderr
