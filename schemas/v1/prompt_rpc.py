"""Typed rpc handles of schemas/v1/prompt.proto, written by `make proto`: do not edit."""

from __future__ import annotations

from typing import Final

from schemas.contracts import Unary
from schemas.v1 import prompt_pb2


class PromptService:
    """The `prompt` component (aifleet.v1.PromptService)."""

    CreateTemplate: Final = Unary(
        "prompt",
        "create_template",
        prompt_pb2.CreateTemplateRequest,
        prompt_pb2.CreateTemplateResponse,
    )
    GetTemplate: Final = Unary(
        "prompt",
        "get_template",
        prompt_pb2.GetTemplateRequest,
        prompt_pb2.GetTemplateResponse,
    )
    ListTemplates: Final = Unary(
        "prompt",
        "list_templates",
        prompt_pb2.ListTemplatesRequest,
        prompt_pb2.ListTemplatesResponse,
    )
    SetLabel: Final = Unary(
        "prompt",
        "set_label",
        prompt_pb2.SetLabelRequest,
        prompt_pb2.SetLabelResponse,
    )
    DeleteTemplate: Final = Unary(
        "prompt",
        "delete_template",
        prompt_pb2.DeleteTemplateRequest,
        prompt_pb2.DeleteTemplateResponse,
    )
    Render: Final = Unary(
        "prompt",
        "render",
        prompt_pb2.RenderRequest,
        prompt_pb2.RenderResponse,
    )
    BuildContext: Final = Unary(
        "prompt",
        "build_context",
        prompt_pb2.BuildContextRequest,
        prompt_pb2.BuildContextResponse,
    )
