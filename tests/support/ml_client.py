"""Driving the ML component as a client does: typed calls over NATS, waiting for trainings."""

from __future__ import annotations

from typing import Any

from google.protobuf import struct_pb2

from schemas.v1.ml_pb2 import (
    DeployModelRequest,
    GetTrainingRequest,
    MlAliasResponse,
    MlData,
    MlTraining,
    PredictRequest,
    PredictResponse,
    TrainRequest,
    TrainResponse,
)
from schemas.v1.ml_rpc import MlService
from tests.support.polling import eventually
from workers.runtime.client import Client

DONE = ("completed", "failed")


def struct(values: dict[str, Any]) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    out.update(values)
    return out


def inline(rows: list[dict[str, Any]]) -> MlData:
    return MlData(rows=[struct(r) for r in rows])


def train_request(
    name: str, rows: list[dict[str, Any]] | None = None, **fields: Any
) -> TrainRequest:
    req = TrainRequest(name=name, model_type=fields.pop("model_type", "logistic_regression"))
    req.target = fields.pop("target", "churned")
    if rows is not None:
        req.training_data.CopyFrom(inline(rows))
    hyper = fields.pop("hyperparameters", None)
    if hyper is not None:
        req.hyperparameters.CopyFrom(struct(hyper))
    for key, value in fields.items():
        if key == "training_data":
            req.training_data.CopyFrom(value)
        elif key == "features":
            req.features.extend(value)
        else:
            setattr(req, key, value)
    return req


async def train(client: Client, tenant: str, req: TrainRequest, timeout: float = 120) -> MlTraining:
    """Start a training and wait until it finished; the finished training."""
    started: TrainResponse = await client.call_rpc(tenant, MlService.Train, req, timeout=30)
    return await finished(client, tenant, started.training_id, timeout)


async def finished(client: Client, tenant: str, training_id: str, timeout: float) -> MlTraining:
    async def probe() -> MlTraining | None:
        found = await client.call_rpc(
            tenant, MlService.GetTraining, GetTrainingRequest(training_id=training_id)
        )
        return found if found.status in DONE else None

    done = await eventually(probe, timeout=timeout, what=f"training {training_id} finished")
    assert done is not None
    return done


async def deploy(client: Client, tenant: str, model_id: str, **fields: Any) -> MlAliasResponse:
    return await client.call_rpc(
        tenant, MlService.Deploy, DeployModelRequest(model_id=model_id, **fields)
    )


async def predict(
    client: Client, tenant: str, model_id: str, features: dict[str, Any]
) -> PredictResponse:
    return await client.call_rpc(
        tenant, MlService.Predict, PredictRequest(model_id=model_id, features=struct(features))
    )


LOW_USAGE = {"usage": 5.0, "tenure": 3, "plan": "basic", "active": True}
HIGH_USAGE = {"usage": 95.0, "tenure": 50, "plan": "pro", "active": True}
