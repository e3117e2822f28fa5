"""Field checks every component uses, raising the contract's errors with the field named.

A check either returns the value (converted where the caller needs another form: a Struct as
plain JSON, a Timestamp as a datetime) or raises `BadRequest` (400) or `PayloadTooLarge` (413)
with `details={"field": <path>}`; paths look like `messages[3].content` or `page.page_token`.
Handlers run their checks before anything is written, so a request that fails one changes
nothing.

    from workers.runtime import validation as check

    name = check.identifier(req.name, "name")
    body = check.text(req.content, "content", required=True, max_bytes=limit)
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from collections.abc import Collection, Mapping, Sized
from typing import Any, overload

from google.protobuf import struct_pb2
from google.protobuf.timestamp_pb2 import Timestamp

from schemas.errors import BadRequest, PayloadTooLarge
from schemas.v1.common_pb2 import PageRequest

ID_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}"
ID = re.compile(ID_PATTERN + r"\Z")
# One page-size rule for the fleet (Google AIP-158: a size above the maximum is coerced to it).
DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE = 50, 200
MAX_STRUCT_BYTES = 64 * 1024
MAX_DEPTH = 32
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_CONTROL_BUT_WHITESPACE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _bad(message: str, field: str, **details: Any) -> BadRequest:
    return BadRequest(message, details={"field": field, **details})


def text(
    value: str,
    field: str,
    *,
    required: bool = False,
    max_bytes: int | None = None,
    max_chars: int | None = None,
    multiline: bool = True,
    control: bool = False,
) -> str:
    """Text a client sent: NUL never (PostgreSQL text cannot hold it); other control characters
    only tab and line breaks, and only when `multiline`, unless `control` (verbatim payloads such
    as a template or a provider's error text keep them). Too long in characters is 400, in bytes
    413 (a body limit)."""
    if required and not value:
        raise _bad(f"{field} is required", field)
    if max_chars is not None and len(value) > max_chars:
        raise _bad(f"{field} is longer than {max_chars} characters", field, limit=max_chars)
    if max_bytes is not None and len(value) * 4 > max_bytes and len(value.encode()) > max_bytes:
        raise PayloadTooLarge(
            f"{field} is larger than the component accepts",
            details={"field": field, "limit_bytes": max_bytes},
        )
    if control:
        if "\x00" in value:
            raise _bad(f"{field} contains a NUL character", field)
        return value
    pattern = _CONTROL_BUT_WHITESPACE if multiline else _CONTROL
    if pattern.search(value):
        raise _bad(f"{field} contains control characters", field)
    return value


def identifier(
    value: str, field: str, *, pattern: re.Pattern[str] = ID, required: bool = True
) -> str:
    """An id or name a client chose (default `ID_PATTERN`); "" passes when not required."""
    if not value:
        if required:
            raise _bad(f"{field} is required", field)
        return value
    if not pattern.match(value):
        shown = pattern.pattern.removesuffix(r"\Z")
        raise _bad(f"{field} must match {shown}", field, pattern=shown)
    return value


def number(
    value: float, field: str, *, minimum: float | None = None, maximum: float | None = None
) -> float:
    """A finite number within [minimum, maximum]."""
    if not math.isfinite(value):
        raise _bad(f"{field} must be a finite number", field)
    _bounds(value, field, minimum, maximum)
    return value


def integer(
    value: int, field: str, *, minimum: int | None = None, maximum: int | None = None
) -> int:
    _bounds(value, field, minimum, maximum)
    return value


def _bounds(value: float, field: str, minimum: float | None, maximum: float | None) -> None:
    if minimum is not None and value < minimum:
        raise _bad(f"{field} must be at least {minimum:g}", field, minimum=minimum)
    if maximum is not None and value > maximum:
        raise _bad(f"{field} must be at most {maximum:g}", field, maximum=maximum)


def choice(value: str, field: str, allowed: Collection[str]) -> str:
    if value not in allowed:
        names = sorted(allowed)
        raise _bad(f"{field} must be one of {', '.join(names)}", field, allowed=names)
    return value


def items(sequence: Sized, field: str, *, maximum: int, minimum: int = 0) -> None:
    """How many entries a repeated field may have: too many is 413, too few 400."""
    if len(sequence) > maximum:
        raise PayloadTooLarge(
            f"{field} has more entries than the component accepts",
            details={"field": field, "limit": maximum},
        )
    if len(sequence) < minimum:
        raise _bad(f"{field} needs at least {minimum} entries", field, minimum=minimum)


def struct(
    value: struct_pb2.Struct,
    field: str,
    *,
    max_bytes: int = MAX_STRUCT_BYTES,
    max_depth: int = MAX_DEPTH,
) -> dict[str, Any]:
    """A Struct as plain JSON (integral numbers as ints), refused when PostgreSQL's jsonb cannot
    hold it (NUL, non-finite numbers), when nested deeper than `max_depth` or when its JSON is
    over `max_bytes`."""
    plain = _struct(value, field, max_depth)
    _json_size(plain, field, max_bytes)
    return plain


def json_value(
    value: struct_pb2.Value,
    field: str,
    *,
    max_bytes: int = MAX_STRUCT_BYTES,
    max_depth: int = MAX_DEPTH,
) -> Any:
    """`struct` for a `google.protobuf.Value`."""
    plain = _value(value, field, max_depth)
    _json_size(plain, field, max_bytes)
    return plain


@overload
def to_timestamp(moment: dt.datetime) -> Timestamp: ...
@overload
def to_timestamp(moment: None) -> None: ...
def to_timestamp(moment: dt.datetime | None) -> Timestamp | None:
    """A reply's Timestamp; None stays None, so an optional field is left unset (not 1970)."""
    if moment is None:
        return None
    out = Timestamp()
    out.FromDatetime(moment)
    return out


def to_struct(value: Mapping[str, Any]) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    out.update(value)
    return out


def _json_size(plain: Any, field: str, max_bytes: int) -> None:
    if len(json.dumps(plain, separators=(",", ":")).encode()) > max_bytes:
        raise PayloadTooLarge(
            f"{field} is larger than the component accepts",
            details={"field": field, "limit_bytes": max_bytes},
        )


def _struct(value: struct_pb2.Struct, field: str, depth: int) -> dict[str, Any]:
    if depth <= 0:
        raise _bad(f"{field} is nested too deeply", field)
    out = {}
    for key, item in value.fields.items():
        if "\x00" in key:
            raise _bad(f"{field} has a key with a NUL character", field)
        out[key] = _value(item, field, depth - 1)
    return out


def _value(value: struct_pb2.Value, field: str, depth: int) -> Any:
    kind = value.WhichOneof("kind")
    if kind == "struct_value":
        return _struct(value.struct_value, field, depth)
    if kind == "list_value":
        if depth <= 0:
            raise _bad(f"{field} is nested too deeply", field)
        return [_value(v, field, depth - 1) for v in value.list_value.values]
    if kind == "number_value":
        number = value.number_value
        if not math.isfinite(number):
            raise _bad(f"{field} holds a number that is not finite", field)
        return int(number) if number.is_integer() and abs(number) < 2**53 else number
    if kind == "string_value":
        if "\x00" in value.string_value:
            raise _bad(f"{field} contains a NUL character", field)
        return value.string_value
    if kind == "bool_value":
        return value.bool_value
    return None


def jsonb(value: Any, field: str) -> Any:
    """`value` (plain JSON, such as a message in its JSON mapping) when PostgreSQL can store it:
    400 naming the path of the first string or key holding a NUL character, or of a number
    that is not finite (`struct` checks a Struct so as it converts it)."""
    if isinstance(value, str):
        if "\x00" in value:
            raise _bad(f"{field} contains a NUL character", field)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise _bad(f"{field} holds a number that is not finite", field)
    elif isinstance(value, dict):
        for key, item in value.items():
            if "\x00" in key:
                raise _bad(f"{field} has a key with a NUL character", field)
            jsonb(item, f"{field}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            jsonb(item, f"{field}[{i}]")
    return value


def storable(text: str) -> str:
    """`text` with every NUL character replaced by U+FFFD: PostgreSQL stores no NUL, and what a
    model or a tool produced is kept as well as it can be rather than failing its request
    (what a client sends is refused instead: `text`, `struct`, `jsonb`)."""
    return text.replace("\x00", "\ufffd") if "\x00" in text else text


def storable_json(value: Any) -> Any:
    """`storable` for every string and key of a plain JSON value."""
    if isinstance(value, str):
        return storable(value)
    if isinstance(value, dict):
        return {storable(k): storable_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [storable_json(v) for v in value]
    return value


def timestamp(ts: Timestamp, field: str) -> dt.datetime:
    """A Timestamp as an aware UTC datetime; one datetime cannot represent is 400."""
    try:
        return ts.ToDatetime(tzinfo=dt.UTC)
    except (ValueError, OverflowError):
        raise _bad(f"{field} is out of range", field) from None


def time_range(
    since: Timestamp | None,
    until: Timestamp | None,
    *,
    default: dt.timedelta,
    now: dt.datetime | None = None,
) -> tuple[dt.datetime, dt.datetime]:
    """[since, until) from optional Timestamps (None: not given): a missing `until` is now, a
    missing `since` is `default` before `until`; `since` not before `until` is 400."""
    end = timestamp(until, "until") if until is not None else (now or dt.datetime.now(dt.UTC))
    start = timestamp(since, "since") if since is not None else end - default
    if start >= end:
        raise _bad("since must be before until", "since")
    return start, end


def page_size(page: PageRequest) -> int:
    """The fleet's page size: 0 is `DEFAULT_PAGE_SIZE`, more than `MAX_PAGE_SIZE` is coerced to
    it (AIP-158), so a client asking for a large page gets the largest one."""
    size = page.page_size
    if size == 0:
        return DEFAULT_PAGE_SIZE
    return min(size, MAX_PAGE_SIZE)
