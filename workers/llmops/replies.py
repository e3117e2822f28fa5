"""Replies of LLMOps built from what the store returned."""

from __future__ import annotations

import json

import asyncpg

from schemas.v1.llmops_pb2 import Budget, LlmOperationEvent, OperationStats
from workers.llmops.aggregates import Histograms, percentile
from workers.runtime.validation import to_timestamp


def event_of(r: asyncpg.Record) -> LlmOperationEvent:
    out = LlmOperationEvent(
        id=r["id"],
        operation_type=r["operation_type"],
        model=r["model"],
        provider=r["provider"],
        prompt_tokens=r["prompt_tokens"],
        completion_tokens=r["completion_tokens"],
        total_tokens=r["total_tokens"],
        cost_usd=r["cost_usd"],
        latency_ms=r["latency_ms"],
        status=r["status"],
        error_class=r["error_class"],
        error_message=r["error_message"],
        user_id=r["user_id"],
        agent_id=r["agent_id"],
        cache_hit=r["cache_hit"],
        occurred_at=to_timestamp(r["occurred_at"]),
    )
    if r["ttft_ms"] is not None:
        out.time_to_first_token_ms = r["ttft_ms"]
    metadata = json.loads(r["metadata"]) if isinstance(r["metadata"], str) else r["metadata"]
    if metadata:
        out.metadata.update(metadata)
    return out


def stats_of(r: asyncpg.Record, histograms: Histograms) -> OperationStats:
    n = r["operations"]
    successes = n - r["errors"]
    return OperationStats(
        operations=n,
        successes=successes,
        errors=r["errors"],
        success_rate=successes / n,
        error_rate=r["errors"] / n,
        prompt_tokens=r["prompt_tokens"],
        completion_tokens=r["completion_tokens"],
        total_tokens=r["total_tokens"],
        cost_usd=r["cost_usd"],
        latency_p50_ms=percentile(histograms.latency, 0.5),
        latency_p95_ms=percentile(histograms.latency, 0.95),
        latency_p99_ms=percentile(histograms.latency, 0.99),
        latency_avg_ms=r["latency_avg"],
        time_to_first_token_p50_ms=percentile(histograms.ttft, 0.5),
        time_to_first_token_p95_ms=percentile(histograms.ttft, 0.95),
        cache_hits=r["cache_hits"],
    )


def budget_of(r: asyncpg.Record) -> Budget:
    return Budget(
        period=r["period"],
        limit_usd=r["limit_usd"],
        spent_usd=r["spent_usd"],
        period_start=to_timestamp(r["period_start"]),
        exceeded=r["spent_usd"] > r["limit_usd"],
    )
