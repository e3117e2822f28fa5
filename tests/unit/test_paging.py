"""Keyset page tokens: opaque, bound to tenant and query, refused when altered."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import pytest

from schemas.errors import BadRequest
from schemas.v1.common_pb2 import PageRequest
from workers.runtime import paging


@dataclass(frozen=True)
class Row:
    at: dt.datetime
    id: str


MOMENT = dt.datetime(2026, 12, 3, 12, 30, 15, 123456, tzinfo=dt.UTC)
QUERY = {"source": "wiki", "order": "newest"}


def test_a_position_round_trips_with_its_datetimes() -> None:
    """What `finish` took from the last row comes back from the token unchanged."""
    token = paging.encode("acme", paging.start("acme", PageRequest(), QUERY).query, (MOMENT, "r1"))
    page = paging.start("acme", PageRequest(page_token=token), QUERY)
    assert page.after == (MOMENT, "r1")


def test_finish_keeps_one_page_and_continues_after_its_last_row() -> None:
    """Fetch size + 1 rows: the extra one only says there is more."""
    rows = [Row(MOMENT - dt.timedelta(seconds=i), f"r{i}") for i in range(4)]
    page = paging.start("acme", PageRequest(page_size=3), QUERY)
    kept, reply = paging.finish("acme", page, rows, lambda r: (r.at, r.id))
    assert kept == rows[:3]
    assert paging.start("acme", PageRequest(page_token=reply.next_page_token), QUERY).after == (
        rows[2].at,
        "r2",
    )
    last, end = paging.finish("acme", page, rows[:3], lambda r: (r.at, r.id))
    assert (last, end.next_page_token) == (rows[:3], "")


def _token() -> str:
    return paging.encode("acme", paging.start("acme", PageRequest(), QUERY).query, ("x", 1))


@pytest.mark.parametrize(
    ("tenant", "query"),
    [("other", QUERY), ("acme", {**QUERY, "source": "blog"}), ("acme", {"order": "newest"})],
)
def test_a_token_of_another_tenant_or_query_is_refused(tenant: str, query: dict[str, str]) -> None:
    """A token only continues the listing it was minted for."""
    with pytest.raises(BadRequest) as raised:
        paging.start(tenant, PageRequest(page_token=_token()), query)
    assert raised.value.details == {"field": "page.page_token"}


@pytest.mark.parametrize(
    "token",
    ["!!!", "e30", "abc.def", _token()[:-2], _token().replace(".", "x"), "WzFd." + _token()[5:]],
)
def test_an_altered_or_made_up_token_is_refused(token: str) -> None:
    with pytest.raises(BadRequest):
        paging.start("acme", PageRequest(page_token=token), QUERY)


def test_the_page_size_follows_the_fleet_rule() -> None:
    assert paging.start("acme", PageRequest(page_size=500)).size == 200
    assert paging.start("acme", PageRequest()).size == 50
