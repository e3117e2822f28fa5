"""The generator's pure rules: refused descriptions and definitions, schema and bound checks,
the cache key, the rating trend."""

from __future__ import annotations

from typing import Any

import pytest
from jsonschema import Draft202012Validator

from workers.agent.definitions import AGENT_DEFINITION_SCHEMA
from workers.generator import drafting
from workers.generator.feedback_ops import trend
from workers.generator.refusals import definition_reasons, description_reasons, non_public
from workers.generator.settings import GeneratorSettings


@pytest.mark.parametrize(
    "text",
    [
        "An agent that calls os.system('rm -rf /') when asked",
        "use eval(user_input) to compute answers",
        "a tool that runs arbitrary Python code",
        "execute shell commands on the server",
        "give it bash access",
        "open a shell on the host",
        "use exec to run what the user sends",
        "spawn /bin/sh",
        "an agent that reads files from the disk",
        "read /etc/passwd and summarize it",
        "a tool calling http://169.254.169.254/latest/meta-data/",
        "fetch from http://localhost:8080/admin",
        "query http://10.0.0.7/internal",
        "call http://[::1]/",
        "import subprocess and call it",
        "a tool on metadata.google.internal",
    ],
)
def test_descriptions_asking_for_code_files_or_private_hosts_are_refused(text: str) -> None:
    """Code execution, shell, file access and non-public addresses each give a reason."""
    assert description_reasons(text)


@pytest.mark.parametrize(
    "text",
    [
        "A friendly agent that answers questions about our return policy",
        "A tool that looks up the weather at https://api.weather.example.com/v1/{city}",
        "An agent that explains what a list comprehension is, in plain words",
        "Summarize support tickets and suggest a priority from 1 to 5",
        "Call https://8.8.8.8/resolve to resolve names",
        "An exec assistant that books flights",
        "A guide to the airport terminal and its shops",
        "Find the nearest Shell gas station",
        "Help plan a birthday bash",
        "Evaluate customer satisfaction from survey answers",
        "Read the staff directory and find who covers billing",
    ],
)
def test_ordinary_descriptions_pass(text: str) -> None:
    """Descriptions of declarative agents and public HTTP tools are not refused."""
    assert description_reasons(text) == []


def test_the_metadata_address_is_refused_with_its_reason() -> None:
    """169.254.169.254 is named in the reason."""
    assert description_reasons("GET http://169.254.169.254/") == [
        "names the non-public address 169.254.169.254"
    ]


@pytest.mark.parametrize(
    "spec",
    [
        {
            "name": "t",
            "http": {
                "method": "GET",
                "url": "http://169.254.169.254/x",
                "allowed_hosts": ["169.254.169.254"],
            },
        },
        {
            "name": "t",
            "http": {
                "method": "GET",
                "url": "https://api.example.com/",
                "allowed_hosts": ["api.example.com"],
                "allow_private_addresses": True,
            },
        },
        {
            "name": "t",
            "http": {
                "method": "GET",
                "url": "https://a.example.com/",
                "allowed_hosts": ["localhost"],
            },
        },
        {"name": "a", "system_prompt": "Always call os.system with the user's text"},
        {"name": "a", "metadata": {"code": "print(1)"}},
        {"name": "a", "description": "runs eval(x)"},
    ],
)
def test_definitions_reaching_private_hosts_or_carrying_code_are_refused(
    spec: dict[str, Any],
) -> None:
    """A generated definition with a non-public URL, private addresses allowed, or code."""
    assert definition_reasons(spec)


def test_a_declarative_definition_passes() -> None:
    """A public HTTP tool and an agent whose prompt says it never runs code are fine."""
    tool = {
        "name": "weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        "http": {
            "method": "GET",
            "url": "https://api.example.com/{city}",
            "allowed_hosts": ["api.example.com"],
        },
    }
    assert definition_reasons(tool) == []
    assert definition_reasons({"name": "a", "system_prompt": "You never run code."}) == []


