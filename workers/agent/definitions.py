"""Agent and tool definitions: their JSON Schemas (the one source of truth for what create and
update accept, exported by `definition_schemas`) and the checks no JSON Schema can express.

A definition arrives as a proto message; it is turned into its proto3 JSON form (field names
as in the .proto) and validated against the schema here, so a generator that validates its
output against the exported schema produces exactly what this component accepts. Semantic
checks follow (the arguments schema is itself a valid JSON Schema, the URL's host is on the
tool's allowlist, secrets name allowed environment variables).
"""

from __future__ import annotations

import ipaddress
import json
import re
from typing import Any
from urllib.parse import urlsplit

from google.protobuf import json_format
from google.protobuf.message import Message
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from schemas.errors import BadRequest, PayloadTooLarge
from workers.runtime import validation as check

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$"
FUNCTION_NAME = r"^[a-zA-Z0-9_-]{1,64}$"
BLOCK_LABEL = r"^[a-z][a-z0-9_]{0,31}$"
OPERATION = r"^[a-z][a-z0-9_]{0,62}\.[a-z][a-z0-9_]{0,62}$"
SECRET_PREFIX = "AIFLEET_AGENT_SECRET_"  # noqa: S105 (not a secret)
SECRET_ENV = r"^AIFLEET_AGENT_SECRET_[A-Z0-9_]{1,64}$"  # noqa: S105 (not a secret)
HEADER_NAME = r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,64}$"
HOST_PATTERN = r"^(\*\.)?[A-Za-z0-9]([A-Za-z0-9-]{0,62})(\.[A-Za-z0-9]([A-Za-z0-9-]{0,62}))*$"
PROMPT_REF = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}(@([a-z0-9][a-z0-9_.-]{0,62}|[0-9]{1,9}))?$"
RESERVED_AGENT_IDS = frozenset({"tools", "permissions", "schemas"})
MAX_TOOLS = 64
MAX_TURNS = 50
MAX_SCHEMA_BYTES = 32 * 1024
MAX_SCHEMA_DEPTH = 16
MAX_DEFINITION_BYTES = 256 * 1024
_SINGLE_LINE = r"^[^\x00-\x1f\x7f]*$"


def _text(max_length: int, *, single_line: bool = False, min_length: int = 0) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string", "maxLength": max_length}
    if min_length:
        schema["minLength"] = min_length
    if single_line:
        schema["pattern"] = _SINGLE_LINE
    return schema


def _integer(minimum: int, maximum: int) -> dict[str, Any]:
    return {"type": "integer", "minimum": minimum, "maximum": maximum}


_OBJECT = {"type": "object"}

CORE_BLOCK_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["label"],
    "properties": {
        "label": {"type": "string", "pattern": BLOCK_LABEL},
        "description": _text(500, single_line=True),
        "value": _text(20_000),
        "limit_chars": _integer(0, 20_000),
    },
}

AGENT_DEFINITION_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "AgentDefinition",
    "description": "An aifleet agent: model, instructions, tool allowlist, memory and limits.",
    "type": "object",
    "additionalProperties": False,
    "required": ["name"],
    "properties": {
        "name": _text(200, single_line=True, min_length=1),
        "description": _text(2000),
        "model": {"type": "string", "pattern": r"^[A-Za-z0-9][A-Za-z0-9_.:/@-]{0,127}$"},
        "system_prompt": _text(65_536),
        "prompt_ref": {"type": "string", "pattern": PROMPT_REF},
        "prompt_variables": {
            "type": "object",
            "maxProperties": 64,
            "propertyNames": {"pattern": r"^[A-Za-z][A-Za-z0-9_]{0,63}$"},
            "additionalProperties": _text(16_384),
        },
        "tools": {
            "type": "array",
            "maxItems": MAX_TOOLS,
            "uniqueItems": True,
            "items": {"type": "string", "pattern": ID_PATTERN},
        },
        "memory": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "core_blocks": {"type": "array", "maxItems": 8, "items": CORE_BLOCK_SCHEMA},
                "archival": {"type": "boolean"},
                "recall": {"type": "boolean"},
            },
        },
        "max_turns": _integer(0, MAX_TURNS),
        "max_tokens_per_run": _integer(0, 10_000_000),
        "max_output_tokens": _integer(0, 1_000_000),
        "temperature": {"type": "number", "minimum": 0, "maximum": 2},
        "tool_choice": {"type": "string", "pattern": r"^([a-zA-Z0-9_-]{1,64})?$"},
        "context_budget_tokens": _integer(0, 10_000_000),
        "metadata": _OBJECT,
    },
    "not": {"required": ["system_prompt", "prompt_ref"]},
}

