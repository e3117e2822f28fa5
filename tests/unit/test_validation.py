"""The kit's field checks: each returns the value or names the field in a 400 or 413."""

from __future__ import annotations

import datetime as dt
import math
import re
from typing import Any

import pytest
from google.protobuf import struct_pb2
from google.protobuf.timestamp_pb2 import Timestamp

from schemas.errors import BadRequest, PayloadTooLarge
from schemas.v1.common_pb2 import PageRequest
from workers.runtime import validation as check


def test_text_refuses_nul_and_control_characters_naming_the_field() -> None:
    """NUL is never text; other control characters only as tab and line breaks."""
    assert check.text("a\tb\nc\r\n", "body") == "a\tb\nc\r\n"
    for bad in ("a\x00b", "a\x1bb", "\x7f"):
        with pytest.raises(BadRequest) as raised:
            check.text(bad, "body")
        assert raised.value.details == {"field": "body"}


def test_single_line_text_refuses_line_breaks() -> None:
    """multiline=False is for names and ids: no control character at all."""
    with pytest.raises(BadRequest):
        check.text("a\nb", "title", multiline=False)


def test_verbatim_text_keeps_control_characters_but_nul() -> None:
    """control=True keeps what a payload holds verbatim (a template, a provider's error)."""
    assert check.text("\x1b[1m", "text", control=True) == "\x1b[1m"
    with pytest.raises(BadRequest, match="NUL"):
        check.text("\x00", "text", control=True)


def test_text_length_in_characters_is_400_and_in_bytes_413() -> None:
    """A name over its length is a bad request; a body over its size a payload too large."""
    with pytest.raises(BadRequest) as too_long:
        check.text("abcd", "name", max_chars=3)
    assert too_long.value.details["limit"] == 3
    check.text("é" * 2, "body", max_bytes=4)
    with pytest.raises(PayloadTooLarge) as too_big:
        check.text("é" * 3, "body", max_bytes=5)
    assert too_big.value.details == {"field": "body", "limit_bytes": 5}


def test_required_text_and_identifiers_must_be_given() -> None:
    """An empty required value is a 400 saying so."""
    with pytest.raises(BadRequest, match="content is required"):
        check.text("", "content", required=True)
    with pytest.raises(BadRequest, match="id is required"):
        check.identifier("", "id")
    assert check.identifier("", "id", required=False) == ""


@pytest.mark.parametrize("value", ["doc-1", "a.b:c_d", "A" * 128])
def test_identifiers_of_the_default_pattern_pass(value: str) -> None:
    """Letters, digits and `_ . : -`, starting alphanumeric, up to 128 characters."""
    assert check.identifier(value, "id") == value


@pytest.mark.parametrize("value", ["-a", "a b", "a/b", "A" * 129, "é"])
def test_other_identifiers_are_refused_with_the_pattern(value: str) -> None:
    """The 400 carries the pattern the id must match."""
    with pytest.raises(BadRequest) as raised:
        check.identifier(value, "id")
    assert raised.value.details["pattern"] == check.ID_PATTERN


def test_identifier_takes_a_component_pattern() -> None:
    """A component with its own id rule passes its compiled pattern."""
    lower = re.compile(r"[a-z]+\Z")
    assert check.identifier("abc", "label", pattern=lower) == "abc"
    with pytest.raises(BadRequest):
        check.identifier("ABC", "label", pattern=lower)


def test_numbers_must_be_finite_and_within_bounds() -> None:
    """NaN and infinities are refused, and so is anything outside [minimum, maximum]."""
    assert check.number(0.5, "threshold", minimum=0, maximum=1) == 0.5
    for bad in (math.nan, math.inf, -0.1, 1.1):
        with pytest.raises(BadRequest) as raised:
            check.number(bad, "threshold", minimum=0, maximum=1)
        assert raised.value.details["field"] == "threshold"
    with pytest.raises(BadRequest, match="at most 100"):
        check.integer(101, "top_k", minimum=1, maximum=100)


def test_choice_lists_what_is_allowed() -> None:
    with pytest.raises(BadRequest) as raised:
        check.choice("weekly", "period", ("day", "month"))
    assert raised.value.details == {"field": "period", "allowed": ["day", "month"]}


def test_too_many_items_is_413_and_too_few_400() -> None:
    with pytest.raises(PayloadTooLarge):
        check.items([1, 2, 3], "texts", maximum=2)
    with pytest.raises(BadRequest):
        check.items([], "texts", maximum=2, minimum=1)


