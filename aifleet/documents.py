"""`aifleet rag ingest`: put a text or Markdown file into RAG and watch it being ingested."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from google.protobuf import json_format
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from aifleet.connection import connect
from schemas.errors import ServiceError
from schemas.v1.rag_pb2 import CreateDocumentRequest, GetDocumentRequest
from schemas.v1.rag_rpc import RagService
from workers.runtime.client import Client
from workers.runtime.config import Settings

err = Console(stderr=True)


async def ingest_file(
    settings: Settings, path: Path, tenant: str, document_id: str, title: str, source: str
) -> int:
    """Create the document; while a job ingests it, show its chunks embedded. Exit status:
    0 ready, 1 failed or refused."""
    try:
        content = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        err.print(f"[red]cannot read {path}:[/red] {exc}")
        return 2
    nc = await connect(settings)
    client = Client(nc, timeout=120.0)
    request = CreateDocumentRequest(
        document_id=document_id,
        title=title or path.name,
        content=content,
        source=source or str(path),
    )
    try:
        reply = await client.call_rpc(tenant, RagService.CreateDocument, request)
        doc = reply.document
        if doc.status == "processing":
            with Progress(
                TextColumn(f"ingesting {doc.document_id}"), BarColumn(), MofNCompleteColumn(),
                console=err,
            ) as progress:  # fmt: skip
                task = progress.add_task("chunks", total=None)
                while doc.status == "processing":
                    await asyncio.sleep(0.5)
                    got = await client.call_rpc(
                        tenant,
                        RagService.GetDocument,
                        GetDocumentRequest(document_id=doc.document_id),
                    )
                    doc = got.document
                    progress.update(
                        task, completed=doc.chunks_embedded, total=doc.chunks_total or None
                    )
    except ServiceError as exc:
        err.print(f"[red]error {exc.status}[/red] {exc.message}")
        return 1
    finally:
        await nc.close()
    print(json.dumps(json_format.MessageToDict(doc, preserving_proto_field_name=True), indent=2))
    if doc.status == "failed":
        err.print(f"[red]failed:[/red] {doc.error}")
        return 1
    return 0
