"""Answers with a real (non-offline) model, without servers: the kit's handler test kit scripts
the gateway, a stored retrieval stands in for PostgreSQL. Checks what offline runs cannot: the
generative mode chosen from list_models, an applied rewrite, markers out of range."""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from schemas.v1.common_pb2 import ChatMessage
from schemas.v1.gateway_pb2 import (
    Deployment,
    Embedding,
    EmbedRequest,
    EmbedResponse,
    GenerateRequest,
    GenerateResponse,
    ListModelsResponse,
    ModelInfo,
)
from schemas.v1.gateway_rpc import GatewayService
from schemas.v1.rag_pb2 import QueryRequest, SearchResult
from workers.rag.answering import Answerer
from workers.rag.embedder import Embedder
from workers.rag.results_cache import ResultsCache
from workers.rag.retrieval import Plan, Retrieved
from workers.rag.settings import RagSettings
from workers.runtime import testing

DIMS = 8
CHUNKS = [
    "Paris is the capital of France. It lies on the Seine.",
    "Lyon is known for its food. It lies on the Rhone.",
]


def vector(text: str) -> list[float]:
    """Texts sharing their first word are close; others are not."""
    word = text.split()[0].strip("[]").lower() if text.split() else ""
    seed = int.from_bytes(hashlib.sha256(word.encode()).digest()[:4], "big")
    v = np.random.default_rng(seed).standard_normal(DIMS)
    return [float(x) for x in v / np.linalg.norm(v)]


def embed(req: EmbedRequest) -> EmbedResponse:
    return EmbedResponse(embeddings=[Embedding(values=vector(t)) for t in req.texts])


class StoredRetrieval:
    """Retrieval as PostgreSQL would return it for these two chunks."""

    def __init__(self, settings: RagSettings) -> None:
        self.settings = settings
        self.embedder = Embedder("emb", DIMS, 64)
        self.cache = ResultsCache(0)
        self.pool = None
        self.plans: list[Plan] = []

    async def retrieve(self, ctx: Any, plan: Plan, *, embeddings: bool = False) -> Retrieved:
        self.plans.append(plan)
        results = [
            SearchResult(document_id=f"d{i}", title=f"t{i}", chunk_index=0, text=t, similarity=0.8)
            for i, t in enumerate(CHUNKS)
        ]
        return Retrieved(
            results=results,
            embeddings=[np.asarray(vector(t), dtype=np.float32) for t in CHUNKS],
            query_vector=np.asarray(vector(plan.text), dtype=np.float32),
            corpus_version=1,
            cached=False,
            mode="hybrid",
        )


def models(provider_model: str) -> ListModelsResponse:
    return ListModelsResponse(
        models=[
            ModelInfo(
                name="chat",
                mode="chat",
                default=True,
                deployments=[Deployment(provider="openai", model=provider_model)],
            )
        ]
    )


def generated(text: str) -> GenerateResponse:
    return GenerateResponse(
        message=ChatMessage(role="assistant", content=text), provider_model="openai/gpt-4o-mini"
    )


async def test_a_real_model_answers_generatively_and_its_markers_are_resolved() -> None:
    """list_models names a provider model: generative; [1] and [2] map to the chunks, [9]
    points at nothing and is reported; a sentence citing the wrong chunk is not grounded."""
    settings = RagSettings(embedding_dimensions=DIMS, grounded_threshold=0.9)
    answerer = Answerer(StoredRetrieval(settings))  # type: ignore[arg-type]
    answer = "Paris is the capital [1]. Lyon has food [1]. Rhone water [9]."
    ctx, seen = testing.context(
        component="rag",
        replies={
            GatewayService.Embed: embed,
            GatewayService.ListModels: models("openai/gpt-4o-mini"),
            GatewayService.Generate: generated(answer),
        },
    )
    reply = await answerer.query(
        ctx, QueryRequest(query="Paris?", enable_hallucination_detection=True)
    )
    assert reply.answer_mode == "generative"
    assert reply.model == "openai/gpt-4o-mini"
    assert [list(c.document_ids) for c in reply.citations] == [["d0"], ["d0"]]
    assert [g.grounded for g in reply.grounding] == [True, False, False]
    assert list(reply.grounding[2].invalid_markers) == [9]
    assert reply.groundedness == 1 / 3
    prompt = next(c.request for c in seen.calls if c.method is GatewayService.Generate)
    assert isinstance(prompt, GenerateRequest)
    assert "[1] t0\nParis is the capital" in prompt.messages[1].content


async def test_a_rewrite_from_a_real_model_is_what_retrieval_uses() -> None:
    """enable_rewrite with a real model: the rewritten query goes to retrieval."""
    settings = RagSettings(embedding_dimensions=DIMS, answer_mode="extractive")
    retrieval = StoredRetrieval(settings)
    answerer = Answerer(retrieval)  # type: ignore[arg-type]
    ctx, _ = testing.context(
        component="rag",
        replies={
            GatewayService.Embed: embed,
            GatewayService.Generate: generated('"Paris capital France"\n'),
        },
    )
    reply = await answerer.query(
        ctx, QueryRequest(query="hey, what's the capital?", enable_rewrite=True)
    )
    assert reply.rewrite_applied
    assert reply.retrieval_query == "Paris capital France"
    assert retrieval.plans[0].text == "Paris capital France"
    assert reply.answer_mode == "extractive"
    assert reply.answer.startswith("Paris is the capital of France. [1]")
