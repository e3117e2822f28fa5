"""Every cache rpc over REST, through the real bridge, NATS, cache worker and Valkey."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import httpx

from tests.bridge.conftest import Spy


def tenant() -> dict[str, str]:
    """A fresh tenant per test, so tests never see each other's keys or stats."""
    return {"X-Tenant-ID": "t" + uuid.uuid4().hex[:12]}


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body: dict[str, Any] = response.json()
    assert body["code"] == code
    assert set(body) <= {"code", "message", "details", "retryable"}
    return body


async def test_set_then_get_returns_the_value(dev_bridge: httpx.AsyncClient) -> None:
    """PUT stores a JSON value under the path key; GET returns it with found=true."""
    h = tenant()
    put = await dev_bridge.put(
        "/api/v1/cache/keys/greeting", json={"value": {"a": [1, "x"]}}, headers=h
    )
    assert (put.status_code, put.json()) == (200, {"stored": True})
    got = await dev_bridge.get("/api/v1/cache/keys/greeting", headers=h)
    assert got.status_code == 200
    assert got.json()["found"] is True
    assert got.json()["value"] == {"a": [1, "x"]}


async def test_get_of_a_missing_key_is_found_false(dev_bridge: httpx.AsyncClient) -> None:
    """A miss is a 200 with found=false, not a 404."""
    got = await dev_bridge.get("/api/v1/cache/keys/absent", headers=tenant())
    assert got.status_code == 200
    assert got.json()["found"] is False


async def test_set_with_ttl_and_only_if_absent(dev_bridge: httpx.AsyncClient) -> None:
    """Body fields beside the path key reach the worker: ttl shows up, only_if_absent holds."""
    h = tenant()
    first = await dev_bridge.put(
        "/api/v1/cache/keys/k",
        json={"value": 1, "ttl_seconds": 60, "only_if_absent": True},
        headers=h,
    )
    second = await dev_bridge.put(
        "/api/v1/cache/keys/k", json={"value": 2, "only_if_absent": True}, headers=h
    )
    assert (first.json()["stored"], second.json()["stored"]) == (True, False)
    got = (await dev_bridge.get("/api/v1/cache/keys/k", headers=h)).json()
    assert got["value"] == 1
    assert 0 < int(got["ttl_ms"]) <= 60_000


async def test_raw_bytes_round_trip_as_base64(dev_bridge: httpx.AsyncClient) -> None:
    """bytes fields travel as base64 in JSON both ways."""
    h = tenant()
    await dev_bridge.put("/api/v1/cache/keys/blob", json={"raw": "AAEC/w=="}, headers=h)
    got = (await dev_bridge.get("/api/v1/cache/keys/blob", headers=h)).json()
    assert got["raw"] == "AAEC/w=="


async def test_delete_removes_the_entry(dev_bridge: httpx.AsyncClient) -> None:
    """DELETE answers deleted=true once, then false; the key is gone."""
    h = tenant()
    await dev_bridge.put("/api/v1/cache/keys/gone", json={"value": "x"}, headers=h)
    first = await dev_bridge.delete("/api/v1/cache/keys/gone", headers=h)
    again = await dev_bridge.delete("/api/v1/cache/keys/gone", headers=h)
    assert (first.json(), again.json()) == ({"deleted": True}, {"deleted": False})
    assert (await dev_bridge.get("/api/v1/cache/keys/gone", headers=h)).json()["found"] is False


async def test_invalidate_removes_only_matching_keys(dev_bridge: httpx.AsyncClient) -> None:
    """POST /invalidate with a glob removes the matching keys and reports how many."""
    h = tenant()
    for key in ("user:1", "user:2", "order:1"):
        await dev_bridge.put(f"/api/v1/cache/keys/{key}", json={"value": key}, headers=h)
    removed = await dev_bridge.post(
        "/api/v1/cache/invalidate", json={"pattern": "user:*"}, headers=h
    )
    assert removed.status_code == 200
    assert removed.json() == {"removed": "2"}  # int64 is a string in the proto3 JSON mapping
    assert (await dev_bridge.get("/api/v1/cache/keys/order:1", headers=h)).json()["found"] is True


async def test_clear_and_stats(dev_bridge: httpx.AsyncClient) -> None:
    """GET /stats counts hits, misses and keys; POST /clear removes every key of the tenant."""
    h = tenant()
    await dev_bridge.put("/api/v1/cache/keys/a", json={"value": 1}, headers=h)
    await dev_bridge.get("/api/v1/cache/keys/a", headers=h)
    await dev_bridge.get("/api/v1/cache/keys/missing", headers=h)
    stats = (await dev_bridge.get("/api/v1/cache/stats", headers=h)).json()
    assert stats == {"hits": "1", "misses": "1", "keys": "1"}
    cleared = await dev_bridge.post("/api/v1/cache/clear", headers=h)
    assert cleared.json() == {"removed": "1"}
    assert (await dev_bridge.get("/api/v1/cache/stats", headers=h)).json()["keys"] == "0"


async def test_tenants_do_not_see_each_other(dev_bridge: httpx.AsyncClient) -> None:
    """The same key under two tenants are two entries (the tenant is the subject token)."""
    a, b = tenant(), tenant()
    await dev_bridge.put("/api/v1/cache/keys/shared", json={"value": "a"}, headers=a)
    assert (await dev_bridge.get("/api/v1/cache/keys/shared", headers=b)).json()["found"] is False


