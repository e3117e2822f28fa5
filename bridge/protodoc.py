"""Comments of the .proto sources, for the OpenAPI document's summaries and descriptions.

Generated modules carry no comments, so `make proto` also writes, beside the generated code of
each proto directory, a FileDescriptorSet with source info (`descriptors.binpb`, from protoc
`--include_source_info`). It is package data: the bridge reads it with importlib.resources
from wherever the package is installed, with no .proto source and no repository on sys.path.
A missing set only means an undocumented operation, never a failed start.
"""

from __future__ import annotations

import functools
from importlib import resources

from google.protobuf.descriptor import FileDescriptor
from google.protobuf.descriptor_pb2 import (
    DescriptorProto,
    EnumDescriptorProto,
    FileDescriptorProto,
    FileDescriptorSet,
)

from schemas.registry import DESCRIPTOR_SET

# Field numbers of descriptor.proto along a SourceCodeInfo.Location path.
_FILE_PACKAGE, _FILE_MESSAGE, _FILE_ENUM, _FILE_SERVICE = 2, 4, 5, 6
_MSG_FIELD, _MSG_NESTED, _MSG_ENUM, _MSG_ONEOF = 2, 3, 4, 8
_ENUM_VALUE, _SERVICE_METHOD = 2, 2


def comments(file: FileDescriptor) -> dict[str, str]:
    """Leading (else trailing) comments by full name: `pkg.Message`, `pkg.Message.field`,
    `pkg.Svc`, `pkg.Svc.Rpc`, `pkg.Enum.VALUE`; the file's own comment (above `package`)
    under the file's name."""
    return dict(_comments(file.name))


@functools.cache
def _comments(name: str) -> tuple[tuple[str, str], ...]:
    proto = _source(name)
    if proto is None:
        return ()
    out: dict[str, str] = {}
    for location in proto.source_code_info.location:
        text = _clean(location.leading_comments or location.trailing_comments)
        if not text:
            continue
        path = list(location.path)
        full = name if path == [_FILE_PACKAGE] else _name_at(proto, path)
        if full:
            out[full] = text
    return tuple(out.items())


def _source(name: str) -> FileDescriptorProto | None:
    """The FileDescriptorProto, with source info, of `name` (e.g. `schemas/v1/cache.proto`)."""
    package = name.rpartition("/")[0].replace("/", ".")
    return next((f for f in _descriptor_set(package).file if f.name == name), None)


@functools.cache
def _descriptor_set(package: str) -> FileDescriptorSet:
    try:
        data = resources.files(package).joinpath(DESCRIPTOR_SET).read_bytes()
    except (ImportError, OSError, ValueError):  # no such package, or no set in it
        return FileDescriptorSet()
    return FileDescriptorSet.FromString(data)


def _name_at(proto: FileDescriptorProto, path: list[int]) -> str | None:
    """The full name of the element a location path points at; None for any other part."""
    if len(path) < 2:
        return None
    kind, index, rest = path[0], path[1], path[2:]
    scope = proto.package
    if kind == _FILE_MESSAGE:
        message = proto.message_type[index]
        return _in_message(message, _join(scope, message.name), rest)
    if kind == _FILE_ENUM:
        enum = proto.enum_type[index]
        return _in_enum(enum, _join(scope, enum.name), rest)
    if kind == _FILE_SERVICE:
        service = proto.service[index]
        name = _join(scope, service.name)
        if not rest:
            return name
        if len(rest) == 2 and rest[0] == _SERVICE_METHOD:
            return _join(name, service.method[rest[1]].name)
    return None


def _in_message(message: DescriptorProto, name: str, rest: list[int]) -> str | None:
    if not rest:
        return name
    if len(rest) < 2:
        return None
    kind, index, more = rest[0], rest[1], rest[2:]
    if kind == _MSG_FIELD and not more:
        return _join(name, message.field[index].name)
    if kind == _MSG_ONEOF and not more:
        return _join(name, message.oneof_decl[index].name)
    if kind == _MSG_NESTED:
        nested = message.nested_type[index]
        return _in_message(nested, _join(name, nested.name), more)
    if kind == _MSG_ENUM:
        enum = message.enum_type[index]
        return _in_enum(enum, _join(name, enum.name), more)
    return None


def _in_enum(enum: EnumDescriptorProto, name: str, rest: list[int]) -> str | None:
    if not rest:
        return name
    if len(rest) == 2 and rest[0] == _ENUM_VALUE:
        return _join(name, enum.value[rest[1]].name)
    return None


def _join(scope: str, name: str) -> str:
    return f"{scope}.{name}" if scope else name


def _clean(text: str) -> str:
    """A comment as text: the lines of a paragraph joined by spaces, paragraphs by a blank
    line."""
    paragraphs: list[list[str]] = [[]]
    for line in text.splitlines():
        stripped = line.strip()
        if stripped:
            paragraphs[-1].append(stripped)
        elif paragraphs[-1]:
            paragraphs.append([])
    return "\n\n".join(" ".join(p) for p in paragraphs if p)
