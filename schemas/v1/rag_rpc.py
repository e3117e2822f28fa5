"""Typed rpc handles of schemas/v1/rag.proto, written by `make proto`: do not edit."""

from __future__ import annotations

from typing import Final

from schemas.contracts import Streaming, Unary
from schemas.v1 import rag_pb2


class RagService:
    """The `rag` component (aifleet.v1.RagService)."""

    CreateDocument: Final = Unary(
        "rag",
        "create_document",
        rag_pb2.CreateDocumentRequest,
        rag_pb2.CreateDocumentResponse,
    )
    GetDocument: Final = Unary(
        "rag",
        "get_document",
        rag_pb2.GetDocumentRequest,
        rag_pb2.GetDocumentResponse,
    )
    UpdateDocument: Final = Unary(
        "rag",
        "update_document",
        rag_pb2.UpdateDocumentRequest,
        rag_pb2.UpdateDocumentResponse,
    )
    DeleteDocument: Final = Unary(
        "rag",
        "delete_document",
        rag_pb2.DeleteDocumentRequest,
        rag_pb2.DeleteDocumentResponse,
    )
    ListDocuments: Final = Unary(
        "rag",
        "list_documents",
        rag_pb2.ListDocumentsRequest,
        rag_pb2.ListDocumentsResponse,
    )
    Search: Final = Unary(
        "rag",
        "search",
        rag_pb2.SearchRequest,
        rag_pb2.SearchResponse,
    )
    Query: Final = Unary(
        "rag",
        "query",
        rag_pb2.QueryRequest,
        rag_pb2.QueryResponse,
    )
    QueryStream: Final = Streaming(
        "rag",
        "query_stream",
        rag_pb2.QueryRequest,
        rag_pb2.QueryChunk,
    )
    Reembed: Final = Unary(
        "rag",
        "reembed",
        rag_pb2.ReembedRequest,
        rag_pb2.ReembedResponse,
    )
