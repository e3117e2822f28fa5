"""The pure half of drafting: the messages sent to the model, reading its reply, the checks a
JSON Schema and the generator's bounds make, and the cache key of a request."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from jsonschema import Draft202012Validator

from schemas.v1.common_pb2 import ChatMessage
from workers.generator.settings import GeneratorSettings
from workers.runtime import validation as check

MAX_ERRORS = 20
PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]{0,63})\}")
_WHAT = {
    "agent": (
        "an aifleet agent definition (AgentDefinition): a name, a description, a system prompt"
        " saying how the agent behaves, and, when useful, tools from the list below by id"
    ),
    "tool": (
        "an aifleet tool definition (ToolDefinition): a declarative HTTP request (method, url"
        " with {argument} placeholders, allowed_hosts naming the URL's host) or a fleet"
        " operation (component.op), with a JSON Schema of its arguments in `parameters`"
    ),
}


@dataclass(frozen=True)
class Catalog:
    """What the fleet offers the definition: model aliases and the tools the caller may read."""

    models: list[str]
    tools: dict[str, tuple[str, str]]  # tool id -> (name, description)


def messages(
    kind: str,
    prompt: str,
    config: dict[str, Any],
    catalog: Catalog,
    *,
    feedback: Sequence[str] = (),
    previous: dict[str, Any] | None = None,
) -> list[ChatMessage]:
    """System instructions (what to write, what exists) and the user's description."""
    lines = [
        f"You write {_WHAT[kind]}. Reply with one JSON object valid against the given schema"
        " and nothing else. Definitions are declarative: no code, no shell commands, no file"
        " access, no private or internal network addresses.",
        "Model aliases available: " + (", ".join(catalog.models) or "(the default only)") + ".",
    ]
    if kind == "agent":
        listed = [f"- {tid}: {name} - {desc[:200]}" for tid, (name, desc) in catalog.tools.items()]
        lines.append("Tools the agent may list by id:\n" + ("\n".join(listed) or "(none)"))
    user = [f"Description:\n{prompt}"]
    if config:
        user.append("Additional requirements (JSON):\n" + json.dumps(config, sort_keys=True))
    if previous is not None:
        user.append("The current definition:\n" + json.dumps(previous, sort_keys=True))
    if feedback:
        user.append("Feedback to address:\n" + "\n".join(f"- {f}" for f in feedback))
    return [
        ChatMessage(role="system", content="\n\n".join(lines)),
        ChatMessage(role="user", content="\n\n".join(user)),
    ]


def repair(content: str, errors: list[str]) -> list[ChatMessage]:
    """The messages of the repair round: the model's reply and what is wrong with it."""
    listed = "\n".join(f"- {e}" for e in errors)
    return [
        ChatMessage(role="assistant", content=content),
        ChatMessage(
            role="user",
            content=f"That definition is invalid:\n{listed}\nReply with a corrected definition.",
        ),
    ]


def parse(content: str) -> tuple[dict[str, Any] | None, list[str]]:
    """The reply as a JSON object (NUL characters replaced: PostgreSQL stores none), or the
    reason it is not one."""
    try:
        value = check.storable_json(json.loads(content))
    except ValueError as exc:
        return None, [f"the reply is not JSON: {exc}"[:300]]
    if not isinstance(value, dict):
        return None, ["the reply is not a JSON object"]
    return value, []


def completed(kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    """A tool definition with what the generator decides rather than the model: an HTTP tool's
    `allowed_hosts` is exactly its URL's host (a model widening it to `*.com` is not kept),
    and missing `parameters` are the URL's placeholders as required strings."""
    if kind != "tool":
        return spec
    out = dict(spec)
    http = out.get("http")
    url = http.get("url") if isinstance(http, dict) else None
    if not isinstance(http, dict) or not isinstance(url, str):
        return out
    host = urlsplit(PLACEHOLDER.sub("x", url)).hostname
    if host:
        out["http"] = {**http, "allowed_hosts": [host.lower()]}
    if "parameters" not in out:
        names = list(dict.fromkeys(PLACEHOLDER.findall(url)))
        parameters: dict[str, Any] = {
            "type": "object",
            "properties": {n: {"type": "string"} for n in names},
        }
        if names:
            parameters["required"] = names
        out["parameters"] = parameters
    return out


def schema_errors(validator: Draft202012Validator, value: dict[str, Any]) -> list[str]:
    """Every place the value breaks the schema (at most MAX_ERRORS), path first."""
    found = sorted(validator.iter_errors(value), key=lambda e: list(map(str, e.absolute_path)))
    return [
        "spec"
        + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in e.absolute_path)
        + f": {e.message[:300]}"
        for e in found[:MAX_ERRORS]
    ]


def limit_errors(kind: str, spec: dict[str, Any], settings: GeneratorSettings) -> list[str]:
    """Where a generated agent exceeds the generator's bounds."""
    if kind != "agent":
        return []
    bounds = {
        "max_turns": settings.max_turns,
        "max_tokens_per_run": settings.max_tokens_per_run,
        "max_output_tokens": settings.max_agent_output_tokens,
        "context_budget_tokens": settings.max_context_tokens,
    }
    errors = [
        f"spec.{field}: {spec[field]} is more than {bound}"
        for field, bound in bounds.items()
        if isinstance(spec.get(field), int) and spec[field] > bound
    ]
    if len(spec.get("tools") or []) > settings.max_tools:
        errors.append(f"spec.tools: more than {settings.max_tools} tools")
    return errors


def cache_key(tenant: str, kind: str, prompt: str, model: str, config: dict[str, Any]) -> str:
    """The cache entry of a request: tenant, kind, description, model and options."""
    material = json.dumps([tenant, kind, prompt, model, config], sort_keys=True)
    return "generator:draft:" + hashlib.sha256(material.encode()).hexdigest()
