"""HTTP tools against a real local server: addresses, hosts, redirects, limits, secrets."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.tool_server import ToolServer
from workers.agent.http_tool import HttpLimits, address_allowed, build_request, call_http

LIMITS = HttpLimits(default_timeout=5.0)


@pytest.fixture
def server() -> Iterator[ToolServer]:
    with ToolServer() as served:
        yield served


def spec(url: str, **fields: Any) -> dict[str, Any]:
    return {
        "method": "GET",
        "url": url,
        "allowed_hosts": ["127.0.0.1", "localhost"],
        "allow_private_addresses": True,
        **fields,
    }


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("8.8.8.8", True),
        ("2606:4700:4700::1111", True),
        ("127.0.0.1", False),
        ("10.1.2.3", False),
        ("192.168.0.1", False),
        ("169.254.169.254", False),
        ("100.64.0.1", False),
        ("::1", False),
        ("fe80::1", False),
        ("fd00::1", False),
        ("::ffff:127.0.0.1", False),
        ("0.0.0.0", False),
        ("224.0.0.1", False),
    ],
)
def test_only_public_addresses_are_reachable_by_default(address: str, public: bool) -> None:
    """Private, loopback, link-local, CGNAT, mapped, unspecified, multicast: refused."""
    assert address_allowed(address, allow_private=False) is public


def test_arguments_fill_the_url_percent_encoded_and_the_rest_goes_to_the_query() -> None:
    """Placeholders are encoded (no path or query injection); other arguments are params."""
    _, url, extra = build_request(
        {"method": "GET", "url": "https://h.example/items/{id}"}, {"id": "../a?b=1", "q": 2}
    )
    assert url == "https://h.example/items/..%2Fa%3Fb%3D1"
    assert extra == {"params": {"q": "2"}}
    _, _, body = build_request({"method": "POST", "url": "https://h.example/x"}, {"a": [1]})
    assert body == {"json": {"a": [1]}}


async def test_a_call_sends_its_idempotency_key_secret_and_arguments(
    server: ToolServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The result is the status and the JSON body; secrets come from the environment."""
    monkeypatch.setenv("AIFLEET_AGENT_SECRET_TOKEN", "Bearer s3cret")
    tool = spec(
        server.base_url + "/echo/{id}",
        method="POST",
        secret_headers={"Authorization": "AIFLEET_AGENT_SECRET_TOKEN"},
    )
    result = await call_http(tool, {"id": "7", "n": 1}, idempotency_key="k1", limits=LIMITS)
    assert not result.is_error
    reply = json.loads(result.content)
    assert reply["status"] == 200
    assert reply["body"]["path"] == "/echo/7"
    assert reply["body"]["body"] == {"n": 1}
    assert reply["body"]["idempotency_key"] == "k1"
    assert reply["body"]["authorization"] == "Bearer s3cret"


async def test_a_missing_secret_makes_no_request(server: ToolServer) -> None:
    """An unset secret variable is an error for the model and nothing is sent."""
    tool = spec(server.base_url + "/echo/x", secret_headers={"X-Key": "AIFLEET_AGENT_SECRET_NONE"})
    result = await call_http(tool, {}, idempotency_key="k", limits=LIMITS)
    assert result.is_error
    assert "not configured" in result.content
    assert server.count() == 0


async def test_loopback_is_refused_unless_the_tool_allows_private_addresses(
    server: ToolServer,
) -> None:
    """127.0.0.1 and `localhost` (resolved at connect time) are refused by default."""
    for host in ("127.0.0.1", "localhost"):
        url = server.base_url.replace("127.0.0.1", host) + "/echo/x"
        result = await call_http(
            spec(url, allow_private_addresses=False), {}, idempotency_key="k", limits=LIMITS
        )
        assert result.is_error
        assert "non-public" in result.content
    assert server.count() == 0


async def test_a_redirect_to_a_host_off_the_allowlist_is_not_followed(server: ToolServer) -> None:
    """The redirect's host is checked like the first one."""
    tool = spec(server.base_url + "/redirect", allowed_hosts=["127.0.0.1"])
    result = await call_http(
        tool, {"to": "http://169.254.169.254/latest/meta-data"}, idempotency_key="k", limits=LIMITS
    )
    assert result.is_error
    assert "not allowed" in result.content


async def test_responses_over_the_size_limit_and_slow_servers_are_errors(
    server: ToolServer,
) -> None:
    """The body is cut off past max_response_bytes; the call past timeout_seconds."""
    big = await call_http(
        spec(server.base_url + "/big", max_response_bytes=1000),
        {"bytes": 5000},
        idempotency_key="k",
        limits=LIMITS,
    )
    assert big.is_error
    assert "larger than 1000" in big.content
    slow = await call_http(
        spec(server.base_url + "/slow", timeout_seconds=0.3),
        {"seconds": 2},
        idempotency_key="k",
        limits=LIMITS,
    )
    assert slow.is_error
    assert "no response" in slow.content
