"""`aifleet ingest FILE...`: upload files over NATS (the chunked upload of the ingestion
component) and, with `--follow`, show each file's processing until it is searchable.

One progress bar per file: the upload (bytes sent), then the processing run (`progress` of
`ingestion.get_file`: pages parsed, then RAG embedding), ending in `ingested` or `failed` with
the reason. Only the tenant's own subjects are used, so a tenant's NATS credentials suffice.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from aifleet.connection import connect
from schemas.errors import ServiceError
from schemas.v1.ingestion_pb2 import (
    File,
    GetFileRequest,
    StartUploadRequest,
    UploadPartRequest,
    UploadRequest,
)
from schemas.v1.ingestion_rpc import IngestionService as Ingestion
from subjects import is_valid_tenant
from workers.runtime.client import Client
from workers.runtime.config import Settings

err = Console(stderr=True)
POLL = 0.3


@dataclass
class Tracked:
    path: Path
    task: TaskID
    file: File | None = None
    error: str = ""


async def upload_file(
    client: Client, tenant: str, path: Path, auto_ingest: bool, progress: Progress, task: TaskID
) -> File:
    """Send one file in parts and register it; the bar advances per part."""
    size = path.stat().st_size
    session = await client.call_rpc(
        tenant, Ingestion.StartUpload, StartUploadRequest(file_name=path.name, size_bytes=size)
    )
    progress.update(task, total=max(size, 1), description=f"{path.name} uploading")
    with path.open("rb") as source:
        index = 0
        while data := await asyncio.to_thread(source.read, session.part_bytes):
            await client.call_rpc(
                tenant,
                Ingestion.UploadPart,
                UploadPartRequest(upload_id=session.upload_id, index=index, data=data),
            )
            index += 1
            progress.advance(task, len(data))
    reply = await client.call_rpc(
        tenant,
        Ingestion.Upload,
        UploadRequest(upload_id=session.upload_id, auto_ingest=auto_ingest),
    )
    return reply.file


async def follow_file(
    client: Client, tenant: str, tracked: Tracked, progress: Progress, deadline: float
) -> None:
    """Poll the file until its run ends (or the deadline), moving its bar."""
    assert tracked.file is not None
    progress.update(tracked.task, total=1.0, completed=0)
    while True:
        found = (
            await client.call_rpc(
                tenant, Ingestion.GetFile, GetFileRequest(file_id=tracked.file.file_id)
            )
        ).file
        tracked.file = found
        pages = f" {found.pages_done}/{found.pages_total} pages" if found.pages_total else ""
        progress.update(
            tracked.task,
            completed=found.progress,
            description=f"{tracked.path.name} {found.status}{pages}",
        )
        if found.status in ("ingested", "failed", "uploaded"):
            return
        if time.monotonic() > deadline:
            tracked.error = "still processing when --timeout ran out"
            return
        await asyncio.sleep(POLL)


async def ingest_files(
    settings: Settings,
    paths: list[Path],
    tenant: str,
    *,
    follow: bool,
    auto_ingest: bool,
    timeout: float,
) -> int:
    """Upload every file (and follow them); 0 when all went through, 1 if any did not."""
    if not is_valid_tenant(tenant):
        err.print(f"[red]invalid tenant token {tenant!r}[/red]")
        return 2
    missing = [p for p in paths if not p.is_file()]
    if missing:
        err.print(f"[red]not a file:[/red] {', '.join(str(p) for p in missing)}")
        return 2
    nc = await connect(settings)
    client = Client(nc, timeout=30.0)
    deadline = time.monotonic() + timeout
    columns = (TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn())
    try:
        with Progress(*columns, console=err, transient=False) as progress:
            tracked = [Tracked(p, progress.add_task(p.name, total=None)) for p in paths]
            for item in tracked:
                try:
                    item.file = await upload_file(
                        client, tenant, item.path, auto_ingest, progress, item.task
                    )
                    progress.update(item.task, description=f"{item.path.name} {item.file.status}")
                except ServiceError as exc:
                    item.error = f"{exc.status} {exc.code}: {exc.message}"
                    progress.update(item.task, description=f"{item.path.name} refused")
            if follow:
                await asyncio.gather(
                    *(
                        follow_file(client, tenant, item, progress, deadline)
                        for item in tracked
                        if item.file is not None
                    )
                )
    finally:
        await nc.close()
    return _report(tracked, follow)


def _report(tracked: list[Tracked], follow: bool) -> int:
    table = Table("file", "file_id", "type", "status", "pages", "characters", "document / reason")
    ok = True
    for item in tracked:
        found = item.file
        if found is None:
            table.add_row(str(item.path), "", "", "refused", "", "", item.error)
            ok = False
            continue
        reason = item.error or (
            f"{found.failure.code}: {found.failure.message}" if found.status == "failed" else ""
        )
        ok = ok and found.status != "failed" and not item.error
        if follow and found.status == "processing":
            ok = False
        table.add_row(
            str(item.path),
            found.file_id,
            found.detected_type,
            found.status,
            str(found.pages_total or ""),
            str(found.characters or ""),
            reason or found.document_id,
        )
    Console().print(table)
    return 0 if ok else 1