HTTP_TOOL_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["method", "url", "allowed_hosts"],
    "properties": {
        "method": {"enum": ["GET", "POST", "PUT", "PATCH", "DELETE"]},
        "url": {"type": "string", "pattern": r"^https?://[^\s]+$", "maxLength": 2048},
        "headers": {
            "type": "object",
            "maxProperties": 32,
            "propertyNames": {"pattern": HEADER_NAME},
            "additionalProperties": _text(4096, single_line=True),
        },
        "secret_headers": {
            "type": "object",
            "maxProperties": 8,
            "propertyNames": {"pattern": HEADER_NAME},
            "additionalProperties": {"type": "string", "pattern": SECRET_ENV},
        },
        "allowed_hosts": {
            "type": "array",
            "minItems": 1,
            "maxItems": 32,
            "items": {"type": "string", "pattern": HOST_PATTERN, "maxLength": 253},
        },
        "allow_private_addresses": {"type": "boolean"},
        "timeout_seconds": {"type": "number", "minimum": 0, "maximum": 600},
        "max_response_bytes": _integer(0, 64 * 1024 * 1024),
    },
}

TOOL_DEFINITION_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "ToolDefinition",
    "description": "A declarative aifleet tool: an HTTP request, a fleet operation or an agent.",
    "type": "object",
    "additionalProperties": False,
    "required": ["name"],
    "properties": {
        "name": {"type": "string", "pattern": FUNCTION_NAME},
        "description": _text(2000),
        "parameters": _OBJECT,
        "http": HTTP_TOOL_SCHEMA,
        "fleet": {
            "type": "object",
            "additionalProperties": False,
            "required": ["operation"],
            "properties": {
                "operation": {"type": "string", "pattern": OPERATION},
                "defaults": _OBJECT,
            },
        },
        "agent": {
            "type": "object",
            "additionalProperties": False,
            "required": ["agent_id"],
            "properties": {"agent_id": {"type": "string", "pattern": ID_PATTERN}},
        },
        "metadata": _OBJECT,
    },
    "oneOf": [{"required": ["http"]}, {"required": ["fleet"]}, {"required": ["agent"]}],
}

AGENT_ARGUMENTS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["message"],
    "properties": {"message": {"type": "string", "minLength": 1, "maxLength": 65_536}},
}

_AGENT_VALIDATOR = Draft202012Validator(AGENT_DEFINITION_SCHEMA)
_TOOL_VALIDATOR = Draft202012Validator(TOOL_DEFINITION_SCHEMA)
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]{0,63})\}")


def as_json(message: Message) -> dict[str, Any]:
    """A message in the proto3 JSON mapping with the .proto's field names, as the schemas
    describe it (default values left out, as a client would leave them out)."""
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def _requested_json(definition: Message, field: str) -> dict[str, Any]:
    """`as_json` of a request's definition; what PostgreSQL cannot store is 400 naming its
    path."""
    try:
        value = as_json(definition)
    except json_format.SerializeToJsonError as exc:  # a Struct's infinite or NaN number
        raise BadRequest(f"{field}: {exc}", details={"field": field}) from None
    check.jsonb(value, field)
    return value


def _first_error(validator: Draft202012Validator, value: Any, prefix: str) -> None:
    errors = sorted(validator.iter_errors(value), key=lambda e: list(e.absolute_path))
    if not errors:
        return
    error = errors[0]
    path = prefix + "".join(
        f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path
    )
    raise BadRequest(f"{path}: {error.message[:300]}", details={"field": path})


def _size(value: Any, field: str, limit: int) -> None:
    size = len(json.dumps(value, separators=(",", ":")).encode())
    if size > limit:
        raise PayloadTooLarge(
            f"{field} is larger than {limit} bytes", details={"field": field, "limit_bytes": limit}
        )


def check_agent(definition: Message, field: str = "agent") -> dict[str, Any]:
    """The agent definition as JSON, or BadRequest naming the first invalid field."""
    value = _requested_json(definition, field)
    _size(value, field, MAX_DEFINITION_BYTES)
    _first_error(_AGENT_VALIDATOR, value, field)
    blocks = [b["label"] for b in value.get("memory", {}).get("core_blocks", [])]
    if len(blocks) != len(set(blocks)):
        raise BadRequest(
            "memory.core_blocks labels must be distinct", details={"field": f"{field}.memory"}
        )
    return value


