"""`aifleet ml watch TRAINING_ID`: a training's progress as a bar on stderr, its outcome as
JSON on stdout (exit 0 completed, 1 failed, 4 not found)."""

from __future__ import annotations

import asyncio
import json

from google.protobuf import json_format
from nats.aio.client import Client as NATS
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from schemas.errors import NotFound
from schemas.v1.ml_pb2 import GetTrainingRequest, MlTraining
from schemas.v1.ml_rpc import MlService
from workers.runtime.client import Client

POLL_SECONDS = 0.5


async def watch_training(nc: NATS, tenant: str, training_id: str) -> int:
    client = Client(nc)
    err = Console(stderr=True)
    found: MlTraining
    try:
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.percentage:>3.0f}%"),
            TimeElapsedColumn(),
            console=err,
            transient=True,
        ) as bar:
            task = bar.add_task(training_id, total=1.0)
            while True:
                found = await client.call_rpc(
                    tenant, MlService.GetTraining, GetTrainingRequest(training_id=training_id)
                )
                bar.update(
                    task, completed=found.progress, description=f"{training_id} {found.stage}"
                )
                if found.status in ("completed", "failed"):
                    break
                await asyncio.sleep(POLL_SECONDS)
    except NotFound as exc:
        err.print(f"[red]{exc.message}[/red]")
        return 4
    finally:
        await nc.close()
    print(json.dumps(json_format.MessageToDict(found, preserving_proto_field_name=True)))
    return 0 if found.status == "completed" else 1
