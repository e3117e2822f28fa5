"""Keyset paging with opaque tokens bound to the tenant and the query.

The same interface as the component kit's `workers.runtime.paging` (start / finish), written
here because the kit's has not landed yet; replace the import when it does. A token is the
position of the last row returned, with a digest over tenant, query and position: a token
altered, or minted for another tenant or another query, is a 400 on `page.page_token`.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from schemas.errors import BadRequest
from schemas.v1.common_pb2 import PageRequest, PageResponse

DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE = 50, 200
_KEY = b"aifleet.agent.page.v1"
FIELD = "page.page_token"
R = TypeVar("R")


@dataclass(frozen=True)
class Page:
    size: int
    after: tuple[Any, ...] | None
    _scope: str


def _scope(tenant: str, query: dict[str, Any]) -> str:
    return json.dumps([tenant, query], sort_keys=True, separators=(",", ":"))


def _plain(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return {"dt": value.isoformat()}
    return value


def _typed(value: Any) -> Any:
    if isinstance(value, dict) and set(value) == {"dt"}:
        return dt.datetime.fromisoformat(value["dt"])
    return value


def _digest(scope: str, body: bytes) -> str:
    mac = hmac.new(_KEY, scope.encode() + b"\x00" + body, hashlib.sha256).digest()[:12]
    return base64.urlsafe_b64encode(mac).decode().rstrip("=")


def start(tenant: str, page: PageRequest, query: dict[str, Any]) -> Page:
    size = page.page_size or DEFAULT_PAGE_SIZE
    size = min(size, MAX_PAGE_SIZE)
    scope = _scope(tenant, query)
    if not page.page_token:
        return Page(size, None, scope)
    bad = BadRequest("page_token is invalid for this listing", details={"field": FIELD})
    body_text, _, mac = page.page_token.partition(".")
    try:
        body = base64.urlsafe_b64decode(body_text + "=" * (-len(body_text) % 4))
    except ValueError:
        raise bad from None
    if not hmac.compare_digest(mac, _digest(scope, body)):
        raise bad
    try:
        position = json.loads(body)
    except ValueError:
        raise bad from None
    if not isinstance(position, list):
        raise bad
    return Page(size, tuple(_typed(v) for v in position), scope)


def finish(
    tenant: str, page: Page, rows: Sequence[R], position: Callable[[R], tuple[Any, ...]]
) -> tuple[list[R], PageResponse]:
    """Keep `page.size` of the `page.size + 1` rows fetched; a token only when there are more."""
    kept = list(rows[: page.size])
    if len(rows) <= page.size or not kept:
        return kept, PageResponse()
    body = json.dumps([_plain(v) for v in position(kept[-1])], separators=(",", ":")).encode()
    token = base64.urlsafe_b64encode(body).decode().rstrip("=") + "." + _digest(page._scope, body)
    return kept, PageResponse(next_page_token=token)
