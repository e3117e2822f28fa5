"""Between the contract and the store: File messages from rows, options checked both ways."""

from __future__ import annotations

import uuid
from typing import Any

from google.protobuf import json_format

from schemas.errors import BadRequest
from schemas.v1.common_pb2 import Error
from schemas.v1.ingestion_pb2 import File, ProcessingOptions
from workers.ingestion.parsers import ParseOptions
from workers.ingestion.store import FileRecord
from workers.runtime import validation as check

HTML_MODES = ("main", "full")
# RAG's bounds (rag.proto CreateDocumentRequest): checked here too, so a bad option is refused
# at upload, not after the file was parsed.
CHUNK_SIZE = (50, 2000)


def check_file_id(value: str, field: str = "file_id") -> str:
    """A file id is a UUID; anything else is a 400 (not a 404: it can never exist)."""
    if not value:
        raise BadRequest(f"{field} is required", details={"field": field})
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise BadRequest(f"{field} is not a file id (a UUID)", details={"field": field}) from None


def check_options(
    options: ProcessingOptions, *, max_pages: int, field: str = "options"
) -> dict[str, Any]:
    """The options as stored (only what was set), or 400 naming the bad field."""
    out: dict[str, Any] = {}
    if options.chunk_size:
        out["chunk_size"] = check.integer(
            options.chunk_size, f"{field}.chunk_size", minimum=CHUNK_SIZE[0], maximum=CHUNK_SIZE[1]
        )
    if options.chunk_overlap:
        size = options.chunk_size or 1000
        out["chunk_overlap"] = check.integer(
            options.chunk_overlap, f"{field}.chunk_overlap", minimum=0, maximum=size // 2
        )
    if options.max_pages:
        out["max_pages"] = check.integer(
            options.max_pages, f"{field}.max_pages", minimum=1, maximum=max_pages
        )
    if options.html_mode:
        out["html_mode"] = check.choice(options.html_mode, f"{field}.html_mode", HTML_MODES)
    if options.csv_delimiter:
        delimiter = options.csv_delimiter
        if len(delimiter) != 1 or delimiter in '\r\n"' or ord(delimiter) < 0x09:
            raise BadRequest(
                f"{field}.csv_delimiter must be one character other than a quote or line break",
                details={"field": f"{field}.csv_delimiter"},
            )
        out["csv_delimiter"] = delimiter
    return out


def parse_options(stored: dict[str, Any]) -> ParseOptions:
    return ParseOptions(
        max_pages=int(stored.get("max_pages", 0)),
        html_mode=str(stored.get("html_mode", "main")),
        csv_delimiter=str(stored.get("csv_delimiter", "")),
    )


def failure_message(failure: dict[str, Any] | None) -> Error | None:
    if not failure:
        return None
    error = Error(
        code=str(failure.get("code", "")),
        message=str(failure.get("message", "")),
        retryable=bool(failure.get("retryable", False)),
    )
    if failure.get("details"):
        json_format.ParseDict(failure["details"], error.details)
    return error


def file_message(record: FileRecord) -> File:
    return File(
        file_id=record.file_id,
        file_name=record.file_name,
        title=record.title,
        detected_type=record.detected_type,
        declared_content_type=record.declared_content_type,
        size_bytes=record.size_bytes,
        sha256=record.sha256,
        status=record.status,
        progress=record.progress,
        pages_done=record.pages_done,
        pages_total=record.pages_total,
        characters=record.characters,
        sections=record.sections,
        document_id=record.document_id,
        failure=failure_message(record.failure),
        metadata=check.to_struct(record.metadata),
        auto_ingest=record.auto_ingest,
        options=ProcessingOptions(**record.options),
        created_at=check.to_timestamp(record.created_at),
        updated_at=check.to_timestamp(record.updated_at),
        processed_at=check.to_timestamp(record.processed_at),
        run_id=record.run_id,
    )
