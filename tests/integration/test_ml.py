"""The ML component end to end: a real worker, NATS + JetStream + Object Store, PostgreSQL."""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import AsyncIterator

import pytest
from nats.aio.client import Client as NATS

from aifleet.embedded import EmbeddedNats, EmbeddedPostgres
from schemas.errors import Conflict, NotFound
from schemas.v1.common_pb2 import PageRequest
from schemas.v1.ml_pb2 import (
    DeleteMlModelRequest,
    GetMlModelRequest,
    GetPredictionJobRequest,
    ListMlModelsRequest,
    ListTrainingsRequest,
    MlData,
    MlDriftRequest,
    MlTrainingFinishedEvent,
    MlTrainingProgressEvent,
    PredictBatchRequest,
    SetModelAliasRequest,
)
from schemas.v1.ml_rpc import MlService
from subjects import STREAM_EVENTS, event_subject
from tests.support.fleet import running_worker
from tests.support.ml import churn_csv, churn_rows
from tests.support.ml_client import (
    HIGH_USAGE,
    LOW_USAGE,
    deploy,
    predict,
    struct,
    train,
    train_request,
)
from tests.support.ml_db import MlDb
from tests.support.polling import eventually
from workers.ml import service as ml
from workers.runtime.client import Client
from workers.runtime.files import FileStore
from workers.runtime.worker import Worker


@pytest.fixture(scope="module")
async def worker(nats_server: EmbeddedNats, postgres: EmbeddedPostgres) -> AsyncIterator[Worker]:
    with pytest.MonkeyPatch.context() as env:
        env.setenv("AIFLEET_ML_DRIFT_FLUSH_SECONDS", "0.2")
        async with running_worker(
            [ml.component], nats_server.url, database_url=postgres.dsn, outbox_interval=0.2
        ) as w:
            yield w


@pytest.fixture
def client(nc: NATS, worker: Worker) -> Client:
    return Client(nc)


@pytest.fixture
async def db(postgres: EmbeddedPostgres) -> AsyncIterator[MlDb]:
    async with MlDb.connect(postgres.dsn) as database:
        yield database


def tenant() -> str:
    return f"t{uuid.uuid4().hex[:12]}"


async def test_a_classifier_trains_deploys_and_predicts_then_an_alias_move_changes_answers(
    client: Client, db: MlDb
) -> None:
    """Inline rows → job → version 1 deployed → predictions; version 2 (labels flipped) behind
    the alias → the same features get the other class."""
    t = tenant()
    first = await train(client, t, train_request("churn", churn_rows(300)))
    assert first.status == "completed", first.error
    assert (first.version, first.attempts) == (1, 1)
    assert {"accuracy", "f1", "roc_auc"} <= set(first.metrics)
    assert (await deploy(client, t, "churn")).version == 1
    low = await predict(client, t, "churn", LOW_USAGE)
    assert (low.version, low.result.prediction.string_value) == (1, "yes")
    assert set(low.result.probabilities) == {"no", "yes"}
    assert low.result.probabilities["yes"] > 0.5
    second = await train(client, t, train_request("churn", churn_rows(300, flip=True)))
    assert second.version == 2
    staying = await predict(client, t, "churn", LOW_USAGE)
    assert (staying.version, staying.result.prediction.string_value) == (1, "yes")
    moved = await deploy(client, t, "churn", version=2)
    assert (moved.version, moved.previous_version) == (2, 1)
    flipped = await predict(client, t, "churn", LOW_USAGE)
    assert (flipped.version, flipped.result.prediction.string_value) == (2, "no")
    pinned = await predict(client, t, "churn/1", LOW_USAGE)
    assert pinned.result.prediction.string_value == "yes"
    assert await db.versions(t, "churn") == [1, 2]


