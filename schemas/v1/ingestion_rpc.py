"""Typed rpc handles of schemas/v1/ingestion.proto, written by `make proto`: do not edit."""

from __future__ import annotations

from typing import Final

from schemas.contracts import Unary
from schemas.v1 import ingestion_pb2


class IngestionService:
    """The `ingestion` component (aifleet.v1.IngestionService)."""

    Upload: Final = Unary(
        "ingestion",
        "upload",
        ingestion_pb2.UploadRequest,
        ingestion_pb2.UploadResponse,
    )
    GetFile: Final = Unary(
        "ingestion",
        "get_file",
        ingestion_pb2.GetFileRequest,
        ingestion_pb2.GetFileResponse,
    )
    ListFiles: Final = Unary(
        "ingestion",
        "list_files",
        ingestion_pb2.ListFilesRequest,
        ingestion_pb2.ListFilesResponse,
    )
    DeleteFile: Final = Unary(
        "ingestion",
        "delete_file",
        ingestion_pb2.DeleteFileRequest,
        ingestion_pb2.DeleteFileResponse,
    )
    ProcessFile: Final = Unary(
        "ingestion",
        "process_file",
        ingestion_pb2.ProcessFileRequest,
        ingestion_pb2.ProcessFileResponse,
    )
    StartUpload: Final = Unary(
        "ingestion",
        "start_upload",
        ingestion_pb2.StartUploadRequest,
        ingestion_pb2.StartUploadResponse,
    )
    UploadPart: Final = Unary(
        "ingestion",
        "upload_part",
        ingestion_pb2.UploadPartRequest,
        ingestion_pb2.UploadPartResponse,
    )
