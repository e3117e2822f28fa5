"""The RAG component's settings: `AIFLEET_RAG_*` (documented in workers/rag/README.md)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from workers.rag.search_sql import KEYWORD_CANDIDATES, MAX_DIMS

# The MiniLM WordPiece tokenizer the gateway's offline embedding model uses; read as a data
# file (no gateway code is imported). Another model's tokenizer.json can be configured.
DEFAULT_TOKENIZER = (
    Path(__file__).resolve().parent.parent / "gateway" / "models" / "all-minilm-l6-v2"
) / "tokenizer.json"


class RagSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="AIFLEET_RAG_", extra="ignore", frozen=True)

    # Embeddings: the gateway alias, the dimension it returns, what one chunk may hold.
    embedding_model: str = Field("all-minilm-l6-v2", min_length=1, max_length=256)
    embedding_dimensions: int = Field(384, ge=1, le=MAX_DIMS)
    tokenizer: Path = DEFAULT_TOKENIZER
    chunk_max_tokens: int = Field(256, ge=16, le=32768, description="special tokens included")
    embed_batch: int = Field(64, ge=1, le=2048, description="texts per gateway.embed call")
    # Ingest limits and the size above which create_document runs as a job.
    max_document_bytes: int = Field(4 * 1024 * 1024, ge=1)
    max_metadata_bytes: int = Field(16 * 1024, ge=2)
    job_threshold_bytes: int = Field(64 * 1024, ge=0, description="0: every create is a job")
    # Retrieval.
    text_search_config: str = Field("english", pattern=r"^[a-z_]{1,63}$")
    candidates: int = Field(50, ge=1, le=1000, description="rows per leg before fusion")
    keyword_candidates: int = Field(
        KEYWORD_CANDIDATES, ge=1, le=1_000_000, description="chunks the keyword leg scores at most"
    )
    rrf_k: int = Field(60, ge=0, le=10_000)
    keyword_weight: float = Field(0.5, ge=0.0, le=10.0, description="RRF weight of the keyword leg")
    hnsw_ef_search: int = Field(400, ge=1, le=1000)
    mmr_lambda: float = Field(0.7, ge=0.0, le=1.0)
    # Results cache (through the cache component); 0 turns it off.
    cache_ttl_seconds: float = Field(300.0, ge=0)
    # Answers.
    answer_mode: str = Field("auto", pattern=r"^(auto|generative|extractive)$")
    relevance_floor: float = Field(
        0.2, ge=-1.0, le=1.0, description="below this similarity nothing counts as relevant"
    )
    grounded_threshold: float = Field(0.6, ge=-1.0, le=1.0)
    extractive_sentences: int = Field(3, ge=1, le=20)
    default_max_tokens: int = Field(512, ge=1, le=100_000)

    @field_validator("tokenizer")
    @classmethod
    def _tokenizer_exists(cls, value: Path) -> Path:
        if not value.is_file():
            raise ValueError(f"no tokenizer.json at {value}")
        return value
