"""The proto comments reach /openapi.json wherever the package runs: from the installed
`aifleet` console script, and from a wheel built like the container image's install, with
no .proto source and no repository on sys.path."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

import httpx
import pytest

from aifleet.embedded import free_port
from bridge.routes import bindings
from schemas import registry
from tests.conftest import REPO_ROOT

# What a regular install ships: the Dockerfile's build context.
PACKAGES = ("schemas", "subjects", "workers", "bridge", "aifleet")


def builtin_operations() -> set[str]:
    """operationIds of the product's annotated rpcs (the registry before tests add theirs)."""
    return {
        f"{b.rpc.method.containing_service.name}_{b.rpc.method.name}"
        for b in bindings(registry.services().values())
        if b.rpc.method.containing_service.file.name.startswith("schemas/")
    }


def check_documented(doc: dict[str, Any]) -> None:
    """Every product operation has a summary; fields and tags carry their comments."""
    ops = {op["operationId"]: op for path in doc["paths"].values() for op in path.values()}
    missing = sorted(i for i in builtin_operations() if not ops.get(i, {}).get("summary"))
    assert missing == []
    assert ops["CacheService_Get"]["summary"] == "Read one entry."
    assert "found" in ops["CacheService_Get"]["description"]
    schemas = doc["components"]["schemas"]
    ttl = schemas["aifleet.v1.SetRequest"]["properties"]["ttl_seconds"]
    assert ttl["description"].startswith("Time to live in seconds")
    tags = {t["name"]: t.get("description", "") for t in doc["tags"]}
    assert tags["cache"].startswith("The cache")


def test_the_console_script_bridge_serves_the_comments(tmp_path: Path) -> None:
    """`aifleet bridge` started from an empty directory (as `make run` starts the fleet) has
    summaries, descriptions and tag texts in its document, and serves /docs."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIFLEET_", "NATS_"))}
    env.pop("PYTHONPATH", None)
    env |= {
        "AIFLEET_BRIDGE_AUTH": "off",
        "AIFLEET_BRIDGE_PORT": str(port),
        "NATS_URL": f"nats://127.0.0.1:{free_port()}",  # nothing there: docs need no NATS
    }
    script = Path(sys.executable).parent / "aifleet"
    proc = subprocess.Popen(
        [str(script), "bridge"], cwd=tmp_path, env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(url + "/healthz", timeout=1).raise_for_status()
                break
            except httpx.HTTPError:
                assert proc.poll() is None, "aifleet bridge exited"
                assert time.monotonic() < deadline, "aifleet bridge did not start"
                time.sleep(0.1)
        check_documented(httpx.get(url + "/openapi.json").json())
        page = httpx.get(url + "/docs")
        assert page.status_code == 200
        assert "swagger-ui-bundle.js" in page.text
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The package built as a wheel from a copy of what the image's build copies."""
    source = tmp_path_factory.mktemp("context")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO_ROOT / name, source / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for package in PACKAGES:
        shutil.copytree(REPO_ROOT / package, source / package, ignore=ignore)
    out = tmp_path_factory.mktemp("dist")
    build = (
        "from setuptools import build_meta as b; print(b.build_wheel(__import__('sys').argv[1]))"
    )
    result = subprocess.run(
        [sys.executable, "-c", build, str(out)],
        cwd=source, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    return out / result.stdout.strip().splitlines()[-1]


def test_the_wheel_carries_the_comments(wheel: Path, tmp_path: Path) -> None:
    """The wheel holds the descriptor sets; installed alone (no sources, no repository on
    sys.path) its bridge's document has every summary."""
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        assert "schemas/v1/descriptors.binpb" in names
        assert not any(n.startswith("tests/") for n in names)
        archive.extractall(tmp_path / "site")
    for proto in (tmp_path / "site").rglob("*.proto"):
        proto.unlink()  # the comments must not come from the .proto sources
    probe = (
        "import json, sys\n"
        "sys.path.insert(0, sys.argv[1])\n"
        "import schemas\n"
        "assert schemas.__file__.startswith(sys.argv[1]), schemas.__file__\n"
        "from bridge.config import BridgeSettings\n"
        "from bridge.openapi import document\n"
        "from bridge.routes import bindings\n"
        "from schemas.registry import services\n"
        "settings = BridgeSettings(nats_url='nats://x', auth='off')\n"
        "print(json.dumps(document(bindings(services().values()), settings)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-I", "-c", probe, str(tmp_path / "site")],
        cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    check_documented(json.loads(result.stdout.splitlines()[-1]))