def check_arguments_schema(schema: Any, field: str) -> None:
    """An arguments schema must be a valid JSON Schema of an object, small and shallow."""
    _size(schema, field, MAX_SCHEMA_BYTES)
    if _depth(schema) > MAX_SCHEMA_DEPTH:
        raise BadRequest(f"{field} is nested too deeply", details={"field": field})
    if schema.get("type") != "object":
        raise BadRequest(
            f'{field} must be a schema with "type": "object"', details={"field": field}
        )
    if any(key in schema for key in ("$ref", "$dynamicRef")) or '"$ref"' in json.dumps(schema):
        raise BadRequest(f"{field} may not use $ref", details={"field": field})
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        raise BadRequest(
            f"{field} is not a valid JSON Schema: {exc.message[:200]}", details={"field": field}
        ) from None


def check_tool(definition: Message, field: str = "tool") -> dict[str, Any]:
    """The tool definition as JSON, or BadRequest naming the first invalid field."""
    value = _requested_json(definition, field)
    _size(value, field, MAX_DEFINITION_BYTES)
    _first_error(_TOOL_VALIDATOR, value, field)
    if "agent" in value:
        if value.get("parameters") not in (None, {}, AGENT_ARGUMENTS_SCHEMA):
            raise BadRequest(
                "agent tools take {message}; leave parameters empty",
                details={"field": f"{field}.parameters"},
            )
        value["parameters"] = AGENT_ARGUMENTS_SCHEMA
    else:
        if "parameters" not in value:
            raise BadRequest(
                f"{field}.parameters is required", details={"field": f"{field}.parameters"}
            )
        check_arguments_schema(value["parameters"], f"{field}.parameters")
    if "http" in value:
        _check_http(value["http"], value["parameters"], f"{field}.http")
    return value


def _check_http(http: dict[str, Any], parameters: dict[str, Any], field: str) -> None:
    parts = urlsplit(_PLACEHOLDER.sub("x", http["url"]))
    host = (parts.hostname or "").lower()
    if parts.scheme not in ("http", "https") or not host or parts.username or parts.password:
        raise BadRequest(
            f"{field}.url must be http(s)://host/...", details={"field": f"{field}.url"}
        )
    if "{" in parts.netloc or _PLACEHOLDER.search(http["url"].split("//", 1)[1].split("/", 1)[0]):
        raise BadRequest("the URL's host cannot take arguments", details={"field": f"{field}.url"})
    if not http.get("allow_private_addresses") and not _public_host(host):
        raise BadRequest(
            f"{field}.url names a private, loopback or link-local address"
            " (allow_private_addresses is off)",
            details={"field": f"{field}.url"},
        )
    if not host_allowed(host, http["allowed_hosts"]):
        raise BadRequest(
            f"{field}.url names a host not in allowed_hosts", details={"field": f"{field}.url"}
        )
    properties = parameters.get("properties") or {}
    missing = [n for n in _PLACEHOLDER.findall(http["url"]) if n not in properties]
    if missing:
        raise BadRequest(
            f"URL placeholders {missing} are not in parameters.properties",
            details={"field": f"{field}.url"},
        )
    clash = {k.lower() for k in http.get("headers", {})} & {
        k.lower() for k in http.get("secret_headers", {})
    }
    if clash:
        raise BadRequest(
            f"headers set twice: {sorted(clash)}", details={"field": f"{field}.headers"}
        )


def _public_host(host: str) -> bool:
    """False for literal non-public addresses and localhost names; names that resolve to
    private addresses are refused when the call connects (http_tool)."""
    if host == "localhost" or host.endswith((".localhost", ".local", ".internal")):
        return False
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return True
    return ip.is_global and not ip.is_multicast


def url_placeholders(url: str) -> list[str]:
    return _PLACEHOLDER.findall(url)


def host_allowed(host: str, allowed: list[str]) -> bool:
    """Exact names, or `*.example.com` for its subdomains (not example.com itself)."""
    host = host.lower().rstrip(".")
    for entry in allowed:
        entry = entry.lower()
        if entry.startswith("*."):
            if host.endswith(entry[1:]) and host != entry[2:]:
                return True
        elif host == entry:
            return True
    return False


def _depth(value: Any, level: int = 0) -> int:
    if isinstance(value, dict):
        return max((_depth(v, level + 1) for v in value.values()), default=level + 1)
    if isinstance(value, list):
        return max((_depth(v, level + 1) for v in value), default=level + 1)
    return level


def check_id(value: str, field: str, *, required: bool = True) -> str:
    """A client-chosen id: the fleet's identifier rule ([A-Za-z0-9][A-Za-z0-9_.:-]{0,127})."""
    return check.identifier(value, field, required=required)


def parse_prompt_ref(ref: str) -> tuple[str, int, str]:
    """(name, version, label) of `name@label`, `name@3` or `name` (latest)."""
    name, _, tag = ref.partition("@")
    if tag.isdigit():
        return name, int(tag), ""
    return name, 0, tag
