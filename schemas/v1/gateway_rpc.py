"""Typed rpc handles of schemas/v1/gateway.proto, written by `make proto`: do not edit."""

from __future__ import annotations

from typing import Final

from schemas.contracts import Streaming, Unary
from schemas.v1 import gateway_pb2


class GatewayService:
    """The `gateway` component (aifleet.v1.GatewayService)."""

    Generate: Final = Unary(
        "gateway",
        "generate",
        gateway_pb2.GenerateRequest,
        gateway_pb2.GenerateResponse,
    )
    GenerateStream: Final = Streaming(
        "gateway",
        "generate_stream",
        gateway_pb2.GenerateRequest,
        gateway_pb2.GenerateChunk,
    )
    Embed: Final = Unary(
        "gateway",
        "embed",
        gateway_pb2.EmbedRequest,
        gateway_pb2.EmbedResponse,
    )
    ListModels: Final = Unary(
        "gateway",
        "list_models",
        gateway_pb2.ListModelsRequest,
        gateway_pb2.ListModelsResponse,
    )
    RateLimits: Final = Unary(
        "gateway",
        "rate_limits",
        gateway_pb2.RateLimitsRequest,
        gateway_pb2.RateLimitsResponse,
    )