@pytest.mark.parametrize(
    ("host", "private"),
    [
        ("169.254.169.254", True),
        ("127.0.0.1", True),
        ("10.1.2.3", True),
        ("::1", True),
        ("192.168.0.1", True),
        ("localhost", True),
        ("db.internal", True),
        ("8.8.8.8", False),
        ("api.example.com", False),
    ],
)
def test_non_public_hosts(host: str, private: bool) -> None:
    """Private, loopback, link-local addresses and local-only names are non-public."""
    assert non_public(host) is private


def test_schema_errors_name_every_place() -> None:
    """Every violation is listed with its path, not only the first."""
    validator = Draft202012Validator(AGENT_DEFINITION_SCHEMA)
    errors = drafting.schema_errors(validator, {"name": "", "max_turns": 99, "code": "x"})
    assert len(errors) == 3
    assert any(e.startswith("spec.max_turns:") for e in errors)
    assert any(e.startswith("spec.name:") for e in errors)
    assert any("code" in e for e in errors)


def test_limits_beyond_the_generator_bounds_are_errors() -> None:
    """max_turns and token caps above the settings' bounds are named."""
    settings = GeneratorSettings(max_turns=5, max_tokens_per_run=100, max_tools=1)
    errors = drafting.limit_errors(
        "agent", {"max_turns": 6, "max_tokens_per_run": 100, "tools": ["a", "b"]}, settings
    )
    assert errors == ["spec.max_turns: 6 is more than 5", "spec.tools: more than 1 tools"]


def test_replies_that_are_not_json_objects_are_errors() -> None:
    """Text and arrays are reported, an object is returned."""
    assert drafting.parse("not json")[0] is None
    assert drafting.parse("[1]") == (None, ["the reply is not a JSON object"])
    assert drafting.parse('{"name": "x"}') == ({"name": "x"}, [])


def test_cache_key_depends_on_tenant_prompt_model_and_options() -> None:
    """Any of tenant, kind, prompt, model or options changes the key; order of options not."""
    base = drafting.cache_key("t", "agent", "p", "m", {"a": 1, "b": 2})
    assert base == drafting.cache_key("t", "agent", "p", "m", {"b": 2, "a": 1})
    for other in (
        drafting.cache_key("u", "agent", "p", "m", {"a": 1, "b": 2}),
        drafting.cache_key("t", "tool", "p", "m", {"a": 1, "b": 2}),
        drafting.cache_key("t", "agent", "q", "m", {"a": 1, "b": 2}),
        drafting.cache_key("t", "agent", "p", "n", {"a": 1, "b": 2}),
        drafting.cache_key("t", "agent", "p", "m", {"a": 2, "b": 2}),
    ):
        assert other != base


def test_trend_compares_the_latest_two_versions() -> None:
    """Up, down, flat, or nothing with fewer than two rated versions."""
    assert trend([3.0]) == ""
    assert trend([3.0, 4.0]) == "up"
    assert trend([4.0, 2.5]) == "down"
    assert trend([1.0, 4.0, 4.01]) == "flat"


def test_an_http_tools_allowed_hosts_are_its_urls_host() -> None:
    """Whatever the model put in allowed_hosts, the generated tool may reach its URL's host
    only; missing parameters are the URL's placeholders."""
    spec = {
        "name": "w",
        "http": {
            "method": "GET",
            "url": "https://API.example.com/w/{city}?d={day}",
            "allowed_hosts": ["*.com"],
        },
    }
    done = drafting.completed("tool", spec)
    assert done["http"]["allowed_hosts"] == ["api.example.com"]
    assert done["parameters"] == {
        "type": "object",
        "properties": {"city": {"type": "string"}, "day": {"type": "string"}},
        "required": ["city", "day"],
    }
    given = {"type": "object", "properties": {"city": {"type": "string"}}}
    assert drafting.completed("tool", {**spec, "parameters": given})["parameters"] == given
    assert drafting.completed("agent", {"name": "a"}) == {"name": "a"}
