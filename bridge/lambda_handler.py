"""AWS Lambda entry point: `bridge.lambda_handler.handler` (API Gateway HTTP/REST API, ALB).

Mangum turns the Lambda event into an ASGI request. The app, its routes and its NATS
connection are built on the first invocation and kept in the execution environment, so warm
invocations reuse the connection (Mangum runs every invocation on the same event loop; while
the environment is frozen nothing runs, and nats-py reconnects if the server dropped it).
The lifespan is off: the first request connects. Authentication is mandatory here: dev mode
is for a loopback address, and a Lambda function URL or API Gateway is not one.
"""

from __future__ import annotations

from typing import Any

from mangum import Mangum

from bridge.app import create_app
from bridge.config import BridgeSettings, ConfigError

_handler: Mangum | None = None


def build(settings: BridgeSettings) -> Mangum:
    """A Mangum handler for the bridge; refuses dev mode."""
    if settings.dev_mode:
        raise ConfigError("the Lambda bridge requires AIFLEET_BRIDGE_AUTH=jwt")
    return Mangum(create_app(settings), lifespan="off")


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    global _handler
    if _handler is None:
        _handler = build(BridgeSettings())
    return _handler(event, context)
