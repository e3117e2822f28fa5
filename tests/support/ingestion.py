"""Test helpers for the ingestion component: direct reads of its schema."""

from __future__ import annotations

from pathlib import Path

from tests.support.database import ComponentDb
from workers.ingestion.store import SCHEMA

MIGRATIONS = Path(__file__).resolve().parents[2] / "workers" / "ingestion" / "migrations"


class IngestionDb(ComponentDb):
    """Direct reads of the ingestion schema, as a test checks what the worker wrote."""

    schema = SCHEMA
    migrations = MIGRATIONS
    tables = ("files", "uploads", "upload_parts")
