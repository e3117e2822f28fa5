"""Keyset paging with opaque page tokens, one codec for every list operation of the fleet.

A token is the keyset position after which the next page starts (the sort key of the last row
of this one), bound to the tenant and to the query it was minted for:

    page = paging.start(ctx.tenant, req.page, query={"prefix": prefix, "order": order})
    rows = await store.list(ctx.tenant, ..., after=page.after, limit=page.size + 1)
    kept, reply.page = paging.finish(ctx.tenant, page, rows, position=lambda r: (r.at, r.id))

`after` is the position tuple a previous `finish` took from its last row. A token that was
altered, or minted for another tenant or for a query that differs in any way, is a 400 naming
`page.page_token`: it would otherwise resume a listing at a position that means nothing there.
The check is integrity, not secrecy (the position is readable; the digest is not keyed): a
client who forges a position can only skip within its own tenant's rows, which SQL filters
anyway.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from schemas.errors import BadRequest
from schemas.v1.common_pb2 import PageRequest, PageResponse
from workers.runtime.validation import page_size

R = TypeVar("R")
FIELD = "page.page_token"
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_DIGEST_BYTES = 12


@dataclass(frozen=True, slots=True)
class Page:
    """Where a page starts and how long it is; `query` is what its tokens are bound to."""

    size: int
    after: tuple[Any, ...] | None
    query: str


def start(tenant: str, page: PageRequest, query: Mapping[str, Any] | None = None) -> Page:
    """The requested page: its size (the fleet's rule) and, with a token, its position."""
    bound = _query(query)
    after = decode(tenant, bound, page.page_token) if page.page_token else None
    return Page(page_size(page), after, bound)


def finish(
    tenant: str, page: Page, rows: Sequence[R], position: Callable[[R], Sequence[Any]]
) -> tuple[list[R], PageResponse]:
    """The page's rows (fetched `page.size + 1` in keyset order) and its `PageResponse`,
    whose token continues after the last kept row when there were more."""
    kept = list(rows[: page.size])
    reply = PageResponse()
    if len(rows) > page.size and kept:
        reply.next_page_token = encode(tenant, page.query, position(kept[-1]))
    return kept, reply


def encode(tenant: str, query: str, position: Sequence[Any]) -> str:
    body = json.dumps([_plain(v) for v in position], separators=(",", ":")).encode()
    return _b64(body) + "." + _b64(_digest(tenant, query, body))


def decode(tenant: str, query: str, token: str) -> tuple[Any, ...]:
    body_part, dot, digest_part = token.partition(".")
    try:
        if not dot:
            raise ValueError("no digest")
        body = _unb64(body_part)
        digest = _unb64(digest_part)
    except (binascii.Error, ValueError):
        raise BadRequest("page_token is invalid", details={"field": FIELD}) from None
    if digest != _digest(tenant, query, body):
        raise BadRequest(
            "page_token is invalid or belongs to another listing", details={"field": FIELD}
        )
    try:
        position = json.loads(body)
    except ValueError:
        raise BadRequest("page_token is invalid", details={"field": FIELD}) from None
    if not isinstance(position, list):
        raise BadRequest("page_token is invalid", details={"field": FIELD})
    return tuple(_restore(v) for v in position)


def _query(query: Mapping[str, Any] | None) -> str:
    return json.dumps(
        {k: _plain(v) for k, v in (query or {}).items()}, sort_keys=True, separators=(",", ":")
    )


def _digest(tenant: str, query: str, body: bytes) -> bytes:
    h = hashlib.blake2b(digest_size=_DIGEST_BYTES, person=b"aifleet-page")
    for part in (tenant.encode(), query.encode(), body):
        h.update(len(part).to_bytes(4, "big"))
        h.update(part)
    return h.digest()


def _plain(value: Any) -> Any:
    """A position value as JSON; datetimes as `{"t": microseconds since the epoch}`."""
    if isinstance(value, dt.datetime):
        delta = value - _EPOCH
        return {"t": (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds}
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    raise TypeError(f"a page position cannot hold {type(value).__name__}")


def _restore(value: Any) -> Any:
    if isinstance(value, dict) and set(value) == {"t"} and isinstance(value["t"], int):
        try:
            return _EPOCH + dt.timedelta(microseconds=value["t"])
        except OverflowError:
            raise BadRequest("page_token is invalid", details={"field": FIELD}) from None
    return value


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
