"""Subject grammar and tenant-token rules (DESIGN §3): every name on the wire comes from here."""

from __future__ import annotations

import pytest

import subjects
from schemas.errors import BadRequest
from subjects import (
    Subject,
    check_name,
    check_tenant,
    dlq_subject,
    event_subject,
    filter_subject,
    is_valid_tenant,
    job_subject,
    listen_subject,
    parse,
    request_subject,
    template,
)

VALID_TENANTS = [
    "a",
    "0",
    "acme",
    "acme-eu",
    "acme_eu",
    "t42",
    "42",
    "a-",
    "a_",
    "a" * 63,
    "0" + "z" * 62,
]

INVALID_TENANTS = [
    "",
    "Acme",
    "ACME",
    "acmE",
    "a.b",
    "acme.",
    ".acme",
    "*",
    ">",
    "a*",
    "a>",
    "-acme",
    "_acme",
    "a b",
    "a\tb",
    "acme\n",
    "\nacme",
    "a/b",
    "a:b",
    "a{b}",
    "café",
    "a" * 64,
    "a" * 200,
]


@pytest.mark.parametrize("tenant", VALID_TENANTS)
def test_valid_tenant_tokens_are_accepted(tenant: str) -> None:
    """Lowercase letters, digits, `-` and `_`, starting alphanumeric, up to 63 characters."""
    assert is_valid_tenant(tenant)
    assert check_tenant(tenant) == tenant


@pytest.mark.parametrize("tenant", INVALID_TENANTS)
def test_invalid_tenant_tokens_are_rejected_as_bad_request(tenant: str) -> None:
    """Uppercase, dots, wildcards, leading `-`/`_`, 64+ characters and empty are refused."""
    assert not is_valid_tenant(tenant)
    with pytest.raises(BadRequest) as raised:
        check_tenant(tenant)
    assert raised.value.status == 400
    assert raised.value.details["pattern"] == subjects.TENANT_PATTERN


def test_invalid_tenant_detail_is_truncated() -> None:
    """The error's detail carries at most 80 characters of what the caller sent."""
    with pytest.raises(BadRequest) as raised:
        check_tenant("X" * 500)
    assert raised.value.details["tenant"] == "X" * 80


def test_subjects_follow_the_grammar() -> None:
    """`ai.v1.<tenant>.<kind>.<component>.<name>` for requests, jobs, events and the DLQ."""
    assert request_subject("acme", "cache", "get") == "ai.v1.acme.req.cache.get"
    assert job_subject("acme", "rag", "ingest") == "ai.v1.acme.job.rag.ingest"
    assert event_subject("acme", "cache", "invalidated") == "ai.v1.acme.evt.cache.invalidated"
    assert dlq_subject("acme", "rag", "ingest") == "ai.v1.acme.dlq.rag.ingest"


@pytest.mark.parametrize("tenant", ["*", ">", "a.b", "Acme", ""])
def test_building_a_subject_refuses_an_invalid_tenant(tenant: str) -> None:
    """No subject is ever built with a wildcard or otherwise invalid tenant token."""
    with pytest.raises(BadRequest):
        request_subject(tenant, "cache", "get")
    with pytest.raises(BadRequest):
        event_subject(tenant, "cache", "invalidated")


def test_listen_subject_covers_every_tenant_of_one_component() -> None:
    """Workers subscribe with a tenant wildcard; the name defaults to every op."""
    assert listen_subject("req", "cache", "get") == "ai.v1.*.req.cache.get"
    assert listen_subject("job", "rag") == "ai.v1.*.job.rag.>"


def test_parse_splits_a_fleet_subject() -> None:
    """parse() returns tenant, kind, component and name."""
    parsed = parse("ai.v1.acme.evt.cache.invalidated")
    assert parsed == Subject("acme", "evt", "cache", "invalidated")
    assert (parsed.tenant, parsed.kind, parsed.component, parsed.name) == (
        "acme",
        "evt",
        "cache",
        "invalidated",
    )


