"""The offline model's structured output: the smallest instance of a JSON Schema, valid."""

from __future__ import annotations

import re
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from workers.agent.definitions import AGENT_DEFINITION_SCHEMA, TOOL_DEFINITION_SCHEMA
from workers.gateway.schema_instance import from_pattern, instance


@pytest.mark.parametrize(
    "schema",
    [
        AGENT_DEFINITION_SCHEMA,
        TOOL_DEFINITION_SCHEMA,
        {
            "type": "object",
            "required": ["n", "xs"],
            "properties": {
                "n": {"type": "integer", "minimum": 3, "maximum": 9},
                "xs": {
                    "type": "array",
                    "minItems": 2,
                    "items": {"type": "string", "minLength": 10},
                },
            },
        },
        {"anyOf": [{"type": "object", "required": ["a"]}, {"type": "string"}]},
        {"type": ["null", "number"], "exclusiveMinimum": 0.5},
        {"enum": ["b", "c"]},
        {"type": "string", "maxLength": 3},
    ],
)
def test_instance_validates_against_its_schema(schema: dict[str, Any]) -> None:
    """Whatever the schema's shape, the instance it yields is one the schema accepts."""
    assert list(Draft202012Validator(schema).iter_errors(instance(schema))) == []


def test_strings_say_offline_where_the_schema_allows() -> None:
    """A string with no pattern, or a pattern "offline" matches, is "offline"."""
    assert instance(AGENT_DEFINITION_SCHEMA) == {"name": "offline"}


@pytest.mark.parametrize(
    "pattern",
    [
        r"^https?://[^\s]+$",
        r"^[a-z][a-z0-9_]{0,62}\.[a-z][a-z0-9_]{0,62}$",
        r"^AIFLEET_AGENT_SECRET_[A-Z0-9_]{1,64}$",
        r"^(foo|bar)-\d{3}\W$",
        r"^[^a]x+?$",
    ],
)
def test_strings_built_from_a_pattern_match_it(pattern: str) -> None:
    """The shortest string the pattern's parse tree describes is matched by the pattern."""
    assert re.search(pattern, from_pattern(pattern))
