"""Regenerate the Python code of every .proto in the repo (`make proto`), or check it is fresh.

Generated code is committed so that installing the package needs no protoc; `--check` fails CI
when a .proto changed without regenerating. Beside the code of each proto directory goes
`descriptors.binpb`, a FileDescriptorSet of its .proto files with source info: the comments the
bridge turns into OpenAPI summaries and descriptions (bridge/protodoc.py).
"""

from __future__ import annotations

import argparse
import filecmp
import os
import shutil
import sys
import tempfile
from importlib import resources
from pathlib import Path

from google.api import annotations_pb2
from google.protobuf.descriptor_pb2 import FileDescriptorSet
from grpc_tools import protoc

from schemas.registry import DESCRIPTOR_SET
from schemas.stubs import render

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIRS = ("schemas/v1", "tests/support")


def proto_files() -> list[str]:
    """Every .proto the project owns, relative to the repo root (its import root)."""
    return sorted(str(p.relative_to(ROOT)) for d in PROTO_DIRS for p in (ROOT / d).glob("*.proto"))


def generate(out: Path) -> None:
    """Run protoc (python + mypy stubs) over all project protos into `out`."""
    include_dirs = {
        str(resources.files("grpc_tools") / "_proto"),
        # googleapis-common-protos ships google/api/*.proto next to its generated modules.
        str(Path(annotations_pb2.__file__).parents[2]),
    }
    # protoc finds protoc-gen-mypy on PATH; it lives beside this interpreter.
    bindir = str(Path(sys.executable).parent)
    os.environ["PATH"] = bindir + os.pathsep + os.environ.get("PATH", "")
    args = ["protoc", f"-I{ROOT}", *(f"-I{d}" for d in sorted(include_dirs))]
    # Every file and its imports, for the typed rpc stubs; removed once they are written.
    everything = out / "all.binpb"
    generate_args = [f"--python_out={out}", f"--mypy_out={out}"]
    generate_args += [f"--descriptor_set_out={everything}", "--include_imports", *proto_files()]
    if protoc.main([*args, *generate_args]) != 0:
        raise SystemExit("protoc failed")
    write_stubs(out, FileDescriptorSet.FromString(everything.read_bytes()))
    everything.unlink()
    # The comments, per proto directory, for the bridge's OpenAPI document.
    for directory in PROTO_DIRS:
        sources = [f for f in proto_files() if str(Path(f).parent) == directory]
        descriptors = out / directory / DESCRIPTOR_SET
        descriptors.parent.mkdir(parents=True, exist_ok=True)
        source_info = ["--include_source_info", f"--descriptor_set_out={descriptors}"]
        if sources and protoc.main([*args, *source_info, *sources]) != 0:
            raise SystemExit("protoc failed")


def write_stubs(out: Path, files: FileDescriptorSet) -> None:
    """The typed rpc handles (`<name>_rpc.py`) of every project file that declares a service."""
    ours = set(proto_files())
    for file in files.file:
        source = render(file, files) if file.name in ours else None
        if source is not None:
            (out / file.name.replace(".proto", "_rpc.py")).write_text(source)


def generated_files(base: Path) -> list[Path]:
    return sorted(
        p.relative_to(base)
        for d in PROTO_DIRS
        for pattern in ("*_pb2.py*", "*_rpc.py", DESCRIPTOR_SET)
        for p in (base / d).glob(pattern)
    )


def stale_files(fresh_dir: Path) -> list[str]:
    """Committed generated files that differ from, lack, or outlive a fresh generation."""
    fresh = generated_files(fresh_dir)
    stale = [
        str(f)
        for f in fresh
        if not (ROOT / f).exists() or not filecmp.cmp(fresh_dir / f, ROOT / f, shallow=False)
    ]
    return stale + [str(f) for f in generated_files(ROOT) if f not in fresh]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if generated code is stale")
    check = parser.parse_args().check
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        generate(out)
        fresh = generated_files(out)
        if check:
            stale = stale_files(out)
            if stale:
                sys.exit("generated code is stale, run `make proto`: " + ", ".join(stale))
            print(f"generated code is fresh ({len(fresh)} files)")
            return
        for f in generated_files(ROOT):
            if f not in fresh:
                (ROOT / f).unlink()
        for f in fresh:
            shutil.copyfile(out / f, ROOT / f)
        print(f"generated {len(fresh)} files")


if __name__ == "__main__":
    main()
