"""The ML component over REST on the seed's paths, through the real bridge: train (202),
watch the training, deploy, predict one and a batch, move the alias, delete (204)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from aifleet.embedded import EmbeddedNats, EmbeddedPostgres
from tests.bridge.conftest import bridge_settings, serving
from tests.support.fleet import running_worker
from tests.support.ml import churn_rows
from tests.support.ml_client import HIGH_USAGE, LOW_USAGE
from workers.ml import service as ml
from workers.runtime.worker import Worker

BASE = "/api/v1/ml"


@pytest.fixture(scope="module")
async def ml_worker(nats_server: EmbeddedNats, postgres: EmbeddedPostgres) -> AsyncIterator[Worker]:
    async with running_worker([ml.component], nats_server.url, database_url=postgres.dsn) as w:
        yield w


@pytest.fixture
async def rest(nats_server: EmbeddedNats, ml_worker: Worker) -> AsyncIterator[httpx.AsyncClient]:
    async with serving(bridge_settings(nats_server.url, components=["ml"])) as client:
        yield client


def tenant() -> dict[str, str]:
    return {"X-Tenant-ID": "m" + uuid.uuid4().hex[:12]}


async def trained(
    rest: httpx.AsyncClient, h: dict[str, str], body: dict[str, Any]
) -> dict[str, Any]:
    started = await rest.post(f"{BASE}/models/train", json=body, headers=h)
    assert started.status_code == 202, started.text
    training_id = started.json()["training_id"]
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        found = await rest.get(f"{BASE}/trainings/{training_id}", headers=h)
        assert found.status_code == 200, found.text
        if found.json()["status"] in ("completed", "failed"):
            result: dict[str, Any] = found.json()
            return result
        await asyncio.sleep(0.2)
    raise AssertionError(f"training {training_id} did not finish")


async def test_train_watch_deploy_predict_and_move_the_alias_over_rest(
    rest: httpx.AsyncClient,
) -> None:
    """The acceptance path on the seed's REST paths."""
    h = tenant()
    body = {
        "name": "churn",
        "model_type": "classification",
        "target": "churned",
        "training_data": {"rows": churn_rows(200)},
        "hyperparameters": {"n_estimators": 30},
        "validation_split": 0.25,
    }
    first = await trained(rest, h, body)
    assert (first["status"], first["version"]) == ("completed", 1), first
    assert set(first["metrics"]) == {"accuracy", "f1", "roc_auc"}
    deployed = await rest.post(f"{BASE}/models/churn/deploy", json={}, headers=h)
    assert deployed.json() == {
        "name": "churn",
        "alias": "production",
        "version": 1,
        "previous_version": 0,
    }
    one = await rest.post(f"{BASE}/models/churn/predict", json={"features": LOW_USAGE}, headers=h)
    assert one.status_code == 200, one.text
    assert one.json()["result"]["prediction"] == "yes"
    batch = await rest.post(
        f"{BASE}/models/churn@production/predict/batch",
        json={"features_list": [LOW_USAGE, HIGH_USAGE]},
        headers=h,
    )
    assert [p["prediction"] for p in batch.json()["predictions"]] == ["yes", "no"]

    second = await trained(rest, h, {**body, "training_data": {"rows": churn_rows(200, flip=True)}})
    assert second["version"] == 2
    moved = await rest.post(f"{BASE}/models/churn/deploy", json={"version": 2}, headers=h)
    assert moved.json()["previous_version"] == 1
    again = await rest.post(f"{BASE}/models/churn/predict", json={"features": LOW_USAGE}, headers=h)
    assert (again.json()["version"], again.json()["result"]["prediction"]) == (2, "no")
    pinned = await rest.post(
        f"{BASE}/models/churn%2F1/predict", json={"features": LOW_USAGE}, headers=h
    )
    assert pinned.json()["result"]["prediction"] == "yes"

    model = await rest.get(f"{BASE}/models/churn", headers=h)
    assert [v["version"] for v in model.json()["versions"]] == [2, 1]
    assert model.json()["aliases"] == {"production": 2}
    listed = await rest.get(f"{BASE}/models", headers=h)
    assert [m["name"] for m in listed.json()["models"]] == ["churn"]

    refused = await rest.delete(f"{BASE}/models/churn/versions/2", headers=h)
    assert refused.status_code == 409, refused.text
    gone = await rest.delete(f"{BASE}/models/churn/versions/1", headers=h)
    assert (gone.status_code, gone.content) == (204, b"")
    unaliased = await rest.delete(f"{BASE}/models/churn/aliases/production", headers=h)
    assert unaliased.status_code == 204
    missing = await rest.post(
        f"{BASE}/models/churn/predict", json={"features": LOW_USAGE}, headers=h
    )
    assert missing.status_code == 404


async def test_bad_requests_over_rest_name_the_field(rest: httpx.AsyncClient) -> None:
    """Unknown model type 400, unknown hyperparameter 400, wrong feature type 400, unknown
    field 400, another tenant's model 404."""
    h = tenant()
    base = {"name": "m", "target": "churned", "training_data": {"rows": churn_rows(20)}}
    bad_type = await rest.post(
        f"{BASE}/models/train", json={**base, "model_type": "transformer"}, headers=h
    )
    assert (bad_type.status_code, bad_type.json()["details"]["field"]) == (400, "model_type")
    bad_hyper = await rest.post(
        f"{BASE}/models/train",
        json={**base, "model_type": "classification", "hyperparameters": {"depth": 3}},
        headers=h,
    )
    assert bad_hyper.json()["details"]["field"] == "hyperparameters.depth"
    unknown = await rest.post(
        f"{BASE}/models/train", json={**base, "model_type": "kmeans", "colour": 1}, headers=h
    )
    assert unknown.status_code == 400
    done = await trained(
        rest,
        h,
        {**base, "training_data": {"rows": churn_rows(60)}, "model_type": "logistic_regression"},
    )
    assert done["status"] == "completed"
    wrong = await rest.post(
        f"{BASE}/models/m%2F1/predict", json={"features": {**LOW_USAGE, "usage": "x"}}, headers=h
    )
    assert (wrong.status_code, wrong.json()["details"]["field"]) == (400, "features.usage")
    other = await rest.get(f"{BASE}/models/m", headers=tenant())
    assert other.status_code == 404
