"""Bad input to every ML operation: the documented error naming the field, nothing written
(no row of the tenant, no job queued, no event), and the worker still serving."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import msgpack
import nats
import pytest
from nats.aio.client import Client as NATS

from aifleet.embedded import EmbeddedNats, EmbeddedPostgres
from schemas.v1.ml_rpc import MlService
from subjects import STREAM_EVENTS, STREAM_JOBS
from tests.support import wire
from tests.support.fleet import running_worker
from tests.support.jobs import stream_count
from tests.support.ml import churn_rows
from tests.support.ml_client import LOW_USAGE, deploy, predict, train, train_request
from tests.support.ml_db import MlDb
from tests.support.wire import assert_error, error_of
from workers.ml import service as ml
from workers.runtime.client import Client
from workers.runtime.worker import Worker

OPS = [
    "train",
    "get_training",
    "list_trainings",
    "predict",
    "predict_batch",
    "get_prediction_job",
    "list_models",
    "get_model",
    "deploy",
    "set_alias",
    "remove_alias",
    "delete_model",
    "drift",
]
ROWS = [{"x": 1, "y": "a"}, {"x": 2, "y": "b"}, {"x": 3, "y": "a"}, {"x": 4, "y": "b"}]
ROW = {"usage": 5.0, "tenure": 3, "plan": "basic", "active": True}
VALID: dict[str, dict[str, Any]] = {
    "train": {
        "name": "m",
        "model_type": "classification",
        "target": "y",
        "training_data": {"rows": ROWS},
    },
    "get_training": {"training_id": "t1"},
    "list_trainings": {"page": {"page_size": 5}},
    "predict": {"model_id": "m", "features": ROW},
    "predict_batch": {"model_id": "m", "features_list": [ROW]},
    "get_prediction_job": {"job_id": "j1"},
    "list_models": {"page": {"page_size": 5}},
    "get_model": {"model_id": "m"},
    "deploy": {"model_id": "m", "alias": "production"},
    "set_alias": {"model_id": "m", "alias": "staging", "version": 1},
    "remove_alias": {"model_id": "m", "alias": "staging"},
    "delete_model": {"model_id": "m", "version": 1},
    "drift": {"model_id": "m"},
}
WRONG_TYPE: dict[str, dict[str, Any]] = {
    "train": {"name": 5, "model_type": "classification"},
    "get_training": {"training_id": ["t1"]},
    "list_trainings": {"page": {"page_size": "many"}},
    "predict": {"model_id": "m", "features": [1, 2]},
    "predict_batch": {"model_id": "m", "features_list": "rows"},
    "get_prediction_job": {"job_id": {"a": 1}},
    "list_models": {"name_prefix": 7},
    "get_model": {"model_id": True},
    "deploy": {"model_id": "m", "version": "two"},
    "set_alias": {"model_id": "m", "alias": "a", "version": -1},
    "remove_alias": {"model_id": "m", "alias": 3},
    "delete_model": {"model_id": "m", "force": "yes"},
    "drift": {"model_id": "m", "psi_threshold": "high"},
}
MISSING: dict[str, dict[str, Any]] = {
    "train": {"model_type": "classification", "target": "y", "training_data": {"rows": ROWS}},
    "get_training": {},
    "list_trainings": {"model_id": "bad name"},
    "predict": {"features": ROW},
    "predict_batch": {"model_id": "m"},
    "get_prediction_job": {},
    "list_models": {"name_prefix": "a\u0001"},
    "get_model": {},
    "deploy": {},
    "set_alias": {"model_id": "m", "alias": "staging"},
    "remove_alias": {"model_id": "m"},
    "delete_model": {},
    "drift": {},
}
# (op, body, status, field): refused before anything is written.
SEMANTIC: dict[str, tuple[str, dict[str, Any], int, str]] = {
    "unknown_model_type": (
        "train",
        {**VALID["train"], "model_type": "deep_learning"},
        400,
        "model_type",
    ),
    "unknown_hyperparameter": (
        "train",
        {**VALID["train"], "hyperparameters": {"n_trees": 5}},
        400,
        "hyperparameters.n_trees",
    ),
    "invalid_hyperparameter": (
        "train",
        {**VALID["train"], "hyperparameters": {"max_depth": -3}},
        400,
        "hyperparameters.max_depth",
    ),
    "owned_hyperparameter": (
        "train",
        {**VALID["train"], "hyperparameters": {"n_jobs": 64}},
        400,
        "hyperparameters.n_jobs",
    ),
    "too_many_trees": (
        "train",
        {**VALID["train"], "hyperparameters": {"n_estimators": 10**6}},
        400,
        "hyperparameters.n_estimators",
    ),
    "no_target": ("train", {**VALID["train"], "target": ""}, 400, "target"),
    "target_not_in_rows": ("train", {**VALID["train"], "target": "z"}, 400, "target"),
    "kmeans_with_target": ("train", {**VALID["train"], "model_type": "kmeans"}, 400, "target"),
    "split_too_large": (
        "train",
        {**VALID["train"], "validation_split": 0.9},
        400,
        "validation_split",
    ),
    "mixed_column": (
        "train",
        {**VALID["train"], "training_data": {"rows": [*ROWS, {"x": "four", "y": "a"}]}},
        400,
        "training_data.rows.x",
    ),
    "rows_and_object": (
        "train",
        {**VALID["train"], "training_data": {"rows": ROWS, "object": "a.csv"}},
        400,
        "training_data",
    ),
    "missing_object": (
        "train",
        {**VALID["train"], "training_data": {"object": "nope.csv"}},
        404,
        "training_data.object",
    ),
    "object_dot_segment": (
        "train",
        {**VALID["train"], "training_data": {"object": "../x.csv"}},
        400,
        "training_data.object",
    ),
    "unknown_format": (
        "train",
        {**VALID["train"], "training_data": {"object": "a.xlsx"}},
        400,
        "training_data.format",
    ),
    "bad_training_id": ("train", {**VALID["train"], "training_id": "a b"}, 400, "training_id"),
    "bad_model_name": ("train", {**VALID["train"], "name": "a/b"}, 400, "name"),
    "no_such_model": ("predict", {"model_id": "ghost", "features": ROW}, 404, "model_id"),
    "bad_reference": ("predict", {"model_id": "m@UP", "features": ROW}, 400, "model_id"),
    "batch_both": (
        "predict_batch",
        {"model_id": "m", "features_list": [ROW], "input": {"object": "a.csv"}},
        400,
        "input",
    ),
    "batch_rows_in_input": (
        "predict_batch",
        {"model_id": "m", "input": {"rows": [ROW]}},
        400,
        "input.rows",
    ),
    "deploy_an_alias": ("deploy", {"model_id": "m@staging"}, 400, "model_id"),
    "delete_an_alias": ("delete_model", {"model_id": "m@staging"}, 400, "model_id"),
    "bad_alias": ("set_alias", {"model_id": "m", "alias": "Prod!", "version": 1}, 400, "alias"),
    "drift_p_value": ("drift", {"model_id": "m", "p_value": 2}, 400, "p_value"),
}


@pytest.fixture(scope="module")
async def worker(nats_server: EmbeddedNats, postgres: EmbeddedPostgres) -> AsyncIterator[Worker]:
    with pytest.MonkeyPatch.context() as env:
        env.setenv("AIFLEET_ML_MAX_BATCH_ROWS", "100")
        async with running_worker([ml.component], nats_server.url, database_url=postgres.dsn) as w:
            yield w


@pytest.fixture(scope="module")
async def conn(nats_server: EmbeddedNats) -> AsyncIterator[NATS]:
    client = await nats.connect(nats_server.url, name="pytest-ml-bad-input")
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture(scope="module")
async def db(postgres: EmbeddedPostgres) -> AsyncIterator[MlDb]:
    async with MlDb.connect(postgres.dsn) as found:
        yield found


@pytest.fixture(scope="module")
async def served(worker: Worker, conn: NATS) -> str:
    """A tenant with a deployed model `m` (version 1), for the checks that it still serves."""
    tenant = "ok" + uuid.uuid4().hex[:12]
    client = Client(conn)
    await train(client, tenant, train_request("m", churn_rows(80)))
    await deploy(client, tenant, "m")
    return tenant


@pytest.fixture
def tenant() -> str:
    return "b" + uuid.uuid4().hex[:16]


async def send(conn: NATS, tenant: str, op: str, fmt: str, body: Any) -> Any:
    return await wire.send(
        conn, tenant, "ml", op, fmt, wire.encode(fmt, "ml", op, body), timeout=20
    )


def error_details(fmt: str, msg: Any) -> dict[str, Any]:
    data = json.loads(msg.data) if fmt == "json" else msgpack.unpackb(msg.data)
    details: dict[str, Any] = data.get("details") or {}
    return details


async def assert_nothing_written(db: MlDb, conn: NATS, tenant: str) -> None:
    assert set((await db.row_counts(tenant)).values()) == {0}
    js = conn.jetstream()
    assert await stream_count(js, STREAM_JOBS, f"ai.v1.{tenant}.job.ml.>") == 0
    assert await stream_count(js, STREAM_EVENTS, f"ai.v1.{tenant}.evt.ml.>") == 0


async def assert_still_serving(conn: NATS, served: str) -> None:
    reply = await predict(Client(conn), served, "m", LOW_USAGE)
    assert reply.version == 1


@pytest.mark.parametrize("fmt", ["json", "msgpack"])
@pytest.mark.parametrize("op", OPS)
async def test_unknown_field_is_400(
    conn: NATS, db: MlDb, served: str, tenant: str, op: str, fmt: str
) -> None:
    """A field the contract does not declare is refused, not dropped."""
    reply = await send(conn, tenant, op, fmt, {**VALID[op], "colour": "red"})
    assert_error(reply, fmt, 400, "INVALID_ARGUMENT")
    await assert_nothing_written(db, conn, tenant)
    await assert_still_serving(conn, served)


@pytest.mark.parametrize("op", OPS)
async def test_wrong_type_is_400(conn: NATS, db: MlDb, served: str, tenant: str, op: str) -> None:
    """A field of the wrong type is refused."""
    reply = await send(conn, tenant, op, "json", WRONG_TYPE[op])
    assert_error(reply, "json", 400, "INVALID_ARGUMENT")
    await assert_nothing_written(db, conn, tenant)
    await assert_still_serving(conn, served)


@pytest.mark.parametrize("op", OPS)
async def test_missing_or_malformed_required_field_is_400(
    conn: NATS, db: MlDb, served: str, tenant: str, op: str
) -> None:
    """A required field left out (or not matching its pattern) is refused."""
    reply = await send(conn, tenant, op, "json", MISSING[op])
    assert_error(reply, "json", 400, "INVALID_ARGUMENT")
    await assert_nothing_written(db, conn, tenant)


@pytest.mark.parametrize("case", sorted(SEMANTIC))
async def test_invalid_requests_name_the_field(
    conn: NATS, db: MlDb, served: str, tenant: str, case: str
) -> None:
    """Unknown model types, bad hyperparameters, bad data and references: the field named."""
    op, body, status, field = SEMANTIC[case]
    reply = await send(conn, tenant, op, "json", body)
    code = {400: "INVALID_ARGUMENT", 404: "NOT_FOUND"}[status]
    assert_error(reply, "json", status, code)
    assert error_details("json", reply).get("field") == field, error_of("json", reply)
    await assert_nothing_written(db, conn, tenant)
    await assert_still_serving(conn, served)


@pytest.mark.parametrize(
    ("row", "field"),
    [
        ({k: v for k, v in ROW.items() if k != "plan"}, "features.plan"),
        ({**ROW, "colour": "red"}, "features.colour"),
        ({**ROW, "usage": "high"}, "features.usage"),
        ({**ROW, "active": "yes"}, "features.active"),
        ({**ROW, "plan": 3}, "features.plan"),
    ],
)
async def test_features_not_matching_the_signature_name_the_feature(
    conn: NATS, served: str, row: dict[str, Any], field: str
) -> None:
    """Missing, unknown or wrongly typed features: 400 naming the feature."""
    reply = await send(conn, served, "predict", "json", {"model_id": "m", "features": row})
    assert_error(reply, "json", 400, "INVALID_ARGUMENT")
    assert error_details("json", reply).get("field") == field


async def test_a_batch_over_the_inline_limit_is_413(conn: NATS, served: str) -> None:
    """More rows than AIFLEET_ML_MAX_BATCH_ROWS (100 here): 413, use a file batch."""
    body = {"model_id": "m", "features_list": [ROW] * 101}
    reply = await send(conn, served, "predict_batch", "msgpack", body)
    assert_error(reply, "msgpack", 413, "PAYLOAD_TOO_LARGE")
    assert error_details("msgpack", reply).get("field") == "features_list"
    reply = await send(
        conn, served, "predict_batch", "json", {**body, "features_list": [ROW] * 100}
    )
    assert len(json.loads(reply.data)["predictions"]) == 100


async def test_another_tenants_model_is_not_found(conn: NATS, served: str, tenant: str) -> None:
    """The served tenant's `m` does not exist for another tenant, for every op naming it."""
    for op in (
        "predict",
        "predict_batch",
        "get_model",
        "deploy",
        "set_alias",
        "delete_model",
        "drift",
    ):
        reply = await send(conn, tenant, op, "json", VALID[op])
        assert_error(reply, "json", 404, "NOT_FOUND")
    assert MlService.Predict.op == "predict"
