"""A training job (`job.ml.train`): data → child process → artifact in the Object Store →
the next version in the registry, exactly once per training.

Each delivery marks the training running (counting attempts); one that finds it finished does
nothing, so a redelivered job changes nothing twice. The artifact is named after the training
(`ml/models/<name>/<training_id>.skops`), so a redone training replaces its own object instead
of leaving one behind, and `versions` is unique per training, so it registers once. A failure
of the data or the model is final (`failed`, with the reason, acked); a dependency down is
retried by the runtime, and marked failed on the last attempt.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from schemas.errors import NotFound, PayloadTooLarge, ServiceError
from schemas.v1.ml_pb2 import MlTrainingFinishedEvent, MlTrainingProgressEvent, TrainResponse
from subjects.events import ML_TRAINING_COMPLETED, ML_TRAINING_FAILED, ML_TRAINING_PROGRESS
from workers.ml.models import scratch_dir
from workers.ml.requests import TrainSpec, limits, rows_sha256
from workers.ml.runner import TrainingFailed, run_training
from workers.ml.runs import RunStore
from workers.ml.settings import MlSettings
from workers.ml.store import MlStore, NewVersion
from workers.runtime.context import Context
from workers.runtime.failures import as_service_error
from workers.runtime.files import FileStore
from workers.runtime.outbox import Outbox

ARTIFACT_TYPE = "application/vnd.skops+zip"


def artifact_name(name: str, training_id: str) -> str:
    return f"ml/models/{name}/{training_id.replace('/', '_')}.skops"


class TrainingJob:
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
        self.max_attempts = max_attempts
        self._slots = asyncio.Semaphore(settings.max_concurrent_trainings)

    async def run(self, ctx: Context, spec: TrainSpec, training_id: str) -> TrainResponse:
        row = await self.runs.begin_training(
            ctx.tenant, training_id, spec.name, spec.kind.name, ctx.user_id or ""
        )
        if row.status in ("completed", "failed"):
            return TrainResponse(training_id=training_id, model_id=spec.name, status=row.status)
        try:
            async with self._slots:
                return await self._train(ctx, spec, training_id)
        except TrainingFailed as exc:
            await self._failed(ctx, spec, training_id, exc.message)
            return TrainResponse(training_id=training_id, model_id=spec.name, status="failed")
        except Exception as exc:
            error, _ = as_service_error(exc, deadline_passed=False)
            if not error.retryable or ctx.attempt >= self.max_attempts:
                reason = error.message if isinstance(exc, ServiceError) else "internal error"
                try:
                    await self._failed(ctx, spec, training_id, reason)
                except Exception as also:  # the dependency that failed it is still down
                    ctx.log.warning("training failure not recorded", error=type(also).__name__)
            raise

    async def _train(self, ctx: Context, spec: TrainSpec, training_id: str) -> TrainResponse:
        with scratch_dir() as scratch:
            workdir = Path(scratch)
            source: dict[str, Any]
            if spec.rows is not None:
                source, data_sha256 = {"rows": spec.rows}, rows_sha256(spec.rows)
            else:
                source, data_sha256 = await self._download(ctx, spec, workdir)
            artifact = workdir / "model.skops"
            job_spec = {
                "data": source,
                "model_type": spec.kind.name,
                "params": spec.params,
                "target": spec.target,
                "features": spec.features,
                "validation_split": spec.validation_split,
                "random_state": spec.random_state,
                "max_categories": self.settings.max_categories,
                "limits": limits(self.settings).__dict__,
                "artifact": str(artifact),
                "memory_bytes": self.settings.train_memory_bytes,
                "threads": self.settings.train_threads,
            }

            async def progress(stage: str, share: float) -> None:
                await self._progress(ctx, spec, training_id, stage, share)

            result = await run_training(
                job_spec, timeout=self.settings.train_timeout_seconds, on_progress=progress
            )
            await self._progress(ctx, spec, training_id, "registering", 0.95)
            stored = artifact_name(spec.name, training_id)
            with artifact.open("rb") as f:
                await self.files.put(
                    ctx.tenant,
                    stored,
                    f,
                    max_bytes=self.settings.max_artifact_bytes,
                    content_type=ARTIFACT_TYPE,
                    metadata={"model": spec.name, "training_id": training_id},
                )
        new = NewVersion(
            model_type=spec.kind.name,
            params=result["params"],
            metrics=result["metrics"],
            signature=result["signature"],
            profile=result["profile"],
            data_sha256=data_sha256,
            data_object=spec.object,
            training_rows=result["training_rows"],
            artifact_object=stored,
            artifact_sha256=result["artifact_sha256"],
            artifact_bytes=result["artifact_bytes"],
            training_id=training_id,
            trained_by=ctx.user_id or "",
        )
        async with self.store.pool.acquire() as conn, conn.transaction():
            version, _ = await self.store.register(conn, ctx.tenant, spec.name, new)
            await self.runs.finish_training(
                conn,
                ctx.tenant,
                training_id,
                status="completed",
                metrics=result["metrics"],
                version=version,
            )
            event = MlTrainingFinishedEvent(
                training_id=training_id,
                model_id=spec.name,
                status="completed",
                version=version,
                metrics=result["metrics"],
            )
            staged = await self.outbox.stage(
                conn,
                ctx,
                ML_TRAINING_COMPLETED,
                event,
                msg_id=f"ml-trained:{ctx.tenant}:{training_id}",
            )
        await self.outbox.publish(staged)
        return TrainResponse(training_id=training_id, model_id=spec.name, status="completed")

    async def _download(
        self, ctx: Context, spec: TrainSpec, workdir: Path
    ) -> tuple[dict[str, Any], str]:
        info = await self.files.info(ctx.tenant, spec.object)
        if info is None:
            raise TrainingFailed(f"the object {spec.object!r} does not exist", "object")
        if info.size > self.settings.max_file_bytes:
            raise TrainingFailed(
                f"the object is larger than {self.settings.max_file_bytes} bytes", "object"
            )
        path = workdir / f"data.{spec.format}"
        try:
            with path.open("wb") as f:
                stored = await self.files.get(ctx.tenant, spec.object, into=f)
        except NotFound:
            raise TrainingFailed(f"the object {spec.object!r} does not exist", "object") from None
        except PayloadTooLarge as exc:
            raise TrainingFailed(exc.message, "object") from None
        return {"path": str(path), "format": spec.format}, stored.sha256

    async def _progress(
        self, ctx: Context, spec: TrainSpec, training_id: str, stage: str, share: float
    ) -> None:
        await self.runs.training_progress(ctx.tenant, training_id, stage, share)
        event = MlTrainingProgressEvent(
            training_id=training_id, model_id=spec.name, stage=stage, progress=share
        )
        msg_id = f"ml-progress:{ctx.tenant}:{training_id}:{ctx.attempt}:{stage}"
        try:
            await ctx.emit(ML_TRAINING_PROGRESS, event, msg_id=msg_id)
        except Exception as exc:  # progress is advisory: the status op has it anyway
            ctx.log.warning("progress event not published", error=type(exc).__name__)

    async def _failed(self, ctx: Context, spec: TrainSpec, training_id: str, reason: str) -> None:
        async with self.store.pool.acquire() as conn, conn.transaction():
            if not await self.runs.finish_training(
                conn, ctx.tenant, training_id, status="failed", error=reason
            ):
                return  # another delivery completed it: that stands
            event = MlTrainingFinishedEvent(
                training_id=training_id, model_id=spec.name, status="failed", error=reason
            )
            staged = await self.outbox.stage(
                conn, ctx, ML_TRAINING_FAILED, event, msg_id=f"ml-failed:{ctx.tenant}:{training_id}"
            )
        await self.outbox.publish(staged)
        ctx.log.info("training failed", training_id=training_id, reason=reason)
