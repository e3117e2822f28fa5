"""Data ingestion: uploaded files of common document types parsed into RAG documents."""