def test_parse_inverts_subject_building() -> None:
    """Parsing a built subject gives back what built it."""
    assert parse(request_subject("t-1", "cache", "set")) == Subject("t-1", "req", "cache", "set")


@pytest.mark.parametrize(
    "subj",
    [
        "ai.v2.acme.req.cache.get",
        "xx.v1.acme.req.cache.get",
        "ai.v1.acme.req.cache",
        "ai.v1.acme.req.cache.get.extra",
        "ai.v1",
        "",
        "ai.v1.ACME.req.cache.get",
        "ai.v1.*.req.cache.get",
        "ai.v1..req.cache.get",
    ],
)
def test_parse_rejects_what_is_not_a_fleet_subject(subj: str) -> None:
    """Wrong prefix, wrong token count or an invalid tenant is a BadRequest."""
    with pytest.raises(BadRequest):
        parse(subj)


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({}, "ai.v1.*.evt.>"),
        ({"tenant": "acme"}, "ai.v1.acme.evt.>"),
        ({"component": "cache"}, "ai.v1.*.evt.cache.>"),
        ({"tenant": "acme", "component": "cache"}, "ai.v1.acme.evt.cache.>"),
        ({"component": "cache", "name": "invalidated"}, "ai.v1.*.evt.cache.invalidated"),
        ({"name": "invalidated"}, "ai.v1.*.evt.*.invalidated"),
        (
            {"tenant": "acme", "component": "cache", "name": "invalidated"},
            "ai.v1.acme.evt.cache.invalidated",
        ),
    ],
)
def test_filter_subject_uses_wildcards_for_what_is_not_given(
    kwargs: dict[str, str], expected: str
) -> None:
    """None means any: `*` for a middle token, `>` for the open tail."""
    assert filter_subject("evt", **kwargs) == expected


@pytest.mark.parametrize("tenant", ["*", ">", "a.b", "Acme"])
def test_filter_subject_refuses_an_invalid_tenant(tenant: str) -> None:
    """A tenant filter must be one valid token: a wildcard cannot sneak in as a tenant."""
    with pytest.raises(BadRequest):
        filter_subject("evt", tenant=tenant)


def test_template_leaves_the_tenant_as_a_placeholder() -> None:
    """Span names and docs use the subject with `{tenant}` in place of the token."""
    assert template("req", "rag", "query") == "ai.v1.{tenant}.req.rag.query"
    assert template("evt", "cache", "invalidated") == "ai.v1.{tenant}.evt.cache.invalidated"


@pytest.mark.parametrize("name", ["get", "generate_stream", "a1", "x" * 63])
def test_valid_component_and_op_names(name: str) -> None:
    """Component, op and event names are lowercase snake_case tokens."""
    assert check_name(name) == name


@pytest.mark.parametrize("name", ["", "Get", "1get", "_get", "get-it", "a.b", "*", "x" * 64])
def test_invalid_component_and_op_names(name: str) -> None:
    """Anything else is refused."""
    with pytest.raises(ValueError, match="invalid component/op/event name"):
        check_name(name)


def test_cache_keys_are_prefixed_by_tenant() -> None:
    """Each tenant's cache keys and stats live under its own hash-tagged prefix."""
    assert subjects.cache_key_prefix("acme") == "aifleet:cache:{acme}:"
    assert subjects.cache_stats_key("acme") == "aifleet:cache-stats:{acme}"
    assert not subjects.cache_key_prefix("ab").startswith(subjects.cache_key_prefix("a"))
    with pytest.raises(BadRequest):
        subjects.cache_key_prefix("*")


def test_service_and_consumer_names() -> None:
    """Micro service names and durable consumer names are derived in one place."""
    assert subjects.service_name("cache") == "aifleet-cache"
    assert subjects.job_consumer("rag") == "rag-jobs"
    assert subjects.queue_group("cache") == "cache"
