"""Metadata filters compiled to SQL conditions on a jsonb column.

A filter is a JSON object; every entry is a condition on one top-level metadata key and all of
them must hold:

    {"lang": "en"}                          equality (string, number, bool or null)
    {"year": {"$gte": 2000, "$lt": 2010}}   ranges on numbers, or on strings (byte order)
    {"tag": {"$in": ["a", "b"]}}            one of
    {"lang": {"$eq": "en"}}

Keys and values are always bound parameters, never SQL text. A range compares only values of
the bound's JSON type (a string bound never matches a number), inside a CASE, so a document
whose value has another type is simply not matched instead of failing the query with a cast
error. Anything else (unknown operator, nested object as a value, empty `$in`, a key that is not
[A-Za-z0-9_.-]{1,64}) is a `BadRequest` naming the filter.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

from schemas.errors import BadRequest

KEY_PATTERN = r"[A-Za-z0-9_.-]{1,64}"
_KEY = re.compile(KEY_PATTERN + r"\Z")
RANGE_OPERATORS = {"$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}
OPERATORS = frozenset({"$eq", "$in", *RANGE_OPERATORS})
MAX_CONDITIONS = 32
MAX_IN_VALUES = 256


@dataclass
class Compiled:
    """SQL conditions joined by AND (`TRUE` when empty) and their parameters, numbered from
    the `first_param` given to `compile_filters`."""

    sql: str
    params: list[Any] = field(default_factory=list)


def _bad(message: str, field_path: str) -> BadRequest:
    return BadRequest(message, details={"field": field_path})


def _scalar(value: Any, field_path: str) -> Any:
    if isinstance(value, dict | list):
        raise _bad(f"{field_path} must be a string, number, bool or null", field_path)
    if isinstance(value, float) and not math.isfinite(value):
        raise _bad(f"{field_path} must be a finite number", field_path)
    return value


def compile_filters(
    filters: dict[str, Any], *, column: str, first_param: int, field: str = "metadata_filters"
) -> Compiled:
    """Conditions on `column` (a trusted SQL expression of type jsonb) for `filters`."""
    if len(filters) > MAX_CONDITIONS:
        raise _bad(f"at most {MAX_CONDITIONS} filter keys", field)
    out = Compiled("TRUE")
    conditions: list[str] = []

    def param(value: Any) -> str:
        out.params.append(value)
        return f"${first_param + len(out.params) - 1}"

    for key, spec in sorted(filters.items()):
        path = f"{field}.{key}"
        if not _KEY.match(key):
            raise _bad(f"filter key {key!r} must match {KEY_PATTERN}", path)
        if not isinstance(spec, dict):
            value = _scalar(spec, path)
            conditions.append(f"{column} @> {param(json.dumps({key: value}))}::jsonb")
            continue
        if not spec:
            raise _bad(f"{path} names no operator", path)
        for op, operand in sorted(spec.items()):
            op_path = f"{path}.{op}"
            if op not in OPERATORS:
                raise _bad(
                    f"unknown filter operator {op!r}; use one of {', '.join(sorted(OPERATORS))}",
                    op_path,
                )
            if op == "$eq":
                value = _scalar(operand, op_path)
                conditions.append(f"{column} @> {param(json.dumps({key: value}))}::jsonb")
            elif op == "$in":
                if not isinstance(operand, list) or not operand:
                    raise _bad(f"{op_path} must be a non-empty list", op_path)
                if len(operand) > MAX_IN_VALUES:
                    raise _bad(f"{op_path} holds more than {MAX_IN_VALUES} values", op_path)
                values = [json.dumps(_scalar(v, f"{op_path}[{i}]")) for i, v in enumerate(operand)]
                conditions.append(f"({column} -> {param(key)}) = ANY({param(values)}::jsonb[])")
            else:
                conditions.append(_range(column, key, RANGE_OPERATORS[op], operand, op_path, param))
    if conditions:
        out.sql = " AND ".join(conditions)
    return out


def _range(column: str, key: str, sql_op: str, bound: Any, path: str, param: Any) -> str:
    if isinstance(bound, bool) or not isinstance(bound, int | float | str):
        raise _bad(f"{path} must be a number or a string", path)
    k = param(key)
    if isinstance(bound, str):
        value = (
            f"CASE WHEN jsonb_typeof({column} -> {k}) = 'string'"
            f' THEN ({column} ->> {k}) COLLATE "C" END'
        )
        return f'{value} {sql_op} ({param(bound)}::text COLLATE "C")'
    if not math.isfinite(bound):
        raise _bad(f"{path} must be a finite number", path)
    value = (
        f"CASE WHEN jsonb_typeof({column} -> {k}) = 'number' THEN ({column} -> {k})::numeric END"
    )
    return f"{value} {sql_op} {param(str(bound))}::numeric"
