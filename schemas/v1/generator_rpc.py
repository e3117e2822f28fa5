"""Typed rpc handles of schemas/v1/generator.proto, written by `make proto`: do not edit."""

from __future__ import annotations

from typing import Final

from schemas.contracts import Unary
from schemas.v1 import agent_pb2, generator_pb2


class GeneratorService:
    """The `generator` component (aifleet.v1.GeneratorService)."""

    GenerateAgent: Final = Unary(
        "generator",
        "generate_agent",
        generator_pb2.GenerateAgentRequest,
        generator_pb2.DraftResponse,
    )
    GenerateTool: Final = Unary(
        "generator",
        "generate_tool",
        generator_pb2.GenerateToolRequest,
        generator_pb2.DraftResponse,
    )
    RateAgent: Final = Unary(
        "generator",
        "rate_agent",
        generator_pb2.RateAgentRequest,
        generator_pb2.RatingResponse,
    )
    RateTool: Final = Unary(
        "generator",
        "rate_tool",
        generator_pb2.RateToolRequest,
        generator_pb2.RatingResponse,
    )
    AgentFeedback: Final = Unary(
        "generator",
        "agent_feedback",
        generator_pb2.AgentFeedbackRequest,
        generator_pb2.FeedbackResponse,
    )
    ToolFeedback: Final = Unary(
        "generator",
        "tool_feedback",
        generator_pb2.ToolFeedbackRequest,
        generator_pb2.FeedbackResponse,
    )
    GrantPermission: Final = Unary(
        "generator",
        "grant_permission",
        agent_pb2.GrantPermissionRequest,
        agent_pb2.PermissionResponse,
    )
    RevokePermission: Final = Unary(
        "generator",
        "revoke_permission",
        agent_pb2.RevokePermissionRequest,
        agent_pb2.PermissionResponse,
    )
    CheckPermission: Final = Unary(
        "generator",
        "check_permission",
        agent_pb2.CheckPermissionRequest,
        agent_pb2.CheckPermissionResponse,
    )
    ListPermissions: Final = Unary(
        "generator",
        "list_permissions",
        agent_pb2.ListPermissionsRequest,
        agent_pb2.ListPermissionsResponse,
    )
    ListDrafts: Final = Unary(
        "generator",
        "list_drafts",
        generator_pb2.ListDraftsRequest,
        generator_pb2.ListDraftsResponse,
    )
    GetDraft: Final = Unary(
        "generator",
        "get_draft",
        generator_pb2.GetDraftRequest,
        generator_pb2.DraftResponse,
    )
    ApproveDraft: Final = Unary(
        "generator",
        "approve_draft",
        generator_pb2.ApproveDraftRequest,
        generator_pb2.DraftResponse,
    )
    RegenerateDraft: Final = Unary(
        "generator",
        "regenerate_draft",
        generator_pb2.RegenerateDraftRequest,
        generator_pb2.DraftResponse,
    )
