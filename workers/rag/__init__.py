"""RAG: documents in, grounded answers with citations out (see README.md)."""
