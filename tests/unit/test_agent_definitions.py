"""Agent and tool definitions: the exported JSON Schemas match the contract and refuse what
the component refuses."""

from __future__ import annotations

from typing import Any

import pytest
from google.protobuf import json_format
from jsonschema import Draft202012Validator

from schemas.errors import BadRequest, PayloadTooLarge
from schemas.v1.agent_pb2 import AgentDefinition, ToolDefinition
from workers.agent import definitions


def tool(**fields: Any) -> ToolDefinition:
    base: dict[str, Any] = {
        "name": "lookup",
        "parameters": {"type": "object", "properties": {"id": {"type": "string"}}},
        "http": {
            "method": "GET",
            "url": "https://api.example.com/items/{id}",
            "allowed_hosts": ["api.example.com"],
        },
    }
    base.update(fields)
    return json_format.ParseDict(base, ToolDefinition())


@pytest.mark.parametrize(
    ("schema", "message"),
    [
        (definitions.AGENT_DEFINITION_SCHEMA, AgentDefinition),
        (definitions.TOOL_DEFINITION_SCHEMA, ToolDefinition),
    ],
)
def test_the_schemas_name_exactly_the_contracts_fields(
    schema: dict[str, Any], message: Any
) -> None:
    """One source of truth: every proto field is in the schema and nothing else is."""
    Draft202012Validator.check_schema(schema)
    assert set(schema["properties"]) == set(message.DESCRIPTOR.fields_by_name)
    assert schema["additionalProperties"] is False


def test_a_valid_http_tool_is_accepted_with_its_json() -> None:
    """The definition comes back as the JSON the schema describes."""
    value = definitions.check_tool(tool())
    assert value["http"]["allowed_hosts"] == ["api.example.com"]


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"name": "has space"}, "tool.name"),
        ({"parameters": {"type": "string"}}, '"type": "object"'),
        ({"parameters": {"type": "object", "properties": {"a": {"$ref": "#/x"}}}}, "$ref"),
        ({"parameters": {"type": "object", "minProperties": "x"}}, "not a valid JSON Schema"),
        (
            {
                "http": {
                    "method": "GET",
                    "url": "https://evil.example/x",
                    "allowed_hosts": ["api.example.com"],
                }
            },
            "allowed_hosts",
        ),
        (
            {
                "http": {
                    "method": "GET",
                    "url": "http://169.254.169.254/latest/meta-data",
                    "allowed_hosts": ["169.254.169.254"],
                }
            },
            "link-local",
        ),
        (
            {
                "http": {
                    "method": "GET",
                    "url": "http://localhost:8080/",
                    "allowed_hosts": ["localhost"],
                }
            },
            "loopback",
        ),
        (
            {"http": {"method": "GET", "url": "file:///etc/passwd", "allowed_hosts": ["x"]}},
            "tool.http.url",
        ),
        (
            {
                "http": {
                    "method": "GET",
                    "url": "https://{id}.example.com/",
                    "allowed_hosts": ["*.example.com"],
                }
            },
            "host",
        ),
        (
            {
                "http": {
                    "method": "GET",
                    "url": "https://api.example.com/{other}",
                    "allowed_hosts": ["api.example.com"],
                }
            },
            "placeholders",
        ),
        (
            {
                "http": {
                    "method": "GET",
                    "url": "https://api.example.com/",
                    "allowed_hosts": ["api.example.com"],
                    "secret_headers": {"X": "DATABASE_URL"},
                }
            },
            "secret_headers",
        ),
        (
            {
                "http": {
                    "method": "EXEC",
                    "url": "https://api.example.com/",
                    "allowed_hosts": ["api.example.com"],
                }
            },
            "method",
        ),
    ],
)
def test_unsafe_or_malformed_tools_are_refused_with_the_reason(
    change: dict[str, Any], reason: str
) -> None:
    """Code, private addresses, foreign hosts, arbitrary env vars, bad schemas: 400."""
    with pytest.raises(BadRequest) as caught:
        definitions.check_tool(tool(**change))
    assert reason in caught.value.message


def test_a_definition_carrying_code_is_refused_by_the_exported_schema() -> None:
    """Nothing but the declared fields: a `code` or `command` key never validates."""
    validator = Draft202012Validator(definitions.TOOL_DEFINITION_SCHEMA)
    base = {"name": "x", "parameters": {"type": "object"}, "fleet": {"operation": "a.b"}}
    assert validator.is_valid(base)
    for key in ("code", "command", "python"):
        assert not validator.is_valid({**base, key: "import os; os.system('id')"})


def test_private_addresses_pass_only_when_the_tool_allows_them() -> None:
    """allow_private_addresses lets a tool reach an internal service on purpose."""
    http = {
        "method": "GET",
        "url": "http://10.0.0.5/x",
        "allowed_hosts": ["10.0.0.5"],
        "allow_private_addresses": True,
    }
    assert definitions.check_tool(tool(http=http))["http"]["url"] == "http://10.0.0.5/x"


def test_agent_definitions_refuse_both_prompts_unknown_limits_and_oversize() -> None:
    """system_prompt and prompt_ref are exclusive; limits are bounded; size is limited."""
    both = json_format.ParseDict(
        {"name": "a", "system_prompt": "x", "prompt_ref": "p@production"}, AgentDefinition()
    )
    with pytest.raises(BadRequest):
        definitions.check_agent(both)
    with pytest.raises(BadRequest, match="max_turns"):
        definitions.check_agent(AgentDefinition(name="a", max_turns=51))
    with pytest.raises(BadRequest, match="prompt_ref"):
        definitions.check_agent(AgentDefinition(name="a", prompt_ref="bad ref"))
    with pytest.raises(PayloadTooLarge):
        definitions.check_agent(AgentDefinition(name="a", system_prompt="x" * 300_000))
    assert definitions.parse_prompt_ref("sys@production") == ("sys", 0, "production")
    assert definitions.parse_prompt_ref("sys@3") == ("sys", 3, "")


@pytest.mark.parametrize(
    ("host", "allowed", "ok"),
    [
        ("api.example.com", ["api.example.com"], True),
        ("a.example.com", ["*.example.com"], True),
        ("example.com", ["*.example.com"], False),
        ("evilexample.com", ["*.example.com"], False),
        ("API.EXAMPLE.COM.", ["api.example.com"], True),
    ],
)
def test_host_allowlist_matches_names_and_subdomain_wildcards(
    host: str, allowed: list[str], ok: bool
) -> None:
    """`*.example.com` covers subdomains only, never look-alike names."""
    assert definitions.host_allowed(host, allowed) is ok
