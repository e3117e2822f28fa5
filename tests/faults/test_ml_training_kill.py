"""kill -9 of the ML worker mid-training: the training is redone once by another worker,
registered once, and no training process outlives the killed worker."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import nats
import psutil
import pytest
from nats.aio.client import Client as NATS

from aifleet.embedded import EmbeddedNats, EmbeddedPostgres
from schemas.v1.ml_pb2 import GetTrainingRequest, MlData, MlTraining
from schemas.v1.ml_rpc import MlService
from subjects import STREAM_EVENTS, event_subject
from subjects.streams import provision_streams
from tests.conftest import NatsFactory
from tests.faults.conftest import Spawn
from tests.support.jobs import stream_count
from tests.support.ml import churn_csv
from tests.support.ml_client import finished, train_request
from tests.support.ml_db import MlDb
from tests.support.polling import eventually
from workers.runtime.client import Client
from workers.runtime.files import FileStore

pytestmark = pytest.mark.faults
MODULES = ["workers.ml.service"]


@pytest.fixture
def ml_nats(nats_factory: NatsFactory) -> EmbeddedNats:
    return nats_factory()


@pytest.fixture
async def nc_ml(ml_nats: EmbeddedNats) -> AsyncIterator[NATS]:
    client = await nats.connect(ml_nats.url, name="pytest-ml-faults", connect_timeout=5)
    try:
        await provision_streams(client.jetstream())
        yield client
    finally:
        await client.close()


@pytest.fixture
async def db(postgres: EmbeddedPostgres) -> AsyncIterator[MlDb]:
    async with MlDb.connect(postgres.dsn) as database:
        yield database


@pytest.mark.timeout(600)
async def test_a_training_killed_mid_fit_is_redone_once_and_registered_once(
    ml_nats: EmbeddedNats,
    postgres: EmbeddedPostgres,
    nc_ml: NATS,
    db: MlDb,
    spawn_worker: Spawn,
) -> None:
    """SIGKILL while fitting: the forked trainer dies with it; JetStream redelivers after
    ack_wait; the second worker trains again (attempt 2) and exactly one version exists."""
    env = {
        "NATS_URL": ml_nats.url,
        "DATABASE_URL": postgres.dsn,
        "AIFLEET_JOB_ACK_WAIT": "3",
        "AIFLEET_JOB_BACKOFF": "[0.5]",
    }
    tenant = f"k{uuid.uuid4().hex[:10]}"
    files = await FileStore.open(nc_ml.jetstream())
    await files.put(tenant, "big.csv", churn_csv(30_000), max_bytes=16 << 20)
    first = await spawn_worker(MODULES, env)
    client = Client(nc_ml)
    req = train_request(
        "churn",
        model_type="gradient_boosting_classification",
        training_data=MlData(object="big.csv"),
        hyperparameters={"n_estimators": 300},
        training_id="killed",
    )
    await client.call_rpc(tenant, MlService.Train, req, timeout=30)

    async def fitting() -> MlTraining | None:
        found = await client.call_rpc(
            tenant, MlService.GetTraining, GetTrainingRequest(training_id="killed")
        )
        return found if found.stage == "fitting" else None

    await eventually(fitting, timeout=120, what="the first attempt is fitting")
    children = psutil.Process(first.pid).children(recursive=True)
    assert children, "the training runs in a child process"
    first.kill()
    _, alive = psutil.wait_procs(children, timeout=20)
    assert alive == [], "no training process outlives its worker"

    await spawn_worker(MODULES, env)
    done = await finished(client, tenant, "killed", timeout=480)
    assert (done.status, done.attempts, done.version) == ("completed", 2, 1), done.error
    assert await db.versions_of_training(tenant, "killed") == 1
    assert await db.versions(tenant, "churn") == [1]
    assert len([f async for f in files.list(tenant, prefix="ml/models/")]) == 1
    completed = event_subject(tenant, "ml", "training_completed")

    async def one_event() -> int:
        return await stream_count(nc_ml.jetstream(), STREAM_EVENTS, completed)

    assert await eventually(one_event, timeout=20, what="training_completed") == 1
