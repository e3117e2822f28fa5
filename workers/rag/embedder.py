"""Embeddings through the gateway (`gateway.embed`), batched, checked against the dimension
the data was indexed with."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

import numpy as np
import numpy.typing as npt

from schemas.errors import ServiceError
from schemas.v1.gateway_pb2 import EmbedRequest
from schemas.v1.gateway_rpc import GatewayService
from workers.runtime.context import Context

Vectors = npt.NDArray[np.float32]
Progress = Callable[[int, int], Awaitable[None]]


class EmbeddingMismatch(ServiceError):
    """The gateway's model returned vectors of another dimension than the configured one: a
    configuration error (AIFLEET_RAG_EMBEDDING_DIMENSIONS vs the model), not the caller's."""

    status, code = 503, "UNAVAILABLE"


class Embedder:
    def __init__(self, model: str, dims: int, batch: int) -> None:
        self.model = model
        self.dims = dims
        self.batch = batch

    async def embed(
        self, ctx: Context, texts: Sequence[str], *, progress: Progress | None = None
    ) -> Vectors:
        """Unit vectors of `texts`, in order (rows); `progress(done, total)` after each batch."""
        out = np.empty((len(texts), self.dims), dtype=np.float32)
        for first in range(0, len(texts), self.batch):
            part = list(texts[first : first + self.batch])
            reply = await ctx.call(GatewayService.Embed, EmbedRequest(model=self.model, texts=part))
            if len(reply.embeddings) != len(part):
                raise EmbeddingMismatch(
                    "the embedding model returned another number of vectors than texts sent",
                    retryable=False,
                )
            for i, embedding in enumerate(reply.embeddings):
                if len(embedding.values) != self.dims:
                    raise EmbeddingMismatch(
                        f"the embedding model {self.model} returned {len(embedding.values)}"
                        f" dimensions; the RAG index is configured for {self.dims}"
                        " (AIFLEET_RAG_EMBEDDING_DIMENSIONS)",
                        details={"returned": len(embedding.values), "configured": self.dims},
                        retryable=False,
                    )
                out[first + i] = embedding.values
            if progress is not None:
                await progress(min(first + self.batch, len(texts)), len(texts))
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        unit: Vectors = (out / np.where(norms == 0, 1.0, norms)).astype(np.float32)
        return unit