async def test_an_encoded_slash_stays_inside_the_key(dev_bridge: httpx.AsyncClient) -> None:
    """`{key}` is one path segment: %2F is part of the key, not a separator."""
    h = tenant()
    put = await dev_bridge.put("/api/v1/cache/keys/a%2Fb%20c", json={"value": 1}, headers=h)
    assert put.status_code == 200
    listed = await dev_bridge.post("/api/v1/cache/invalidate", json={"pattern": "a/b c"}, headers=h)
    assert listed.json() == {"removed": "1"}


async def test_path_key_conflicting_with_body_key_is_400(dev_bridge: httpx.AsyncClient) -> None:
    """A body naming another key than the path is refused; the same key is accepted."""
    h = tenant()
    bad = await dev_bridge.put("/api/v1/cache/keys/one", json={"key": "two", "value": 1}, headers=h)
    assert_error(bad, 400, "INVALID_ARGUMENT")
    same = await dev_bridge.put(
        "/api/v1/cache/keys/one", json={"key": "one", "value": 1}, headers=h
    )
    assert same.status_code == 200


async def test_bad_bodies_get_the_error_shape(dev_bridge: httpx.AsyncClient) -> None:
    """Unknown field, wrong type, invalid JSON, a non-object and duplicate keys are 400s."""
    h = {**tenant(), "Content-Type": "application/json"}
    for body in (
        b'{"value": 1, "nope": 2}',
        b'{"value": 1, "ttl_seconds": "soon"}',
        b'{"value": ',
        b"[1, 2]",
        b'{"value": 1, "value": 2}',
    ):
        response = await dev_bridge.put("/api/v1/cache/keys/k", content=body, headers=h)
        assert_error(response, 400, "INVALID_ARGUMENT")


async def test_worker_errors_keep_their_status_and_body(dev_bridge: httpx.AsyncClient) -> None:
    """The worker's own refusals (no value, key too long) come back with its status and Error."""
    h = tenant()
    no_value = await dev_bridge.put("/api/v1/cache/keys/k", json={}, headers=h)
    body = assert_error(no_value, 400, "INVALID_ARGUMENT")
    assert body["message"] == "one of value or raw is required"
    long_key = await dev_bridge.get("/api/v1/cache/keys/" + "x" * 600, headers=h)
    assert_error(long_key, 400, "INVALID_ARGUMENT")


async def test_query_and_body_rules_are_enforced(dev_bridge: httpx.AsyncClient) -> None:
    """Unknown query parameters, query on a body:"*" route and a body on GET are 400s."""
    h = tenant()
    assert_error(
        await dev_bridge.get("/api/v1/cache/keys/k?bogus=1", headers=h), 400, "INVALID_ARGUMENT"
    )
    assert_error(
        await dev_bridge.get("/api/v1/cache/keys/k?key=other", headers=h), 400, "INVALID_ARGUMENT"
    )
    assert_error(
        await dev_bridge.post("/api/v1/cache/clear?x=1", json={}, headers=h),
        400,
        "INVALID_ARGUMENT",
    )
    with_body = await dev_bridge.request("GET", "/api/v1/cache/stats", content=b"{}", headers=h)
    assert_error(with_body, 400, "INVALID_ARGUMENT")


async def test_routing_errors_use_the_error_shape(dev_bridge: httpx.AsyncClient) -> None:
    """Unknown path → 404, wrong method → 405 listing the path's methods, non-JSON body → 415."""
    assert_error(await dev_bridge.get("/api/v1/cache/nothing"), 404, "NOT_FOUND")
    wrong = await dev_bridge.post("/api/v1/cache/keys/k", json={})
    assert_error(wrong, 405, "METHOD_NOT_ALLOWED")
    assert wrong.headers["allow"] == "DELETE, GET, PUT"
    text = await dev_bridge.put(
        "/api/v1/cache/keys/k", content=b"value=1", headers={"Content-Type": "text/plain"}
    )
    assert_error(text, 415, "UNSUPPORTED_MEDIA_TYPE")


async def test_invalid_tenant_header_is_400(dev_bridge: httpx.AsyncClient) -> None:
    """Dev mode still validates the tenant token (it becomes a subject token)."""
    response = await dev_bridge.get("/api/v1/cache/stats", headers={"X-Tenant-ID": "a.b>"})
    assert_error(response, 400, "INVALID_ARGUMENT")


async def test_request_headers_reach_the_worker(
    dev_bridge: httpx.AsyncClient, spy: Callable[[], Any]
) -> None:
    """The subject names tenant, component and op; X-Request-ID is kept and echoed; the deadline
    and the caller are forwarded."""
    response = await dev_bridge.get(
        "/api/v1/cache/stats",
        headers={
            "X-Tenant-ID": "acme",
            "X-Request-ID": "req-42",
            "X-User-ID": "alice",
            "Aifleet-Timeout-Ms": "1500",
        },
    )
    assert response.status_code == 200
    assert response.headers["x-request-id"] == "req-42"
    seen: Spy = await spy()
    assert seen.subjects == ["ai.v1.acme.req.cache.stats"]
    headers = seen.messages[0].headers or {}
    assert headers["X-Request-ID"] == "req-42"
    assert headers["X-User-ID"] == "alice"
    assert 1000 < int(headers["Aifleet-Timeout-Ms"]) <= 1500
    assert headers["Content-Type"] == "application/json"


async def test_a_request_id_is_made_when_none_is_sent(dev_bridge: httpx.AsyncClient) -> None:
    """Without (or with a malformed) X-Request-ID the bridge makes one and returns it."""
    plain = await dev_bridge.get("/api/v1/cache/stats")
    odd = await dev_bridge.get("/api/v1/cache/stats", headers={"X-Request-ID": "bad id\t!"})
    assert len(plain.headers["x-request-id"]) == 32
    assert odd.headers["x-request-id"] != "bad id\t!"
