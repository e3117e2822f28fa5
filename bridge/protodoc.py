"""Comments of the .proto sources, for the OpenAPI document's summaries and descriptions.

The generated descriptors carry no source comments, so the .proto file a descriptor names is
read from the import path (the sources ship as package data beside the generated code). A
missing source only means an undocumented operation, never a failed start.
"""

from __future__ import annotations

import functools
import re
import sys
from pathlib import Path

from google.protobuf.descriptor import FileDescriptor

_BLOCK = re.compile(r"^\s*(message|service|enum)\s+(\w+)")
_RPC = re.compile(r"^\s*rpc\s+(\w+)\s*\(")
_FIELD = re.compile(r"^\s*(?:repeated\s+|optional\s+)?(?:map<[^>]+>|[\w.]+)\s+(\w+)\s*=\s*\d+")


def comments(file: FileDescriptor) -> dict[str, str]:
    """Leading `//` comments by full name: `pkg.Message`, `pkg.Message.field`, `pkg.Svc.Rpc`."""
    return dict(_comments(file.name, file.package))


@functools.cache
def _comments(name: str, package: str) -> tuple[tuple[str, str], ...]:
    source = _find(name)
    if source is None:
        return ()
    out: dict[str, str] = {}
    scope: list[str] = [package] if package else []
    opened: list[bool] = []  # per `{`: whether it opened a named scope
    pending: list[str] = []
    for line in source.read_text(encoding="utf-8", errors="replace").splitlines():
        stripped = line.strip()
        if stripped.startswith("//"):
            pending.append(stripped[2:].strip())
            continue
        text = " ".join(pending)
        pending = []
        block = _BLOCK.match(line)
        if block:
            scope.append(block.group(2))
            if text:
                out[".".join(scope)] = text
        else:
            rpc = _RPC.match(line)
            field = None if rpc else _FIELD.match(line)
            found = rpc or field
            if found and text:
                out[".".join([*scope, found.group(1)])] = text
        for char in line.split("//", 1)[0]:
            if char == "{":
                opened.append(bool(block))
                block = None
            elif char == "}" and opened and opened.pop():
                scope.pop()
    return tuple(out.items())


def _find(name: str) -> Path | None:
    for entry in sys.path:
        candidate = Path(entry or ".") / name
        if candidate.is_file():
            return candidate
    return None
