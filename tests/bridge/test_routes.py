"""Mapping HTTP onto request messages as google.api.http rules declare (no servers needed)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from google.api import http_pb2

from bridge.mapping import request_payload
from bridge.routes import Binding, _binding, compile_template
from schemas.errors import BadRequest
from schemas.registry import rpc
from tests.support import echo  # registers the echo service

ECHO = rpc("echo", "echo")
assert ECHO is not None
assert echo.component is not None


def binding(**rule: Any) -> Binding:
    assert ECHO is not None
    return _binding(ECHO, http_pb2.HttpRule(**rule))


def payload(b: Binding, path: dict[str, str], query: str = "", body: bytes = b"") -> Any:
    return json.loads(request_payload(b, path, query.encode(), body))


def test_templates_compile_to_raw_path_matchers() -> None:
    """Literals, `*`, `**`, variables with sub-patterns, dotted fields and a trailing verb."""
    pattern, variables, openapi = compile_template("/v1/{name=shelves/*}/books/{nested.label}:pub")
    assert variables == ["name", "nested.label"]
    assert openapi == "/v1/{name}/books/{nested.label}:pub"
    found = pattern.match("/v1/shelves/s1/books/b%2F2:pub")
    assert found is not None
    assert found.groups() == ("shelves/s1", "b%2F2")
    assert pattern.match("/v1/shelves/s1/x/books/b:pub") is None
    assert pattern.match("/v1/shelves/s1/books/b") is None
    rest, names, _ = compile_template("/files/{path=**}")
    assert names == ["path"]
    match = rest.match("/files/a/b/c.txt")
    assert match is not None
    assert match.group("v0") == "a/b/c.txt"


def test_malformed_templates_fail_at_start() -> None:
    """A template the grammar does not allow is refused when routes are built."""
    for bad in ("no-slash", "/a/{bad name}", "/a/{x=y{z}}"):
        with pytest.raises(ValueError, match=r"must start|bad "):
            compile_template(bad)


def test_path_variables_must_be_singular_scalars() -> None:
    """Binding a repeated or message field to a path segment fails at start."""
    with pytest.raises(ValueError, match="singular scalar"):
        binding(get="/x/{items}")
    with pytest.raises(ValueError, match="singular scalar"):
        binding(get="/x/{nested}")
    with pytest.raises(ValueError, match="no field"):
        binding(get="/x/{missing}")


def test_path_and_query_fill_the_message_with_types_converted() -> None:
    """Path and query strings become typed fields: numbers, bools, repeated, nested."""
    b = binding(get="/x/{text}")
    got = payload(b, {"text": "a b"}, "number=42&crash=true&items=x&items=y&nested.label=n")
    assert got["text"] == "a b"
    assert got["number"] == "42"
    assert got["crash"] is True
    assert got["items"] == ["x", "y"]
    assert got["nested"] == {"label": "n"}


@pytest.mark.parametrize(
    "query",
    [
        "bogus=1",  # unknown field
        "text=again",  # bound by the path
        "crash=yes",  # not a bool
        "number=12x",  # not an integer
        "number=1&number=2",  # a singular field twice
        "any=1",  # a message: not settable from the query
    ],
)
def test_bad_query_parameters_are_400(query: str) -> None:
    """What the query may not set, or sets wrongly, is INVALID_ARGUMENT."""
    with pytest.raises(BadRequest):
        payload(binding(get="/x/{text}"), {"text": "t"}, query)


def test_body_field_rule_maps_the_body_onto_that_field() -> None:
    """With `body: "nested"` the JSON body is the value of `nested`; the rest comes from the
    path and query."""
    b = binding(post="/x/{text}", body="nested")
    got = payload(b, {"text": "t"}, "number=7", b'{"label": "from body"}')
    assert got["nested"] == {"label": "from body"}
    assert (got["text"], got["number"]) == ("t", "7")
    with pytest.raises(BadRequest):
        payload(b, {"text": "t"}, "nested.label=q", b"{}")  # the body's field is not a query


def test_whole_body_rule_merges_path_and_refuses_conflicts() -> None:
    """With `body: "*"` the path fills its fields; the same value in the body is fine, another
    is a 400, and no query parameters are taken."""
    b = binding(post="/x/{text}", body="*")
    assert payload(b, {"text": "p"}, "", b'{"number": 3}') == {
        **payload(b, {"text": "p"}, "", b'{"text": "p", "number": 3}'),
    }
    with pytest.raises(BadRequest, match="differs"):
        payload(b, {"text": "p"}, "", b'{"text": "q"}')
    with pytest.raises(BadRequest, match="body"):
        payload(b, {"text": "p"}, "number=1", b"{}")
    for bad in (b"[1]", b'{"text": "p", "text": "p"}', b"{", b'{"nope": 1}'):
        with pytest.raises(BadRequest):
            payload(b, {"text": "p"}, "", bad)


def test_whole_body_without_anything_to_merge_is_forwarded_as_sent() -> None:
    """Nothing to merge: the bytes go to the worker untouched (its runtime validates them)."""
    b = binding(post="/x", body="*")
    assert request_payload(b, {}, b"", b'{"text":"as sent"}') == b'{"text":"as sent"}'
