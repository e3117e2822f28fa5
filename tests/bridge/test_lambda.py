"""The Lambda entry point: API Gateway events in, the fleet's replies out, one NATS connection
kept across invocations."""

from __future__ import annotations

import asyncio
import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any, cast

import httpx
import pytest
from starlette.applications import Starlette

from aifleet.embedded import EmbeddedNats
from bridge import lambda_handler
from bridge.app import CONNECTION_NAME
from bridge.config import ConfigError
from tests.bridge.conftest import AUDIENCE, ISSUER, SECRET, bridge_settings, hs256
from workers.runtime.worker import Worker


def event(token: str, body: dict[str, Any]) -> dict[str, Any]:
    """An API Gateway HTTP API (payload 2.0) event for POST /api/v1/echo."""
    return {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": "/api/v1/echo",
        "rawQueryString": "",
        "headers": {
            "authorization": f"Bearer {token}",
            "content-type": "application/json",
            "host": "api.example.test",
        },
        "requestContext": {
            "http": {
                "method": "POST",
                "path": "/api/v1/echo",
                "protocol": "HTTP/1.1",
                "sourceIp": "192.0.2.1",
                "userAgent": "test",
            },
            "routeKey": "$default",
            "stage": "$default",
            "requestId": "r1",
        },
        "body": json.dumps(body),
        "isBase64Encoded": False,
    }


@pytest.fixture
def lambda_env(nats_server: EmbeddedNats, monkeypatch: pytest.MonkeyPatch) -> None:
    """The handler's configuration, from the environment as on Lambda (undone after the test)."""
    for name, value in {
        "NATS_URL": nats_server.url,
        "AIFLEET_BRIDGE_AUTH": "jwt",
        "AIFLEET_BRIDGE_JWT_SECRET": SECRET,
        "AIFLEET_BRIDGE_JWT_ISSUER": ISSUER,
        "AIFLEET_BRIDGE_JWT_AUDIENCE": AUDIENCE,
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(lambda_handler, "_handler", None)


def bridge_connections(nats_server: EmbeddedNats) -> int:
    conns = httpx.get(f"{nats_server.monitor_url}/connz?limit=1024").json()["connections"] or []
    return sum(1 for c in conns if c.get("name") == CONNECTION_NAME)


async def test_invocations_reuse_one_nats_connection(
    lambda_env: None, fleet: Worker, nats_server: EmbeddedNats
) -> None:
    """Two invocations answer from the worker; the second reuses the first's connection."""
    # Lambda calls the handler on one thread, invocation after invocation: so does this test.
    runtime = ThreadPoolExecutor(max_workers=1)
    loop = asyncio.get_running_loop()
    try:
        first = await loop.run_in_executor(
            runtime, lambda_handler.handler, event(hs256(tenant="lam"), {"text": "one"}), None
        )
        assert lambda_handler._handler is not None
        bridge = cast(Starlette, lambda_handler._handler.app).state.bridge
        nc = bridge.nc
        second = await loop.run_in_executor(
            runtime, lambda_handler.handler, event(hs256(tenant="lam"), {"text": "two"}), None
        )
        assert bridge.nc is nc
        assert bridge_connections(nats_server) == 1
        refused = await loop.run_in_executor(
            runtime, lambda_handler.handler, event("not-a-token", {}), None
        )
    finally:
        if lambda_handler._handler is not None:
            state = cast(Starlette, lambda_handler._handler.app).state.bridge

            def close() -> None:
                asyncio.get_event_loop().run_until_complete(state.close())

            await loop.run_in_executor(runtime, close)
        runtime.shutdown()
    assert (first["statusCode"], json.loads(first["body"])["text"]) == (200, "one")
    assert json.loads(second["body"])["tenant"] == "lam"
    assert refused["statusCode"] == 401


def test_lambda_refuses_dev_mode() -> None:
    """Without authentication there is no Lambda bridge."""
    with pytest.raises(ConfigError):
        lambda_handler.build(bridge_settings("nats://127.0.0.1:4222"))
