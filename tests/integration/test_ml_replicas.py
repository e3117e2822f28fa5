"""Two ML replicas behind one queue group: an alias moved through one takes effect on both at
once (no restart: the mover forgets its resolution, the other replica on the move's event), a
move no event announces takes effect within AIFLEET_ML_ALIAS_CACHE_SECONDS, and predictions
are cached through the cache component when enabled."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from nats.aio.client import Client as NATS

from aifleet.embedded import EmbeddedNats, EmbeddedPostgres, EmbeddedValkey
from tests.support.fleet import running_worker
from tests.support.ml import churn_rows
from tests.support.ml_client import LOW_USAGE, deploy, predict, train, train_request
from workers.cache import service as cache
from workers.ml import service as ml
from workers.runtime.client import Client
from workers.runtime.worker import Worker

BOUND = 0.5  # seconds a replica keeps a resolution


@pytest.fixture(scope="module")
async def replicas(
    nats_server: EmbeddedNats, postgres: EmbeddedPostgres, valkey: EmbeddedValkey
) -> AsyncIterator[list[Worker]]:
    with pytest.MonkeyPatch.context() as env:
        env.setenv("AIFLEET_ML_PREDICTION_CACHE_TTL_SECONDS", "60")
        env.setenv("AIFLEET_ML_ALIAS_CACHE_SECONDS", str(BOUND))
        async with (
            running_worker([cache.component], nats_server.url, redis_url=valkey.url),
            running_worker([ml.component], nats_server.url, database_url=postgres.dsn) as one,
            running_worker([ml.component], nats_server.url, database_url=postgres.dsn) as two,
        ):
            yield [one, two]


async def served(nc: NATS, worker: Worker) -> int:
    """Predict requests this replica has answered so far (its micro stats)."""
    reply = await nc.request(f"$SRV.STATS.aifleet-ml.{worker.micro[0].id}", b"", timeout=2)
    stats: dict[str, Any] = json.loads(reply.data)
    return int(next(e["num_requests"] for e in stats["endpoints"] if e["name"] == "predict"))


async def test_an_alias_move_takes_effect_on_every_replica(
    nc: NATS, replicas: list[Worker]
) -> None:
    """Both replicas serve version 1, then both serve version 2 right after the move."""
    client, t = Client(nc), f"r{uuid.uuid4().hex[:10]}"
    await train(client, t, train_request("churn", churn_rows(200)))
    await train(client, t, train_request("churn", churn_rows(200, flip=True)))
    await deploy(client, t, "churn", version=1)
    before = [await served(nc, w) for w in replicas]
    for i in range(30):
        row = {**LOW_USAGE, "tenure": i + 1}
        reply = await predict(client, t, "churn", row)
        assert (reply.version, reply.result.prediction.string_value) == (1, "yes")
    middle = [await served(nc, w) for w in replicas]
    assert all(m > b for m, b in zip(middle, before, strict=True)), (before, middle)
    await deploy(client, t, "churn", version=2)
    for i in range(30):
        row = {**LOW_USAGE, "tenure": i + 1}
        reply = await predict(client, t, "churn", row)
        assert (reply.version, reply.result.prediction.string_value) == (2, "no")
    after = [await served(nc, w) for w in replicas]
    assert all(a > m for a, m in zip(after, middle, strict=True)), (middle, after)


async def test_a_move_no_event_announces_takes_effect_within_the_bound(
    nc: NATS, replicas: list[Worker], postgres: EmbeddedPostgres
) -> None:
    """The alias changed in SQL behind the registry (no event): every replica serves the new
    version once the bound has passed since it last resolved the alias."""
    client, t = Client(nc), f"b{uuid.uuid4().hex[:10]}"
    await train(client, t, train_request("churn", churn_rows(200)))
    await train(client, t, train_request("churn", churn_rows(200, flip=True)))
    await deploy(client, t, "churn", version=1)
    for i in range(10):
        assert (await predict(client, t, "churn", {**LOW_USAGE, "tenure": i + 1})).version == 1
    conn = await asyncpg.connect(postgres.dsn)
    try:
        await conn.execute(
            "UPDATE ml.aliases SET version = 2 WHERE tenant = $1 AND name = 'churn'", t
        )
    finally:
        await conn.close()
    await asyncio.sleep(BOUND + 0.1)
    for i in range(20):
        reply = await predict(client, t, "churn", {**LOW_USAGE, "tenure": i + 1})
        assert (reply.version, reply.result.prediction.string_value) == (2, "no")


async def test_a_repeated_prediction_comes_from_the_cache_component(
    nc: NATS, replicas: list[Worker]
) -> None:
    """Same version and features: the second answer is the cached one, equal to the first;
    the other version's key is its own."""
    client, t = Client(nc), f"c{uuid.uuid4().hex[:10]}"
    await train(client, t, train_request("churn", churn_rows(150)))
    await deploy(client, t, "churn")
    first = await predict(client, t, "churn", LOW_USAGE)
    second = await predict(client, t, "churn", LOW_USAGE)
    assert (first.cached, second.cached) == (False, True)
    assert second.result == first.result
    assert (await predict(client, t, "churn/1", {**LOW_USAGE, "tenure": 4})).cached is False
