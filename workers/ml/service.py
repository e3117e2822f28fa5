"""ML handlers: validate, then queue a job, read the registry, or predict with a loaded model.

`train` and `predict_batch` (for a file) are both an op and a JetStream job: over request-reply
they check the request, record it `queued` and enqueue the same request as `job.ml.<op>`; a job
delivery (it has a message id) does the work. Predictions resolve the version through a
per-worker cache of resolutions (workers/ml/resolutions.py: forgotten on every replica when an
alias moves, kept at most AIFLEET_ML_ALIAS_CACHE_SECONDS) and use the per-worker model cache.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from google.protobuf import struct_pb2

from schemas.errors import (
    BadRequest,
    Conflict,
    Internal,
    NotFound,
    PayloadTooLarge,
    Unprocessable,
)
from schemas.v1 import ml_pb2
from schemas.v1.cache_pb2 import GetRequest, SetRequest
from schemas.v1.cache_rpc import CacheService
from schemas.v1.ml_pb2 import (
    GetPredictionJobRequest,
    GetTrainingRequest,
    ListTrainingsRequest,
    ListTrainingsResponse,
    MlDriftRequest,
    MlDriftResponse,
    MlFeatureDrift,
    MlPrediction,
    MlPredictionJob,
    MlTraining,
    PredictBatchRequest,
    PredictBatchResponse,
    PredictRequest,
    PredictResponse,
    TrainRequest,
    TrainResponse,
)
from schemas.v1.ml_rpc import MlService as MlRpc
from workers.ml import convert, drift, predictions, requests, runner
from workers.ml.artifacts import ArtifactRefused
from workers.ml.batch_job import BatchJob
from workers.ml.models import LoadedModel, ModelCache, load_file, scratch_dir
from workers.ml.recorder import InputRecorder
from workers.ml.reference import ModelRef, check_name, parse, serving
from workers.ml.registry_ops import RegistryHandlers, not_found
from workers.ml.resolutions import Resolutions
from workers.ml.runs import RunStore
from workers.ml.settings import MlSettings
from workers.ml.signature import FeatureError, Signature
from workers.ml.store import SCHEMA, MlStore
from workers.ml.train_job import TrainingJob
from workers.runtime import paging
from workers.runtime import validation as check
from workers.runtime.component import Component
from workers.runtime.config import ConfigurationError, load_settings
from workers.runtime.context import Context
from workers.runtime.files import FileStore
from workers.runtime.files import check_name as check_object
from workers.runtime.outbox import Outbox
from workers.runtime.postgres import migrate
from workers.runtime.resources import Resources

MIGRATIONS = Path(__file__).resolve().with_name("migrations")
MAX_ROW_BYTES = 64 * 1024


def _rows(values: Sequence[struct_pb2.Struct], field: str) -> list[dict[str, Any]]:
    return [
        check.struct(v, f"{field}[{i}]", max_bytes=MAX_ROW_BYTES, max_depth=2)
        for i, v in enumerate(values)
    ]


def _matrix(signature: Signature, rows: list[dict[str, Any]], field: str) -> Any:
    try:
        return signature.matrix(rows, field)
    except FeatureError as exc:
        raise BadRequest(str(exc), details={"field": exc.field}) from None


def _predict_rows(model: LoadedModel, rows: list[dict[str, Any]]) -> list[MlPrediction]:
    """Check, predict and convert a batch in one go, off the event loop."""
    matrix = _matrix(model.signature, rows, "features_list")
    return [predictions.to_proto(r) for r in predictions.predict(model, matrix)]


class MlHandlers(RegistryHandlers):
    def __init__(
        self,
        store: MlStore,
        runs: RunStore,
        files: FileStore,
        outbox: Outbox,
        settings: MlSettings,
        *,
        max_attempts: int,
    ) -> None:
        self.store = store
        self.runs = runs
        self.files = files
        self.outbox = outbox
        self.settings = settings
        self.cache = ModelCache(settings.model_cache_bytes)
        self.resolutions = Resolutions(settings.alias_cache_seconds)
        self.recorder = InputRecorder(
            runs, window=settings.drift_window, interval=settings.drift_flush_seconds
        )
        self.training = TrainingJob(store, runs, files, outbox, settings, max_attempts=max_attempts)
        self.batches = BatchJob(runs, files, settings)

    # -- training ---------------------------------------------------------------------------

    async def train(self, ctx: Context, req: TrainRequest) -> TrainResponse:
        # Inline rows are parsed here: off the event loop, it serves other requests meanwhile.
        spec = await asyncio.to_thread(requests.check_train, req, self.settings)
        training_id = requests.training_id(req.training_id, ctx.message_id)
        if ctx.message_id is not None:
            return await self.training.run(ctx, spec, training_id)
        existing = await self.runs.training(ctx.tenant, training_id)
        if existing is not None and existing.name != spec.name:
            raise Conflict(
                f"training {training_id} trains another model", details={"field": "training_id"}
            )
        if existing is not None and existing.status != "queued":
            return TrainResponse(
                training_id=training_id, model_id=spec.name, status=existing.status
            )
        if spec.object:
            await self._check_object(ctx, spec.object, "training_data.object")
        job = TrainRequest()
        job.CopyFrom(req)
        job.training_id = training_id
        await ctx.enqueue(MlRpc.Train, job, msg_id=f"ml-train:{ctx.tenant}:{training_id}")
        row, _ = await self.runs.queue_training(
            ctx.tenant, training_id, spec.name, spec.kind.name, ctx.user_id or ""
        )
        return TrainResponse(training_id=training_id, model_id=spec.name, status=row.status)

    async def get_training(self, ctx: Context, req: GetTrainingRequest) -> MlTraining:
        training_id = check.identifier(req.training_id, "training_id")
        row = await self.runs.training(ctx.tenant, training_id)
        if row is None:
            raise NotFound(f"training {training_id} not found", details={"field": "training_id"})
        return convert.training(row)

    async def list_trainings(
        self, ctx: Context, req: ListTrainingsRequest
    ) -> ListTrainingsResponse:
        name = check_name(req.model_id, "model_id") if req.model_id else ""
        page = paging.start(ctx.tenant, req.page, query={"model": name})
        after = (page.after[0], page.after[1]) if page.after else None
        rows = await self.runs.list_trainings(
            ctx.tenant, name=name, after=after, limit=page.size + 1
        )
        kept, reply = paging.finish(ctx.tenant, page, rows, lambda r: (r.created_at, r.training_id))
        return ListTrainingsResponse(trainings=[convert.training(r) for r in kept], page=reply)

    async def _check_object(self, ctx: Context, name: str, field: str) -> None:
        info = await self.files.info(ctx.tenant, name)
        if info is None:
            raise NotFound(f"object {name!r} not found", details={"field": field})
        if info.size > self.settings.max_file_bytes:
            raise PayloadTooLarge(
                "the object is larger than the component reads",
                details={"field": field, "limit_bytes": self.settings.max_file_bytes},
            )

    # -- predictions ------------------------------------------------------------------------

    async def _model(self, ctx: Context, ref: ModelRef) -> tuple[int, LoadedModel]:
        found = self.resolutions.get(ctx.tenant, ref)
        if found is None:
            epoch = self.resolutions.epoch
            found = await self.store.serving(ctx.tenant, ref)
            if found is None:
                raise not_found(ref)
            self.resolutions.put(ctx.tenant, ref, found, epoch)

        async def load() -> LoadedModel:
            signature = await self.store.signature(ctx.tenant, ref.name, found.version)
            if signature is None:
                raise not_found(ref)
            with scratch_dir() as scratch:
                path = Path(scratch) / "model.skops"
                with path.open("wb") as f:
                    await self.files.get(ctx.tenant, found.artifact_object, into=f)
                try:
                    return await asyncio.to_thread(
                        load_file,
                        path,
                        found.artifact_sha256,
                        Signature.from_json(signature),
                        self.settings.max_artifact_bytes,
                    )
                except ArtifactRefused as exc:
                    ctx.log.error("artifact refused", model=str(ref), reason=str(exc))
                    raise Internal("the model's artifact failed its integrity check") from None

        model = await self.cache.get((ctx.tenant, ref.name, found.version), load)
        return found.version, model

    async def predict(self, ctx: Context, req: PredictRequest) -> PredictResponse:
        ref = serving(parse(req.model_id))
        row = check.struct(req.features, "features", max_bytes=MAX_ROW_BYTES, max_depth=2)
        version, model = await self._model(ctx, ref)
        matrix = _matrix(model.signature, [row], "features")
        key = ""
        if self.settings.prediction_cache_ttl_seconds:
            digest = hashlib.sha256(json.dumps(row, sort_keys=True).encode()).hexdigest()
            key = f"ml:prediction:{ref.name}:{version}:{digest}"
            cached = await self._cached(ctx, key)
            if cached is not None:
                return PredictResponse(name=ref.name, version=version, result=cached, cached=True)
        # A forest's predict takes milliseconds: off the loop, so it never stalls the others;
        # a model that answers one row within INLINE_SECONDS of CPU is called here.
        if model.one_row.inline:
            found = predictions.timed_predict(model, matrix)
        else:
            found = await asyncio.to_thread(predictions.timed_predict, model, matrix)
        result = predictions.to_proto(found[0])
        self.recorder.add((ctx.tenant, ref.name, version), [row])
        if key:
            await self._cache(ctx, key, result)
        return PredictResponse(name=ref.name, version=version, result=result)

    async def _cached(self, ctx: Context, key: str) -> MlPrediction | None:
        try:
            found = await ctx.call(CacheService.Get, GetRequest(key=key))
        except Exception as exc:  # a cache that cannot be reached is a miss
            ctx.log.warning("prediction cache unavailable", error=type(exc).__name__)
            return None
        return MlPrediction.FromString(found.raw) if found.found and found.raw else None

    async def _cache(self, ctx: Context, key: str, result: MlPrediction) -> None:
        ttl = self.settings.prediction_cache_ttl_seconds
        try:
            await ctx.call(
                CacheService.Set,
                SetRequest(key=key, raw=result.SerializeToString(), ttl_seconds=ttl),
            )
        except Exception as exc:
            ctx.log.warning("prediction not cached", error=type(exc).__name__)

    async def predict_batch(self, ctx: Context, req: PredictBatchRequest) -> PredictBatchResponse:
        ref = serving(parse(req.model_id))
        if req.features_list and req.HasField("input"):
            raise BadRequest("give features_list or input, not both", details={"field": "input"})
        if req.features_list:
            check.items(req.features_list, "features_list", maximum=self.settings.max_batch_rows)
            rows = await asyncio.to_thread(_rows, req.features_list, "features_list")
            version, model = await self._model(ctx, ref)
            found = await asyncio.to_thread(_predict_rows, model, rows)
            self.recorder.add((ctx.tenant, ref.name, version), rows)
            return PredictBatchResponse(name=ref.name, version=version, predictions=found)
        if not req.HasField("input"):
            raise BadRequest(
                "features_list or input is required", details={"field": "features_list"}
            )
        if req.input.rows:
            raise BadRequest("inline rows go in features_list", details={"field": "input.rows"})
        _, obj, fmt = requests.check_data(req.input, "input", self.settings)
        job_id = check.identifier(req.job_id, "job_id") if req.job_id else ""
        if ctx.message_id is not None:
            version, model = await self._model(ctx, ref)
            return await self.batches.run(ctx, job_id or ctx.message_id, model, obj, fmt)
        return await self._queue_batch(ctx, req, ref, obj, job_id or str(uuid.uuid4()))

    async def _queue_batch(
        self, ctx: Context, req: PredictBatchRequest, ref: ModelRef, obj: str, job_id: str
    ) -> PredictBatchResponse:
        found = await self.store.serving(ctx.tenant, ref)
        if found is None:
            raise not_found(ref)
        await self._check_object(ctx, obj, "input.object")
        output = (
            check_object(req.output, "output") if req.output else f"ml/predictions/{job_id}.jsonl"
        )
        existing = await self.runs.job(ctx.tenant, job_id)
        if existing is not None and existing.status != "queued":
            return PredictBatchResponse(
                name=existing.name, version=existing.version, job_id=job_id, status=existing.status
            )
        job = PredictBatchRequest()
        job.CopyFrom(req)
        job.model_id, job.job_id, job.output = f"{ref.name}/{found.version}", job_id, output
        # The row first: a job delivered at once must find it (else it would be acked as unknown
        # and the row left `queued`). A failed enqueue leaves a queued row that a retry with the
        # same job_id enqueues again (deduplicated by the message id).
        row, _ = await self.runs.queue_job(ctx.tenant, job_id, ref.name, found.version, obj, output)
        await ctx.enqueue(MlRpc.PredictBatch, job, msg_id=f"ml-batch:{ctx.tenant}:{job_id}")
        return PredictBatchResponse(
            name=ref.name, version=row.version, job_id=job_id, status=row.status
        )

    async def get_prediction_job(
        self, ctx: Context, req: GetPredictionJobRequest
    ) -> MlPredictionJob:
        job_id = check.identifier(req.job_id, "job_id")
        row = await self.runs.job(ctx.tenant, job_id)
        if row is None:
            raise NotFound(f"prediction job {job_id} not found", details={"field": "job_id"})
        return convert.job(row)

    # -- drift ------------------------------------------------------------------------------

    async def drift(self, ctx: Context, req: MlDriftRequest) -> MlDriftResponse:
        ref = serving(parse(req.model_id))
        psi = (
            check.number(req.psi_threshold, "psi_threshold", minimum=0)
            if req.HasField("psi_threshold")
            else 0.2
        )
        p_value = (
            check.number(req.p_value, "p_value", minimum=0, maximum=1)
            if req.HasField("p_value")
            else 0.01
        )
        check.items(req.features_list, "features_list", maximum=self.settings.max_batch_rows)
        found = await self.store.serving(ctx.tenant, ref)
        stored = await self.store.profile(ctx.tenant, ref.name, found.version) if found else None
        if found is None or stored is None:
            raise not_found(ref)
        signature, reference = Signature.from_json(stored[0]), stored[1]
        if req.features_list:
            rows = _rows(req.features_list, "features_list")
        else:
            await self.recorder.flush()
            rows = await self.runs.recent_inputs(
                ctx.tenant, ref.name, found.version, self.settings.drift_window
            )
        if not rows:
            raise Unprocessable(
                "no prediction inputs recorded for this version yet",
                details={"field": "features_list"},
            )
        matrix = _matrix(signature, rows, "features_list")
        found_drift = await asyncio.to_thread(
            drift.compare, signature, reference, matrix, psi_threshold=psi, p_value=p_value
        )
        return MlDriftResponse(
            name=ref.name,
            version=found.version,
            rows=len(rows),
            features=[
                MlFeatureDrift(
                    name=f.name,
                    type=f.kind,
                    psi=f.psi,
                    ks_statistic=f.ks_statistic,
                    ks_p_value=f.ks_p_value,
                    drifted=f.drifted,
                    missing_share=f.missing_share,
                    summary=f.summary,
                )
                for f in found_drift
            ],
            drifted=[f.name for f in found_drift if f.drifted],
        )


@asynccontextmanager
async def start(resources: Resources) -> AsyncIterator[MlHandlers]:
    settings = load_settings(MlSettings)
    if settings.train_timeout_seconds >= resources.settings.job_timeout:
        raise ConfigurationError(
            "AIFLEET_ML_TRAIN_TIMEOUT_SECONDS must be below AIFLEET_JOB_TIMEOUT"
            f" ({resources.settings.job_timeout:g}), so a training fails with its reason"
        )
    pool = await resources.postgres()
    await migrate(pool, SCHEMA, MIGRATIONS)
    handlers = MlHandlers(
        MlStore(pool),
        RunStore(pool),
        await resources.files(),
        await resources.outbox(),
        settings,
        max_attempts=resources.settings.job_max_deliver,
    )
    handlers.recorder.start()
    following = await handlers.resolutions.follow(resources.nc)
    try:
        yield handlers
    finally:
        for sub in following:
            await sub.unsubscribe()
        await handlers.recorder.stop()


component = Component(
    ml_pb2.DESCRIPTOR.services_by_name["MlService"],
    start=start,
    jobs=frozenset({"train", "predict_batch"}),
    description="scikit-learn models: training jobs, a versioned registry, predictions",
    preload=runner.warm_up,
)
