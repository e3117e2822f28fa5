"""Typed rpc handles: generated for every rpc, and a call with the wrong request type fails."""

from __future__ import annotations

import importlib

import pytest

from schemas import registry
from schemas.contracts import Streaming, Unary
from schemas.v1.cache_pb2 import GetRequest, GetResponse, SetRequest
from schemas.v1.cache_rpc import CacheService
from schemas.v1.gateway_rpc import GatewayService


def _handles() -> dict[tuple[str, str], Unary[object, object] | Streaming[object, object]]:  # type: ignore[type-var]
    out = {}
    for component, service in registry.services().items():
        if service.file.package != "aifleet.v1":
            continue
        module = importlib.import_module(
            service.file.name.removesuffix(".proto").replace("/", ".") + "_rpc"
        )
        handles = getattr(module, service.name)
        for method in service.methods:
            out[(component, registry.snake(method.name))] = getattr(handles, method.name)
    return out


def test_every_rpc_has_a_handle_with_its_contracts_types() -> None:
    """Component, op, request, response and streaming agree with the proto descriptors."""
    handles = _handles()
    assert handles
    for component, service in registry.services().items():
        for op, rpc in registry.rpcs_of(service).items():
            if (component, op) not in handles:
                continue
            handle = handles[(component, op)]
            assert (handle.component, handle.op) == (component, op)
            assert handle.request is rpc.request
            assert handle.response is rpc.response
            assert isinstance(handle, Streaming) == rpc.streaming


def test_a_handle_names_its_operation() -> None:
    assert (CacheService.Get.component, CacheService.Get.op) == ("cache", "get")
    assert CacheService.Get.response is GetResponse
    assert str(GatewayService.GenerateStream) == "gateway.generate_stream"
    assert isinstance(GatewayService.GenerateStream, Streaming)


def test_a_request_of_another_type_is_a_type_error() -> None:
    """The check behind every typed call: the request must be the rpc's own message."""
    assert CacheService.Get.check(GetRequest(key="k")) == GetRequest(key="k")
    with pytest.raises(TypeError, match=r"cache\.get takes aifleet\.v1\.GetRequest"):
        CacheService.Get.check(SetRequest(key="k"))
