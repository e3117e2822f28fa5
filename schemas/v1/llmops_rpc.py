"""Typed rpc handles of schemas/v1/llmops.proto, written by `make proto`: do not edit."""

from __future__ import annotations

from typing import Final

from schemas.contracts import Unary
from schemas.v1 import llmops_pb2


class LlmopsService:
    """The `llmops` component (aifleet.v1.LlmopsService)."""

    LogOperation: Final = Unary(
        "llmops",
        "log_operation",
        llmops_pb2.LlmOperationEvent,
        llmops_pb2.LogOperationResponse,
    )
    ListOperations: Final = Unary(
        "llmops",
        "list_operations",
        llmops_pb2.ListOperationsRequest,
        llmops_pb2.ListOperationsResponse,
    )
    Metrics: Final = Unary(
        "llmops",
        "metrics",
        llmops_pb2.MetricsRequest,
        llmops_pb2.MetricsResponse,
    )
    CostAnalysis: Final = Unary(
        "llmops",
        "cost_analysis",
        llmops_pb2.CostAnalysisRequest,
        llmops_pb2.CostAnalysisResponse,
    )
    SetBudget: Final = Unary(
        "llmops",
        "set_budget",
        llmops_pb2.SetBudgetRequest,
        llmops_pb2.SetBudgetResponse,
    )
    GetBudget: Final = Unary(
        "llmops",
        "get_budget",
        llmops_pb2.GetBudgetRequest,
        llmops_pb2.GetBudgetResponse,
    )
