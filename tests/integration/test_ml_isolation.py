"""Two tenants, the same model names, training ids, aliases and job ids: every op sees only its
own tenant's registry, trainings, files and predictions."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from nats.aio.client import Client as NATS

from aifleet.embedded import EmbeddedNats, EmbeddedPostgres
from schemas.errors import NotFound
from schemas.v1.ml_pb2 import (
    DeleteMlModelRequest,
    GetMlModelRequest,
    GetPredictionJobRequest,
    GetTrainingRequest,
    ListMlModelsRequest,
    ListTrainingsRequest,
    MlData,
    MlDriftRequest,
    PredictBatchRequest,
    RemoveModelAliasRequest,
    SetModelAliasRequest,
)
from schemas.v1.ml_rpc import MlService
from tests.support.fleet import running_worker
from tests.support.ml import churn_csv, churn_rows
from tests.support.ml_client import (
    LOW_USAGE,
    deploy,
    finished,
    predict,
    struct,
    train,
    train_request,
)
from tests.support.polling import eventually
from workers.ml import service as ml
from workers.runtime.client import Client
from workers.runtime.files import FileStore
from workers.runtime.worker import Worker


@pytest.fixture(scope="module")
async def worker(nats_server: EmbeddedNats, postgres: EmbeddedPostgres) -> AsyncIterator[Worker]:
    async with running_worker([ml.component], nats_server.url, database_url=postgres.dsn) as w:
        yield w


@pytest.mark.timeout(300)
async def test_every_op_is_scoped_to_its_tenant(nc: NATS, worker: Worker) -> None:
    """Tenant a trains `churn` (normal labels), tenant b `churn` (flipped) with the same
    training id: each predicts with its own model, lists, moves and deletes only its own."""
    client = Client(nc)
    a, b = (f"{x}{uuid.uuid4().hex[:10]}" for x in "ab")
    files = await FileStore.open(nc.jetstream())
    await files.put(a, "same.csv", churn_csv(40), max_bytes=1 << 20)
    for t, flip in ((a, False), (b, True)):
        done = await train(
            client, t, train_request("churn", churn_rows(200, flip=flip), training_id="same")
        )
        assert (done.status, done.version) == ("completed", 1), done.error
        await deploy(client, t, "churn")
    # predict, predict_batch: each tenant's own model answers
    assert (await predict(client, a, "churn", LOW_USAGE)).result.prediction.string_value == "yes"
    assert (await predict(client, b, "churn", LOW_USAGE)).result.prediction.string_value == "no"
    batch = await client.call_rpc(
        b,
        MlService.PredictBatch,
        PredictBatchRequest(model_id="churn", features_list=[struct(LOW_USAGE)]),
    )
    assert batch.predictions[0].prediction.string_value == "no"
    # get_training, list_trainings: same id, own record
    for t in (a, b):
        found = await client.call_rpc(
            t, MlService.GetTraining, GetTrainingRequest(training_id="same")
        )
        assert found.attempts == 1
        listed = await client.call_rpc(t, MlService.ListTrainings, ListTrainingsRequest())
        assert [r.training_id for r in listed.trainings] == ["same"]
    # a file batch of tenant a's object is not found for tenant b
    with pytest.raises(NotFound):
        await client.call_rpc(
            b,
            MlService.PredictBatch,
            PredictBatchRequest(model_id="churn", input=MlData(object="same.csv"), job_id="j"),
        )
    queued = await client.call_rpc(
        a,
        MlService.PredictBatch,
        PredictBatchRequest(model_id="churn", input=MlData(object="same.csv"), job_id="j"),
    )

    async def job_done() -> bool:
        job = await client.call_rpc(
            a, MlService.GetPredictionJob, GetPredictionJobRequest(job_id="j")
        )
        return job.status == "completed"

    await eventually(job_done, timeout=60, what="tenant a's batch")
    with pytest.raises(NotFound):
        await client.call_rpc(
            b, MlService.GetPredictionJob, GetPredictionJobRequest(job_id=queued.job_id)
        )
    # set_alias / remove_alias / deploy in b leave a's aliases alone
    await client.call_rpc(
        b, MlService.SetAlias, SetModelAliasRequest(model_id="churn", alias="staging", version=1)
    )
    await client.call_rpc(
        b, MlService.RemoveAlias, RemoveModelAliasRequest(model_id="churn", alias="production")
    )
    model_a = await client.call_rpc(a, MlService.GetModel, GetMlModelRequest(model_id="churn"))
    assert dict(model_a.aliases) == {"production": 1}
    with pytest.raises(NotFound):
        await predict(client, a, "churn@staging", LOW_USAGE)
    # drift with explicit rows per tenant
    for t in (a, b):
        drift = await client.call_rpc(
            t,
            MlService.Drift,
            MlDriftRequest(model_id="churn/1", features_list=[struct(LOW_USAGE)] * 20),
        )
        assert drift.rows == 20
    # list_models, delete_model: b deletes its model, a keeps its own
    await client.call_rpc(
        b, MlService.DeleteModel, DeleteMlModelRequest(model_id="churn", force=True)
    )
    listed_a = await client.call_rpc(a, MlService.ListModels, ListMlModelsRequest())
    listed_b = await client.call_rpc(b, MlService.ListModels, ListMlModelsRequest())
    assert ([m.name for m in listed_a.models], list(listed_b.models)) == (["churn"], [])
    assert (await predict(client, a, "churn", LOW_USAGE)).version == 1
    assert [f.name async for f in files.list(b, prefix="ml/")] == []
    assert len([f async for f in files.list(a, prefix="ml/models/")]) == 1
    assert (await finished(client, a, "same", 5)).status == "completed"