async def test_a_batch_predicts_every_row_in_order(client: Client) -> None:
    """predict_batch inline: one prediction per row, the same as one predict each."""
    t = tenant()
    await train(client, t, train_request("churn", churn_rows(200)))
    await deploy(client, t, "churn")
    batch = await client.call_rpc(
        t,
        MlService.PredictBatch,
        PredictBatchRequest(
            model_id="churn@production", features_list=[struct(LOW_USAGE), struct(HIGH_USAGE)]
        ),
    )
    assert [p.prediction.string_value for p in batch.predictions] == ["yes", "no"]


async def test_a_csv_in_the_object_store_trains_and_records_its_hash(
    nc: NATS, client: Client
) -> None:
    """Training data as an Object Store file: the version records the file and its sha256."""
    t = tenant()
    files = await FileStore.open(nc.jetstream())
    stored = await files.put(t, "uploads/churn.csv", churn_csv(300), max_bytes=1 << 20)
    done = await train(
        client,
        t,
        train_request(
            "churn",
            model_type="classification",
            training_data=MlData(object="uploads/churn.csv"),
            hyperparameters={"n_estimators": 20, "max_depth": 6},
        ),
    )
    assert done.status == "completed", done.error
    model = await client.call_rpc(t, MlService.GetModel, GetMlModelRequest(model_id="churn/1"))
    version = model.versions[0]
    assert (version.data_object, version.data_sha256) == ("uploads/churn.csv", stored.sha256)
    assert version.params["n_estimators"] == 20
    assert [f.name for f in version.signature.features] == ["usage", "tenure", "plan", "active"]
    assert version.signature.classes == ["no", "yes"]
    assert len(version.artifact_sha256) == 64


async def test_a_file_that_cannot_train_fails_with_the_reason(nc: NATS, client: Client) -> None:
    """A CSV without the target column: status failed, the reason says so, no version."""
    t = tenant()
    files = await FileStore.open(nc.jetstream())
    await files.put(t, "bad.csv", b"a,b\n1,2\n3,4\n", max_bytes=1 << 20)
    done = await train(client, t, train_request("m", training_data=MlData(object="bad.csv")))
    assert done.status == "failed"
    assert "churned" in done.error
    with pytest.raises(NotFound):
        await client.call_rpc(t, MlService.GetModel, GetMlModelRequest(model_id="m"))


async def test_the_same_training_id_trains_once(client: Client, db: MlDb) -> None:
    """Asking twice with one training_id returns the one training; one version exists."""
    t = tenant()
    req = train_request("churn", churn_rows(100), training_id="nightly-2026-12-01")
    first = await train(client, t, req)
    again = await client.call_rpc(t, MlService.Train, req)
    assert (again.training_id, again.status) == (first.training_id, "completed")
    assert await db.versions_of_training(t, "nightly-2026-12-01") == 1


async def test_progress_and_completion_are_published_as_events(nc: NATS, client: Client) -> None:
    """evt.ml.training_progress for each stage, then evt.ml.training_completed with metrics."""
    t = tenant()
    done = await train(client, t, train_request("churn", churn_rows(100)))
    js = nc.jetstream()

    async def stored(event: str) -> list[bytes]:
        subject = event_subject(t, "ml", event)
        info = await js.stream_info(STREAM_EVENTS, subjects_filter=subject)
        count = (info.state.subjects or {}).get(subject, 0)
        if not count:
            return []
        sub = await js.subscribe(subject, ordered_consumer=True)
        try:
            return [(await sub.next_msg(timeout=2)).data for _ in range(count)]
        finally:
            await sub.unsubscribe()

    completed = await eventually(
        lambda: stored("training_completed"), timeout=10, what="training_completed"
    )
    event = MlTrainingFinishedEvent.FromString(completed[0])
    assert (event.training_id, event.version) == (done.training_id, 1)
    stages = [
        MlTrainingProgressEvent.FromString(b).stage for b in await stored("training_progress")
    ]
    assert stages[:3] == ["loading", "preprocessing", "fitting"]
    assert "registering" in stages


