"""The offline model's answer to a `json_schema` response format: the smallest deterministic
instance of the schema (required properties only, the first branch of a oneOf/anyOf, the
first enum value, the lowest bound, strings built from their pattern).

So a component that asks for structured output (a generator asking for an agent definition)
gets a reply that validates against its schema with no provider configured. Strings say
"offline" wherever the schema allows it, so nobody mistakes the reply for generated text.
"""

from __future__ import annotations

import importlib
import re
from typing import Any

_MARK = "offline"
_MAX_DEPTH = 24
# re's own parser (the module behind `re.compile`): the patterns' syntax exactly as the
# validator reads it. Imported by name: the stdlib types it only under its deprecated alias.
_parser: Any = importlib.import_module("re._parser")
_constants: Any = importlib.import_module("re._constants")


def instance(schema: Any, depth: int = 0) -> Any:
    """A value that `schema` accepts (for the schemas a definition generator uses: objects,
    arrays, strings with patterns and lengths, bounded numbers, enums, oneOf/anyOf/allOf)."""
    if not isinstance(schema, dict) or depth > _MAX_DEPTH:
        return {}
    schema = _merged(schema)
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind is None:
        kind = _implied_type(schema)
    if kind == "object":
        properties = schema.get("properties") or {}
        extra = schema.get("additionalProperties")
        return {
            name: instance(
                properties.get(name, extra if isinstance(extra, dict) else {}), depth + 1
            )
            for name in schema.get("required") or []
        }
    if kind == "array":
        count = int(schema.get("minItems") or 0)
        if schema.get("uniqueItems"):
            count = min(count, 1)  # copies of one instance would not be unique
        return [instance(schema.get("items") or {}, depth + 1) for _ in range(count)]
    if kind == "string":
        return _string(schema)
    if kind in ("integer", "number"):
        return _number(schema, integer=kind == "integer")
    if kind == "boolean":
        return False
    if kind == "null":
        return None
    return {}


def _merged(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema with allOf parts and the first oneOf/anyOf branch folded in."""
    parts = [*schema.get("allOf", [])]
    for key in ("oneOf", "anyOf"):
        if schema.get(key):
            parts.append(schema[key][0])
    if not parts:
        return schema
    out = {k: v for k, v in schema.items() if k not in ("allOf", "oneOf", "anyOf")}
    for part in parts:
        part = _merged(part) if isinstance(part, dict) else {}
        for key, value in part.items():
            if key == "required":
                out["required"] = [*out.get("required", []), *value]
            elif key == "properties":
                out["properties"] = {**out.get("properties", {}), **value}
            else:
                out.setdefault(key, value)
    out["required"] = list(dict.fromkeys(out.get("required", [])))
    return out


def _implied_type(schema: dict[str, Any]) -> str:
    if "properties" in schema or "required" in schema:
        return "object"
    if "items" in schema:
        return "array"
    if "pattern" in schema or "minLength" in schema:
        return "string"
    return "object"


def _string(schema: dict[str, Any]) -> str:
    pattern = schema.get("pattern")
    lowest, highest = int(schema.get("minLength") or 0), schema.get("maxLength")
    candidates = [_MARK]
    if pattern:
        candidates.append(from_pattern(pattern))
    for text in candidates:
        if len(text) < lowest:
            text = (text * (lowest // max(1, len(text)) + 1))[:lowest] if text else "x" * lowest
        if highest is not None:
            text = text[: int(highest)]
        if not pattern or re.search(pattern, text):
            return text
    return candidates[-1]


def _number(schema: dict[str, Any], *, integer: bool) -> float | int:
    value: float = 0
    if "minimum" in schema and value < schema["minimum"]:
        value = schema["minimum"]
    if "exclusiveMinimum" in schema and value <= schema["exclusiveMinimum"]:
        value = schema["exclusiveMinimum"] + 1
    if "maximum" in schema and value > schema["maximum"]:
        value = schema["maximum"]
    return int(value) if integer else value


def from_pattern(pattern: str) -> str:
    """The shortest string the regular expression matches, choosing letters where it may."""
    try:
        return _walk(_parser.parse(pattern))
    except (re.error, RecursionError, TypeError, ValueError):
        return _MARK


def _walk(items: Any) -> str:
    c = _constants
    out: list[str] = []
    for op, arg in items:
        if op is c.LITERAL:
            out.append(chr(arg))
        elif op is c.NOT_LITERAL:
            out.append("a" if arg != ord("a") else "b")
        elif op is c.ANY:
            out.append("a")
        elif op is c.IN:
            out.append(_one_of(arg))
        elif op is c.CATEGORY:
            out.append(_category(arg))
        elif op in (c.MAX_REPEAT, c.MIN_REPEAT, getattr(c, "POSSESSIVE_REPEAT", None)):
            low, _high, sub = arg
            out.append(_walk(sub) * low)
        elif op is c.SUBPATTERN:
            out.append(_walk(arg[-1]))
        elif op is c.BRANCH:
            out.append(_walk(arg[1][0]))
        elif op is c.ATOMIC_GROUP:
            out.append(_walk(arg))
    return "".join(out)


def _category(category: Any) -> str:
    c = _constants
    return {
        c.CATEGORY_DIGIT: "0",
        c.CATEGORY_NOT_DIGIT: "a",
        c.CATEGORY_SPACE: " ",
        c.CATEGORY_NOT_SPACE: "a",
        c.CATEGORY_WORD: "a",
        c.CATEGORY_NOT_WORD: "-",
    }.get(category, "a")


def _one_of(items: Any) -> str:
    c = _constants
    if items and items[0][0] is c.NEGATE:
        rest = items[1:]
        for candidate in "ax0_-.":
            if not re.fullmatch(_set_source(rest), candidate):
                return candidate
        return "~"
    op, arg = items[0]
    if op is c.LITERAL:
        return chr(arg)
    if op is c.RANGE:
        low, high = arg
        return "a" if low <= ord("a") <= high else chr(low)
    if op is c.CATEGORY:
        return _category(arg)
    return "a"


def _set_source(items: Any) -> str:
    """A character class matching the set's members (to test a negated set's candidates)."""
    c = _constants
    parts = []
    for op, arg in items:
        if op is c.LITERAL:
            parts.append(re.escape(chr(arg)))
        elif op is c.RANGE:
            parts.append(f"{re.escape(chr(arg[0]))}-{re.escape(chr(arg[1]))}")
        elif op is c.CATEGORY:
            parts.append(
                {
                    c.CATEGORY_DIGIT: r"\d",
                    c.CATEGORY_NOT_DIGIT: r"\D",
                    c.CATEGORY_SPACE: r"\s",
                    c.CATEGORY_NOT_SPACE: r"\S",
                    c.CATEGORY_WORD: r"\w",
                    c.CATEGORY_NOT_WORD: r"\W",
                }.get(arg, "")
            )
    return f"[{''.join(parts)}]" if parts else "(?!)"
