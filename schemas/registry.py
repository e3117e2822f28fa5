"""What the .proto files declare, indexed by component and op.

Every proto `service FooBarService` is the component `foo_bar`; each rpc `DoThing` is the op
`do_thing`. The runtime, the client, the CLI and the bridge all read the contracts from here,
so adding an rpc to a .proto is the whole act of adding an operation.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from dataclasses import dataclass
from functools import cache

from google.protobuf import message_factory
from google.protobuf.descriptor import FileDescriptor, MethodDescriptor, ServiceDescriptor
from google.protobuf.message import Message

import schemas.v1

# Beside the generated code of each proto directory: its .proto files as a FileDescriptorSet with
# source info, i.e. their comments (written by `make proto`, read by bridge/protodoc.py).
DESCRIPTOR_SET = "descriptors.binpb"
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")


def snake(name: str) -> str:
    """`GenerateStream` -> `generate_stream`."""
    return _CAMEL.sub("_", name).lower()


@dataclass(frozen=True)
class Rpc:
    """One operation of one component, as its contract declares it."""

    component: str
    op: str
    method: MethodDescriptor
    request: type[Message]
    response: type[Message]
    streaming: bool


def component_name(service: ServiceDescriptor) -> str:
    name = service.name.removesuffix("Service")
    return snake(name)


def rpcs_of(service: ServiceDescriptor) -> dict[str, Rpc]:
    component = component_name(service)
    return {
        snake(m.name): Rpc(
            component=component,
            op=snake(m.name),
            method=m,
            request=message_factory.GetMessageClass(m.input_type),
            response=message_factory.GetMessageClass(m.output_type),
            streaming=m.server_streaming,
        )
        for m in service.methods
    }


_services: dict[str, ServiceDescriptor] = {}


def register_file(file: FileDescriptor) -> None:
    """Make a file's services callable by component name (tests add their own)."""
    for service in file.services_by_name.values():
        _services[component_name(service)] = service
    rpc.cache_clear()


@cache
def _load_builtin() -> None:
    for info in pkgutil.iter_modules(schemas.v1.__path__):
        if info.name.endswith("_pb2"):
            module = importlib.import_module(f"schemas.v1.{info.name}")
            register_file(module.DESCRIPTOR)


def services() -> dict[str, ServiceDescriptor]:
    """Every known component's service descriptor, by component name."""
    _load_builtin()
    return dict(_services)


@cache
def rpc(component: str, op: str) -> Rpc | None:
    service = services().get(component)
    return rpcs_of(service).get(op) if service is not None else None
