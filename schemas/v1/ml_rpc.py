"""Typed rpc handles of schemas/v1/ml.proto, written by `make proto`: do not edit."""

from __future__ import annotations

from typing import Final

from schemas.contracts import Unary
from schemas.v1 import ml_pb2


class MlService:
    """The `ml` component (aifleet.v1.MlService)."""

    Train: Final = Unary(
        "ml",
        "train",
        ml_pb2.TrainRequest,
        ml_pb2.TrainResponse,
    )
    GetTraining: Final = Unary(
        "ml",
        "get_training",
        ml_pb2.GetTrainingRequest,
        ml_pb2.MlTraining,
    )
    ListTrainings: Final = Unary(
        "ml",
        "list_trainings",
        ml_pb2.ListTrainingsRequest,
        ml_pb2.ListTrainingsResponse,
    )
    Predict: Final = Unary(
        "ml",
        "predict",
        ml_pb2.PredictRequest,
        ml_pb2.PredictResponse,
    )
    PredictBatch: Final = Unary(
        "ml",
        "predict_batch",
        ml_pb2.PredictBatchRequest,
        ml_pb2.PredictBatchResponse,
    )
    GetPredictionJob: Final = Unary(
        "ml",
        "get_prediction_job",
        ml_pb2.GetPredictionJobRequest,
        ml_pb2.MlPredictionJob,
    )
    ListModels: Final = Unary(
        "ml",
        "list_models",
        ml_pb2.ListMlModelsRequest,
        ml_pb2.ListMlModelsResponse,
    )
    GetModel: Final = Unary(
        "ml",
        "get_model",
        ml_pb2.GetMlModelRequest,
        ml_pb2.GetMlModelResponse,
    )
    Deploy: Final = Unary(
        "ml",
        "deploy",
        ml_pb2.DeployModelRequest,
        ml_pb2.MlAliasResponse,
    )
    SetAlias: Final = Unary(
        "ml",
        "set_alias",
        ml_pb2.SetModelAliasRequest,
        ml_pb2.MlAliasResponse,
    )
    RemoveAlias: Final = Unary(
        "ml",
        "remove_alias",
        ml_pb2.RemoveModelAliasRequest,
        ml_pb2.MlAliasResponse,
    )
    DeleteModel: Final = Unary(
        "ml",
        "delete_model",
        ml_pb2.DeleteMlModelRequest,
        ml_pb2.DeleteMlModelResponse,
    )
    Drift: Final = Unary(
        "ml",
        "drift",
        ml_pb2.MlDriftRequest,
        ml_pb2.MlDriftResponse,
    )