def _struct(value: dict[str, Any]) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    out.update(value)
    return out


def test_struct_becomes_plain_json_with_integral_numbers_as_ints() -> None:
    """What jsonb stores: {"n": 3} stays 3, not 3.0."""
    plain = check.struct(_struct({"n": 3, "x": 0.5, "l": [1, "a", None, True]}), "metadata")
    assert plain == {"n": 3, "x": 0.5, "l": [1, "a", None, True]}
    assert isinstance(plain["n"], int)


@pytest.mark.parametrize(
    "value", [{"k": "a\x00"}, {"a\x00": 1}, {"n": math.inf}, {"l": [math.nan]}]
)
def test_struct_refuses_what_jsonb_cannot_hold(value: dict[str, object]) -> None:
    with pytest.raises(BadRequest):
        check.struct(_struct(value), "metadata")


@pytest.mark.parametrize(
    ("value", "path"),
    [
        ({"a": {"b": ["ok", "x\x00"]}}, "agent.a.b[1]"),
        ({"a": {"k\x00": 1}}, "agent.a"),
        ({"n": [1.5, math.inf]}, "agent.n[1]"),
        ("\x00", "agent"),
    ],
)
def test_jsonb_names_the_path_of_what_postgresql_cannot_store(value: Any, path: str) -> None:
    """A NUL in a string or key, or a number that is not finite: 400 with its path."""
    with pytest.raises(BadRequest) as raised:
        check.jsonb(value, "agent")
    assert raised.value.details["field"] == path


def test_jsonb_returns_storable_values_unchanged() -> None:
    """Nested JSON with no NUL and finite numbers passes as it is."""
    value = {"a": [1, 2.5, "x\ny", None, True, {"b": "c"}], "": ""}
    assert check.jsonb(value, "agent") is value


def test_storable_replaces_nul_characters_in_text_and_json() -> None:
    """What a model or tool produced keeps its text, NUL characters as U+FFFD, keys included."""
    assert check.storable("a\x00b\x00") == "a\ufffdb\ufffd"
    assert check.storable("plain") == "plain"
    value = {"k\x00": ["x\x00", 1, None, {"n": "\x00"}], "ok": True}
    assert check.storable_json(value) == {
        "k\ufffd": ["x\ufffd", 1, None, {"n": "\ufffd"}],
        "ok": True,
    }
    check.jsonb(check.storable_json(value), "value")  # now PostgreSQL can store it


def test_struct_refuses_deep_nesting_and_large_documents() -> None:
    """Nesting beyond max_depth is 400; JSON over max_bytes is 413."""
    nested: dict[str, object] = {"leaf": 1}
    for _ in range(10):
        nested = {"n": nested}
    with pytest.raises(BadRequest, match="nested too deeply"):
        check.struct(_struct(nested), "metadata", max_depth=5)
    assert check.struct(_struct(nested), "metadata", max_depth=11)
    with pytest.raises(PayloadTooLarge):
        check.struct(_struct({"k": "x" * 100}), "metadata", max_bytes=50)


def test_time_range_fills_what_is_missing_and_refuses_an_empty_range() -> None:
    now = dt.datetime(2026, 12, 3, 12, tzinfo=dt.UTC)
    since, until = check.time_range(None, None, default=dt.timedelta(hours=1), now=now)
    assert (since, until) == (now - dt.timedelta(hours=1), now)
    start = Timestamp()
    start.FromDatetime(now)
    with pytest.raises(BadRequest, match="since must be before until"):
        check.time_range(start, start, default=dt.timedelta(hours=1))


def test_out_of_range_timestamp_is_400() -> None:
    with pytest.raises(BadRequest):
        check.timestamp(Timestamp(seconds=10**12), "occurred_at")


@pytest.mark.parametrize(
    ("asked", "given"), [(0, 50), (1, 1), (200, 200), (201, 200), (10**6, 200)]
)
def test_one_page_size_rule_for_the_fleet(asked: int, given: int) -> None:
    """0 means the default (50); above the maximum (200) a page is coerced to it (AIP-158)."""
    assert check.page_size(PageRequest(page_size=asked)) == given


def test_to_timestamp_leaves_a_missing_moment_unset() -> None:
    """None stays None (an optional reply field left unset, not 1970); a moment converts."""
    moment = dt.datetime(2026, 12, 4, 3, 20, 1, 250000, tzinfo=dt.UTC)
    assert check.to_timestamp(None) is None
    ts = check.to_timestamp(moment)
    assert ts.ToDatetime(tzinfo=dt.UTC) == moment
