"""The ingestion component's settings: `AIFLEET_INGESTION_*` (workers/ingestion/README.md)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from workers.ingestion.limits import ParseLimits
from workers.ingestion.sandbox import SandboxLimits

MiB = 1024 * 1024


class IngestionSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="AIFLEET_INGESTION_", extra="ignore", frozen=True)

    max_file_bytes: int = Field(100 * MiB, ge=1, description="largest file accepted (413)")
    part_bytes: int = Field(MiB, ge=1024, le=4 * MiB, description="largest upload_part data")
    upload_ttl_seconds: float = Field(86_400.0, gt=0, description="life of an upload session")
    sweep_interval_seconds: float = Field(300.0, gt=0, description="expired sessions removed")
    orphan_grace_seconds: float = Field(
        3600.0, gt=0, description="unclaimed upload objects removed after this"
    )
    max_metadata_bytes: int = Field(8 * 1024, ge=0, description="a file's metadata, as JSON")

    parse_timeout_seconds: float = Field(120.0, gt=0, description="one file's parse, then killed")
    parse_memory_bytes: int = Field(2048 * MiB, ge=256 * MiB, description="a parser's memory cap")
    parallel_parses: int = Field(2, ge=1, le=64, description="parser processes per worker")
    max_pages: int = Field(5000, ge=1, description="pages (sheets) parsed per file")
    max_declared_pages: int = Field(100_000, ge=1, description="PDFs declaring more: refused")
    max_unzipped_bytes: int = Field(512 * MiB, ge=MiB, description="DOCX/XLSX inflated size")
    max_zip_ratio: float = Field(200.0, ge=10, description="compression ratio of an entry")
    max_characters: int = Field(50_000_000, ge=1000, description="text of one file")
    max_rows: int = Field(1_000_000, ge=1, description="rows of a CSV file or XLSX sheet")

    progress_interval_seconds: float = Field(
        0.5, gt=0, le=60, description="a run's progress row and event, at most this often"
    )
    rag_wait_seconds: float = Field(
        150.0, gt=0, description="how long a run waits for RAG to finish a large document"
    )

    def parse_limits(self) -> ParseLimits:
        return ParseLimits(
            max_pages=self.max_pages,
            max_declared_pages=self.max_declared_pages,
            max_unzipped_bytes=self.max_unzipped_bytes,
            max_zip_ratio=self.max_zip_ratio,
            max_characters=self.max_characters,
            max_rows=self.max_rows,
        )

    def sandbox_limits(self) -> SandboxLimits:
        return SandboxLimits(
            timeout=self.parse_timeout_seconds,
            memory_bytes=self.parse_memory_bytes,
            parallel=self.parallel_parses,
            progress_interval=min(self.progress_interval_seconds, 0.2),
        )
