"""What a prompt request must satisfy before anything is written (on top of the kit's checks).

Names, labels and version references; the body of a new template (text or chat messages,
within the size limits); and the inputs of `build_context`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from schemas.errors import BadRequest, PayloadTooLarge
from schemas.v1.common_pb2 import ChatMessage
from schemas.v1.prompt_pb2 import BuildContextRequest, CreateTemplateRequest
from workers.prompt.render import CompiledTemplate, compile_template
from workers.prompt.settings import PromptSettings
from workers.runtime import validation as check
from workers.runtime.context import Context

NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}"
LABEL_PATTERN = r"[a-z0-9][a-z0-9_.-]{0,62}"
_NAME = re.compile(NAME_PATTERN + r"\Z")
_LABEL = re.compile(LABEL_PATTERN + r"\Z")
# OpenAI's rule for a chat participant name.
_PARTICIPANT = re.compile(r"[A-Za-z0-9_-]{1,64}\Z")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
ROLES = frozenset({"system", "developer", "user", "assistant", "tool"})
LATEST = "latest"
MAX_VERSION = 2**31 - 1  # the column is a PostgreSQL integer


def name(value: str, field: str = "name") -> str:
    return check.identifier(value, field, pattern=_NAME)


def label(value: str, field: str = "label") -> str:
    return check.identifier(value, field, pattern=_LABEL)


def version(value: int, field: str = "version") -> int:
    return check.integer(value, field, maximum=MAX_VERSION)


def reference(version_: int, label_: str) -> tuple[int | None, str | None]:
    """(version, label) of a get or render; neither means `latest`."""
    if version_ and label_:
        raise BadRequest("give a version or a label, not both", details={"field": "label"})
    if version_:
        return version(version_), None
    if label_:
        return None, label(label_)
    return None, LATEST


def settable_label(value: str, field: str = "label") -> str:
    """A label a client may point: any valid label but `latest`, which follows the newest."""
    label(value, field)
    if value == LATEST:
        raise BadRequest(
            "latest is managed: it always points at the newest version", details={"field": field}
        )
    return value


def create_labels(labels: Sequence[str], limits: PromptSettings) -> list[str]:
    if len(labels) > limits.max_labels:
        raise BadRequest(f"at most {limits.max_labels} labels", details={"field": "labels"})
    out: list[str] = []
    for i, value in enumerate(labels):
        settable_label(value, f"labels[{i}]")
        if value in out:
            raise BadRequest(f"label {value} is given twice", details={"field": f"labels[{i}]"})
        out.append(value)
    return out


def message(m: ChatMessage, field: str) -> None:
    check.choice(m.role, f"{field}.role", ROLES)
    if m.name and not _PARTICIPANT.match(m.name):
        raise BadRequest(
            f"{field}.name must match [A-Za-z0-9_-]{{1,64}}", details={"field": f"{field}.name"}
        )


def template_body(
    req: CreateTemplateRequest, limits: PromptSettings
) -> tuple[str, Any, CompiledTemplate]:
    """(kind, stored body, compiled template) of a new version."""
    if req.text and req.messages:
        raise BadRequest("give text or messages, not both", details={"field": "messages"})
    if not req.text and not req.messages:
        raise BadRequest(
            "a template needs text (a text template) or messages (a chat template)",
            details={"field": "text"},
        )
    limit = limits.max_template_bytes
    if req.text:
        check.text(req.text, "text", max_bytes=limit, control=True)
        return "text", req.text, compile_template(req.text)
    if len(req.messages) > limits.max_template_messages:
        raise PayloadTooLarge(
            "the template has more messages than the component accepts",
            details={"field": "messages", "limit": limits.max_template_messages},
        )
    total = 0
    for i, m in enumerate(req.messages):
        message(m, f"messages[{i}]")
        check.text(m.content, f"messages[{i}].content", control=True)
        total += len(m.content.encode())
    if total > limit:
        raise PayloadTooLarge(
            "the messages are larger than the component accepts",
            details={"field": "messages", "limit_bytes": limit},
        )
    triples = [(m.role, m.name, m.content) for m in req.messages]
    body = [{"role": r, "content": c, "name": n} for r, n, c in triples]
    return "chat", body, compile_template(None, triples)


def context_request(req: BuildContextRequest, limits: PromptSettings) -> None:
    check.text(req.model, "model", required=True, max_chars=256, multiline=False)
    if not req.budget_tokens:
        raise BadRequest("budget_tokens is required", details={"field": "budget_tokens"})
    check.integer(req.budget_tokens, "budget_tokens", maximum=limits.max_budget_tokens)
    if not req.messages:
        raise BadRequest(
            "messages needs at least one message (the newest turn)", details={"field": "messages"}
        )
    check.items(req.messages, "messages", maximum=limits.max_context_messages)
    check.items(req.documents, "documents", maximum=limits.max_context_documents)
    for i, m in enumerate(req.messages):
        message(m, f"messages[{i}]")
    for i, d in enumerate(req.documents):
        check.text(d.id, f"documents[{i}].id", max_chars=256, multiline=False)
        check.text(d.content, f"documents[{i}].content", required=True, control=True)


def name_prefix(prefix: str) -> str:
    if len(prefix) > 128 or _CONTROL.search(prefix):
        raise BadRequest(
            "name_prefix is not a possible name prefix", details={"field": "name_prefix"}
        )
    return prefix


def user_of(ctx: Context) -> str:
    """X-User-ID as recorded with a version: control characters dropped, 256 characters."""
    return _CONTROL.sub("", ctx.user_id or "")[:256]
