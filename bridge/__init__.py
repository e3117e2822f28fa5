"""The HTTP bridge: REST in front of the fleet's NATS subjects (DESIGN §5).

Routes, request mapping and the OpenAPI document are derived from the `google.api.http`
annotations of the .proto services; the bridge holds no business logic. `create_app(settings)`
builds the Starlette app, `aifleet bridge` serves it with uvicorn, `bridge.lambda_handler`
serves it on AWS Lambda.
"""

from bridge.app import create_app
from bridge.config import BridgeSettings

__all__ = ["BridgeSettings", "create_app"]
