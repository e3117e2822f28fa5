"""Answers: retrieve, then write (generative, through gateway.generate) or quote (extractive),
map every `[n]` to its chunk, and optionally check each sentence against what it cites.

With nothing relevant retrieved (no chunk at or above the threshold, or above
AIFLEET_RAG_RELEVANCE_FLOOR when none is given) no model is called: the answer says so.
`answer_mode` auto is extractive when the gateway's model for the request is its offline
stand-in (its deployments are all `aifleet/offline`, from gateway.list_models), since that
model echoes instead of answering.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import numpy as np

from schemas.v1.common_pb2 import ChatMessage
from schemas.v1.gateway_pb2 import GenerateRequest, ListModelsRequest
from schemas.v1.gateway_rpc import GatewayService
from schemas.v1.rag_pb2 import (
    Citation,
    QueryChunk,
    QueryRequest,
    QueryResponse,
    SearchResult,
    SentenceGrounding,
    Source,
)
from workers.rag import answers, citations, grounding
from workers.rag.embedder import Vectors
from workers.rag.results_cache import cache_key
from workers.rag.retrieval import Plan, Retrieved, Retriever, corpus_version, plan_search
from workers.runtime import validation as check
from workers.runtime.context import Context

# What the gateway reports as the deployment of its offline text model (workers/gateway/README).
OFFLINE_PROVIDER_MODEL = "aifleet/offline"
ANSWER_MODES = ("generative", "extractive")
_MODELS_TTL = 30.0


@dataclass(frozen=True)
class Prepared:
    got: Retrieved
    relevant: list[tuple[SearchResult, Vectors]]
    mode: str
    retrieval_query: str
    rewrite_note: str
    rewrite_applied: bool


@dataclass(frozen=True)
class Question:
    plan: Plan
    req: QueryRequest
    mode: str  # "" until resolved (auto)
    max_tokens: int


class Answerer:
    def __init__(self, retriever: Retriever) -> None:
        self.retriever = retriever
        self.settings = retriever.settings
        self.embedder = retriever.embedder
        self._offline: dict[str, tuple[float, bool]] = {}

    def question(self, req: QueryRequest) -> Question:
        check.text(req.query, "query", required=True)
        plan = plan_search(
            self.settings,
            text=req.query,
            vector=[],
            top_k=req.top_k,
            default_top_k=5,
            threshold=req.threshold if req.HasField("threshold") else None,
            filters=req.metadata_filters,
            mode=req.mode,
            rerank=req.rerank,
            skip_cache=req.skip_cache,
            text_field="query",
        )
        mode = req.answer_mode
        if mode:
            check.choice(mode, "answer_mode", ANSWER_MODES)
        elif self.settings.answer_mode != "auto":
            mode = self.settings.answer_mode
        check.text(req.model, "model", max_chars=256, multiline=False)
        max_tokens = req.max_tokens if req.HasField("max_tokens") else 0
        max_tokens = max_tokens or self.settings.default_max_tokens
        check.integer(max_tokens, "max_tokens", minimum=1, maximum=100_000)
        return Question(plan, req, mode, max_tokens)

    # -- the two ops ----------------------------------------------------------------------

    async def query(self, ctx: Context, req: QueryRequest) -> QueryResponse:
        q = self.question(req)
        cache = self.retriever.cache
        use_cache = cache.enabled and not q.plan.skip_cache
        if use_cache:
            version = await corpus_version(self.retriever.pool, ctx.tenant)
            found = await cache.get(ctx, self._key(version, req))
            if found is not None:
                reply = QueryResponse.FromString(found)
                reply.cached = True
                return reply
        reply, version = await self._answer(ctx, q)
        if use_cache:
            await cache.put(ctx, self._key(version, req), reply.SerializeToString())
        return reply

    async def query_stream(self, ctx: Context, req: QueryRequest) -> AsyncIterator[QueryChunk]:
        q = self.question(req)
        prepared = await self._prepare(ctx, q)
        yield QueryChunk(documents=[r for r, _ in prepared.relevant])
        model = ""
        if prepared.relevant and prepared.mode == "generative":
            deltas: list[str] = []
            request = self._generation(q, prepared.relevant)
            async for part in ctx.stream(GatewayService.GenerateStream, request):
                if part.delta:
                    deltas.append(part.delta)
                    yield QueryChunk(delta=part.delta)
                model = part.provider_model or model
            text = "".join(deltas)
        else:
            text = await self._extract(ctx, prepared)
            yield QueryChunk(delta=text)
        yield QueryChunk(done=True, response=await self._finish(ctx, q, prepared, text, model))

    def _key(self, version: int, req: QueryRequest) -> str:
        key = QueryRequest()
        key.CopyFrom(req)
        key.skip_cache = False
        return cache_key("query", version, key, self.embedder.model, self.settings.answer_mode)

    # -- steps -----------------------------------------------------------------------------

    async def _prepare(self, ctx: Context, q: Question) -> Prepared:
        """Rewrite (when asked), retrieve, keep what is relevant, choose the answer mode."""
        retrieval_query, note, applied = await self._rewrite(ctx, q)
        plan = Plan(**{**q.plan.__dict__, "text": retrieval_query})
        got = await self.retriever.retrieve(ctx, plan, embeddings=True)
        floor = self.settings.relevance_floor if q.plan.threshold is None else -1.0
        relevant = [
            (r, e)
            for r, e in zip(got.results, got.embeddings, strict=True)
            if r.similarity >= floor
        ]
        mode = await self._mode(ctx, q) if relevant else "extractive"
        return Prepared(got, relevant, mode, retrieval_query, note, applied)

    async def _answer(self, ctx: Context, q: Question) -> tuple[QueryResponse, int]:
        prepared = await self._prepare(ctx, q)
        model = ""
        if prepared.relevant and prepared.mode == "generative":
            request = self._generation(q, prepared.relevant)
            generated = await ctx.call(GatewayService.Generate, request)
            text, model = generated.message.content, generated.provider_model
        else:
            text = await self._extract(ctx, prepared)
        reply = await self._finish(ctx, q, prepared, text, model)
        return reply, prepared.got.corpus_version

    async def _rewrite(self, ctx: Context, q: Question) -> tuple[str, str, bool]:
        """(query for retrieval, why not rewritten, rewritten?)."""
        if not q.req.enable_rewrite:
            return q.req.query, "rewrite not asked for", False
        messages = [
            ChatMessage(role="system", content=answers.REWRITE_PROMPT),
            ChatMessage(role="user", content=q.req.query),
        ]
        reply = await ctx.call(
            GatewayService.Generate,
            GenerateRequest(model=q.req.model, messages=messages, max_tokens=64, temperature=0.0),
        )
        if reply.provider_model == OFFLINE_PROVIDER_MODEL:
            note = "the gateway's text model is its offline stand-in: the query is used as written"
            return q.req.query, note, False
        rewritten = answers.cleaned_rewrite(reply.message.content, limit=len(q.req.query) * 4 + 64)
        if not rewritten:
            return q.req.query, "the model returned no usable rewrite", False
        return rewritten, "", True

    async def _mode(self, ctx: Context, q: Question) -> str:
        if q.mode:
            return q.mode
        alias = q.req.model
        cached = self._offline.get(alias)
        if cached is None or time.monotonic() - cached[0] > _MODELS_TTL:
            models = await ctx.call(GatewayService.ListModels, ListModelsRequest())
            chosen = [m for m in models.models if (m.name == alias if alias else m.default)]
            chosen = [m for m in chosen if m.mode != "embedding"]
            offline = bool(chosen) and all(
                d.model == OFFLINE_PROVIDER_MODEL for m in chosen for d in m.deployments
            )
            cached = (time.monotonic(), offline)
            self._offline[alias] = cached
        return "extractive" if cached[1] else "generative"

    def _generation(
        self, q: Question, relevant: list[tuple[SearchResult, Vectors]]
    ) -> GenerateRequest:
        passages = [answers.Passage(r.title, r.text) for r, _ in relevant]
        messages = [
            ChatMessage(role=m["role"], content=m["content"])
            for m in answers.generation_messages(q.req.query, passages)
        ]
        return GenerateRequest(model=q.req.model, messages=messages, max_tokens=q.max_tokens)

    async def _extract(self, ctx: Context, prepared: Prepared) -> str:
        """The best sentences of the relevant chunks, cited; the no-answer text without any."""
        if not prepared.relevant:
            return answers.NO_ANSWER
        passages = [answers.Passage(r.title, r.text) for r, _ in prepared.relevant]
        candidates = answers.candidate_sentences(passages)
        query_vector = prepared.got.query_vector
        if not candidates or query_vector is None:
            return " ".join(
                f"{r.text.strip()} [{i}]" for i, (r, _) in enumerate(prepared.relevant, 1)
            )
        vectors = await self.embedder.embed(ctx, [text for _, text in candidates])
        return answers.extractive_answer(
            candidates, vectors, query_vector, max_sentences=self.settings.extractive_sentences
        )

    async def _finish(
        self, ctx: Context, q: Question, prepared: Prepared, text: str, model: str
    ) -> QueryResponse:
        relevant = prepared.relevant
        results = [r for r, _ in relevant]
        sentences = citations.split_sentences(text)
        reply = QueryResponse(
            answer=text,
            documents=results,
            no_answer=not relevant,
            answer_mode=prepared.mode,
            sentences=[s.text for s in sentences],
            model=model,
            retrieval_query=prepared.retrieval_query,
            rewrite_applied=prepared.rewrite_applied,
            rewrite_note=prepared.rewrite_note,
        )
        cited: set[int] = set()
        resolved = [citations.resolve(s.markers, len(results)) for s in sentences]
        for s, r in zip(sentences, resolved, strict=True):
            if not r.result_indexes:
                continue
            cited.update(r.result_indexes)
            reply.citations.append(
                Citation(
                    sentence_index=s.index,
                    start=s.start,
                    end=s.end,
                    markers=s.markers,
                    result_indexes=r.result_indexes,
                    document_ids=[results[i].document_id for i in r.result_indexes],
                    chunk_indexes=[results[i].chunk_index for i in r.result_indexes],
                )
            )
        seen: dict[str, Source] = {}
        for result in results:
            source = seen.setdefault(
                result.document_id,
                Source(document_id=result.document_id, title=result.title, source=result.source),
            )
            source.chunks += 1
        reply.sources.extend(seen.values())
        if q.req.enable_hallucination_detection and relevant and sentences:
            await self._ground(ctx, reply, sentences, resolved, relevant)
            reply.confidence = reply.groundedness
        elif cited:
            reply.confidence = max(0.0, float(np.mean([results[i].similarity for i in cited])))
        return reply

    async def _ground(
        self,
        ctx: Context,
        reply: QueryResponse,
        sentences: list[citations.Sentence],
        resolved: list[citations.Resolved],
        relevant: list[tuple[SearchResult, Vectors]],
    ) -> None:
        """Embed the answer's sentences and the chunks' sentences in one call, then judge."""
        claims = [citations.strip_markers(s.text) or s.text for s in sentences]
        chunk_sentences = [[s.text for s in citations.split_sentences(r.text)] for r, _ in relevant]
        flat = [t for group in chunk_sentences for t in group]
        vectors = await self.embedder.embed(ctx, claims + flat)
        evidence: list[grounding.Evidence] = []
        offset = len(claims)
        for (_, chunk_vector), group in zip(relevant, chunk_sentences, strict=True):
            rows = [chunk_vector, *vectors[offset : offset + len(group)]]
            evidence.append(grounding.Evidence(np.stack(rows).astype(np.float32)))
            offset += len(group)
        judgements = []
        for i, (s, r) in enumerate(zip(sentences, resolved, strict=True)):
            j = grounding.judge(
                vectors[i], r.result_indexes, evidence, self.settings.grounded_threshold
            )
            judgements.append(j)
            reply.grounding.append(
                SentenceGrounding(
                    text=s.text,
                    support=j.support,
                    best_result_index=j.best_result,
                    grounded=j.grounded,
                    invalid_markers=r.invalid,
                )
            )
        reply.groundedness = grounding.groundedness(judgements)
        reply.hallucination_checked = True
