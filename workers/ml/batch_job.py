"""A file batch prediction (`job.ml.predict_batch`): the input file's rows through one model
version, the predictions written as a JSON-lines file, one line per input row.

The version is resolved when the batch is queued and stored with the job, so a batch started
before an alias moved finishes on the version it started with. The output object is named by
the job, so a redelivered job rewrites the same file; a finished job is not run again.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from schemas.errors import ServiceError
from schemas.v1.ml_pb2 import PredictBatchResponse
from workers.ml import data, predictions
from workers.ml.models import LoadedModel, scratch_dir
from workers.ml.requests import limits
from workers.ml.runs import RunStore
from workers.ml.settings import MlSettings
from workers.ml.signature import FeatureError
from workers.runtime.context import Context
from workers.runtime.files import FileStore

JSONL = "application/x-ndjson"


class BatchFailed(Exception):
    pass


class BatchJob:
    def __init__(self, runs: RunStore, files: FileStore, settings: MlSettings) -> None:
        self.runs = runs
        self.files = files
        self.settings = settings

    async def run(
        self, ctx: Context, job_id: str, model: LoadedModel, input_name: str, fmt: str
    ) -> PredictBatchResponse:
        job = await self.runs.job(ctx.tenant, job_id)
        if job is None or job.status in ("completed", "failed"):
            status = job.status if job else "failed"
            return PredictBatchResponse(job_id=job_id, status=status)
        await self.runs.update_job(ctx.tenant, job_id, status="running", progress=0.0)
        try:
            rows = await self._predict(ctx, job_id, model, input_name, fmt, job.output)
        except BatchFailed as exc:
            await self.runs.update_job(
                ctx.tenant, job_id, status="failed", progress=0.0, error=str(exc)
            )
            return PredictBatchResponse(
                name=job.name, version=job.version, job_id=job_id, status="failed"
            )
        await self.runs.update_job(ctx.tenant, job_id, status="completed", progress=1.0, rows=rows)
        return PredictBatchResponse(
            name=job.name, version=job.version, job_id=job_id, status="completed"
        )

    async def _predict(
        self,
        ctx: Context,
        job_id: str,
        model: LoadedModel,
        input_name: str,
        fmt: str,
        output: str,
    ) -> int:
        info = await self.files.info(ctx.tenant, input_name)
        if info is None:
            raise BatchFailed(f"the object {input_name!r} does not exist")
        if info.size > self.settings.max_file_bytes:
            raise BatchFailed(f"the object is larger than {self.settings.max_file_bytes} bytes")
        with scratch_dir() as scratch:
            source = Path(scratch) / f"input.{fmt}"
            with source.open("wb") as f:
                await self.files.get(ctx.tenant, input_name, into=f)
            bounds = limits(self.settings, self.settings.max_file_batch_rows)
            try:
                table = await asyncio.to_thread(data.from_file, source, fmt, bounds, "input")
                matrix = model.signature.table_matrix(table, "input")
            except (data.DataError, FeatureError) as exc:
                raise BatchFailed(f"{exc.field}: {exc}") from None
            target = Path(scratch) / "predictions.jsonl"
            with target.open("wb") as out:
                done = 0
                for chunk in predictions.chunks(matrix):
                    results = await asyncio.to_thread(predictions.predict, model, chunk)
                    predictions.write_jsonl(results, out)
                    done += len(chunk)
                    await self.runs.update_job(
                        ctx.tenant, job_id, status="running", progress=done / len(matrix)
                    )
            with target.open("rb") as f:
                try:
                    await self.files.put(ctx.tenant, output, f, max_bytes=2**40, content_type=JSONL)
                except ServiceError as exc:
                    if exc.retryable:
                        raise
                    raise BatchFailed(exc.message) from None
        return len(matrix)
