"""Writes the typed rpc handles of a .proto file (`<name>_rpc.py`, see schemas/contracts.py).

Rendered from the FileDescriptorSet protoc produces, so nothing generated has to be imported
while it is being generated. The output is formatted as ruff formats it, so the generated files
pass the same lint as the rest of the code.
"""

from __future__ import annotations

from google.protobuf.descriptor_pb2 import FileDescriptorProto, FileDescriptorSet

from schemas.registry import snake

FIRST_PARTY = frozenset({"schemas", "subjects", "workers", "bridge", "tests", "benchmarks"})
HEADER = '"""Typed rpc handles of {source}, written by `make proto`: do not edit."""\n'


def module_of(proto_file: str) -> str:
    """`schemas/v1/cache.proto` -> `schemas.v1.cache_pb2` (protoc's Python module naming)."""
    return proto_file.removesuffix(".proto").replace("/", ".").replace("-", "_") + "_pb2"


def _message_paths(files: FileDescriptorSet) -> dict[str, tuple[str, str]]:
    """Full message name (`.aifleet.v1.GetRequest`) -> (module, attribute path in it)."""
    out: dict[str, tuple[str, str]] = {}

    def walk(prefix: str, path: str, messages: object, module: str) -> None:
        for m in messages:  # type: ignore[attr-defined]
            name, attr = f"{prefix}.{m.name}", f"{path}.{m.name}" if path else m.name
            out[name] = (module, attr)
            walk(name, attr, m.nested_type, module)

    for f in files.file:
        walk(f".{f.package}" if f.package else "", "", f.message_type, module_of(f.name))
    return out


def render(file: FileDescriptorProto, files: FileDescriptorSet) -> str | None:
    """The `_rpc.py` source of one file, or None when it declares no service."""
    if not file.service:
        return None
    paths = _message_paths(files)
    modules: set[str] = set()
    kinds: set[str] = set()
    classes: list[str] = []
    for service in file.service:
        component = snake(service.name.removesuffix("Service"))
        full = f"{file.package}.{service.name}" if file.package else service.name
        lines = [
            f"class {service.name}:",
            f'    """The `{component}` component ({full})."""',
            "",
        ]
        for m in service.method:
            kind = "Streaming" if m.server_streaming else "Unary"
            kinds.add(kind)
            request, response = paths[m.input_type], paths[m.output_type]
            modules.update((request[0], response[0]))
            lines += [
                f"    {m.name}: Final = {kind}(",
                f'        "{component}",',
                f'        "{snake(m.name)}",',
                f"        {_ref(request)},",
                f"        {_ref(response)},",
                "    )",
            ]
        classes.append("\n".join(lines))
    return (
        HEADER.format(source=file.name)
        + "\nfrom __future__ import annotations\n\nfrom typing import Final\n\n"
        + _imports(modules, kinds)
        + "\n\n"
        + "\n\n\n".join(classes)
        + "\n"
    )


def _ref(path: tuple[str, str]) -> str:
    module, attr = path
    return f"{module.rsplit('.', 1)[-1]}.{attr}"


def _imports(modules: set[str], kinds: set[str]) -> str:
    """Import sections as ruff's isort orders them: third party, then this project."""
    by_package: dict[str, list[str]] = {"schemas.contracts": sorted(kinds)}
    for module in modules:
        package, _, name = module.rpartition(".")
        by_package.setdefault(package, []).append(name)
    ours = {p for p in by_package if p.split(".")[0] in FIRST_PARTY}
    sections = [sorted(set(by_package) - ours), sorted(ours)]
    return "\n".join(
        "".join(f"from {p} import {', '.join(sorted(by_package[p]))}\n" for p in section)
        for section in sections
        if section
    )