async def test_a_file_batch_runs_as_a_job_and_writes_one_line_per_row(
    nc: NATS, client: Client
) -> None:
    """A CSV of rows → job → JSON-lines output in the Object Store, in input order."""
    t = tenant()
    await train(client, t, train_request("churn", churn_rows(200)))
    await deploy(client, t, "churn")
    files = await FileStore.open(nc.jetstream())
    await files.put(t, "batch/in.csv", churn_csv(50, seed=7), max_bytes=1 << 20)
    queued = await client.call_rpc(
        t,
        MlService.PredictBatch,
        PredictBatchRequest(model_id="churn", input=MlData(object="batch/in.csv")),
    )
    assert (queued.status, queued.version) == ("queued", 1)

    async def job_done() -> bool:
        job = await client.call_rpc(
            t, MlService.GetPredictionJob, GetPredictionJobRequest(job_id=queued.job_id)
        )
        return job.status in ("completed", "failed")

    await eventually(job_done, timeout=60, what="batch job finished")
    job = await client.call_rpc(
        t, MlService.GetPredictionJob, GetPredictionJobRequest(job_id=queued.job_id)
    )
    assert (job.status, job.rows, job.error) == ("completed", 50, "")
    out = io.BytesIO()
    await files.get(t, job.output, into=out)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert len(lines) == 50
    assert all(line["prediction"] in ("yes", "no") for line in lines)


async def test_drift_names_the_feature_whose_inputs_moved(client: Client) -> None:
    """Predictions with usage far above training: drift flags usage, not tenure."""
    t = tenant()
    await train(client, t, train_request("churn", churn_rows(500)))
    await deploy(client, t, "churn")
    rows = churn_rows(400, seed=3)
    for row in rows:
        row.pop("churned")
        row["usage"] = float(row["usage"]) + 200
    await client.call_rpc(
        t,
        MlService.PredictBatch,
        PredictBatchRequest(model_id="churn", features_list=[struct(r) for r in rows]),
    )
    found = await client.call_rpc(t, MlService.Drift, MlDriftRequest(model_id="churn"))
    assert found.rows == 400
    assert "usage" in found.drifted
    assert "tenure" not in found.drifted


async def test_models_and_trainings_list_in_pages(client: Client) -> None:
    """Two pages of models by name; trainings of one model, newest first."""
    t = tenant()
    for name in ("a", "b", "c"):
        await train(client, t, train_request(name, churn_rows(60)))
    first = await client.call_rpc(
        t, MlService.ListModels, ListMlModelsRequest(page=PageRequest(page_size=2))
    )
    assert [m.name for m in first.models] == ["a", "b"]
    rest = await client.call_rpc(
        t,
        MlService.ListModels,
        ListMlModelsRequest(page=PageRequest(page_size=2, page_token=first.page.next_page_token)),
    )
    assert [m.name for m in rest.models] == ["c"]
    assert not rest.page.next_page_token
    runs = await client.call_rpc(t, MlService.ListTrainings, ListTrainingsRequest(model_id="b"))
    assert [r.model_id for r in runs.trainings] == ["b"]


async def test_deleting_a_deployed_version_needs_force_and_removes_its_artifact(
    nc: NATS, client: Client
) -> None:
    """409 while an alias points at it; with force the version, alias and artifact go."""
    t = tenant()
    await train(client, t, train_request("churn", churn_rows(80)))
    await client.call_rpc(
        t,
        MlService.SetAlias,
        SetModelAliasRequest(model_id="churn", alias="staging", version=1),
    )
    with pytest.raises(Conflict):
        await client.call_rpc(t, MlService.DeleteModel, DeleteMlModelRequest(model_id="churn/1"))
    files = await FileStore.open(nc.jetstream())
    names = [f.name async for f in files.list(t, prefix="ml/models/")]
    assert len(names) == 1
    deleted = await client.call_rpc(
        t, MlService.DeleteModel, DeleteMlModelRequest(model_id="churn", version=1, force=True)
    )
    assert (list(deleted.deleted_versions), list(deleted.removed_aliases)) == ([1], ["staging"])
    assert [f.name async for f in files.list(t, prefix="ml/models/")] == []
    with pytest.raises(NotFound):
        await predict(client, t, "churn@staging", LOW_USAGE)
