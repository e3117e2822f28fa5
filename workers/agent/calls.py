"""Tool calls a model produced, checked before anything runs.

A call is refused when it names a tool that is not on the agent's allowlist (whatever the
conversation says: the list of tools is fixed when the run starts), when its arguments are not
a JSON object, or when they fail the tool's JSON Schema. A refused call is not an error of the
run: its reason goes back to the model as the tool's result, so the model can correct itself.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from jsonschema import Draft202012Validator

from schemas.v1.common_pb2 import ToolCall
from workers.runtime.validation import storable_json

MAX_ERRORS_SHOWN = 5


@dataclass(frozen=True)
class ToolSpec:
    """A tool as one run offers it: what the model sees and how the run executes it."""

    tool_id: str
    name: str
    description: str
    parameters: dict[str, Any]
    kind: str  # http, fleet, agent, memory
    definition: dict[str, Any]  # the stored definition (JSON), or {} for memory tools

    def validator(self) -> Draft202012Validator:
        return Draft202012Validator(self.parameters)


@dataclass(frozen=True)
class CheckedCall:
    """A model's tool call after the checks: `error` set means it must not run."""

    id: str
    name: str
    raw_arguments: str
    arguments: dict[str, Any]
    spec: ToolSpec | None
    error: str = ""


def check_call(
    call: ToolCall, tools: dict[str, ToolSpec], *, max_argument_bytes: int
) -> CheckedCall:
    name, raw = call.function.name, call.function.arguments
    spec = tools.get(name)

    def refused(reason: str) -> CheckedCall:
        return CheckedCall(call.id, name, raw, {}, spec, error=reason)

    if spec is None:
        offered = ", ".join(sorted(tools)) or "none"
        return refused(f"tool {name[:64]!r} is not available to this agent (available: {offered})")
    if len(raw.encode()) > max_argument_bytes:
        return refused(f"arguments are larger than {max_argument_bytes} bytes")
    try:
        arguments = storable_json(json.loads(raw)) if raw.strip() else {}
    except (ValueError, RecursionError) as exc:
        return refused(f"arguments are not valid JSON: {str(exc)[:200]}")
    if not isinstance(arguments, dict):
        return refused("arguments must be a JSON object")
    errors = sorted(spec.validator().iter_errors(arguments), key=lambda e: list(e.absolute_path))
    if errors:
        shown = "; ".join(_describe(e) for e in errors[:MAX_ERRORS_SHOWN])
        more = (
            f" (and {len(errors) - MAX_ERRORS_SHOWN} more)"
            if len(errors) > MAX_ERRORS_SHOWN
            else ""
        )
        return refused(f"arguments do not match the tool's schema: {shown}{more}")
    return CheckedCall(call.id, name, raw, arguments, spec)


def _describe(error: Any) -> str:
    path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
    return f"{path or '(root)'}: {str(error.message)[:200]}"
