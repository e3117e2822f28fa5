"""The .proto contracts: generated code is current and every rpc is fully declared."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pytest
from google.api import annotations_pb2, http_pb2

from schemas import generate, registry
from workers.components import available, load


def test_generated_code_matches_the_proto_sources(tmp_path: Path) -> None:
    """Regenerating from the .proto files changes nothing that is committed."""
    with contextlib.redirect_stdout(io.StringIO()):
        generate.generate(tmp_path)
    assert generate.stale_files(tmp_path) == []


def test_a_changed_generated_file_is_reported_stale(tmp_path: Path) -> None:
    """The staleness check notices a generated file that differs from the committed one."""
    with contextlib.redirect_stdout(io.StringIO()):
        generate.generate(tmp_path)
    changed = tmp_path / "schemas" / "v1" / "cache_pb2.py"
    changed.write_text(changed.read_text() + "\n# edited\n")
    assert generate.stale_files(tmp_path) == ["schemas/v1/cache_pb2.py"]


@pytest.mark.parametrize("component", available())
def test_every_rpc_has_an_http_route_under_its_component(component: str) -> None:
    """Each rpc declares a google.api.http rule with a path under /api/v1/."""
    for op, rpc in registry.rpcs_of(registry.services()[component]).items():
        rule = rpc.method.GetOptions().Extensions[annotations_pb2.http]
        assert isinstance(rule, http_pb2.HttpRule)
        path = getattr(rule, rule.WhichOneof("pattern") or "get")
        assert path.startswith("/api/v1/"), (component, op, path)


def test_operation_names_are_snake_case_of_rpc_names() -> None:
    """`rpc InvalidateAll` is the op `invalidate_all`; `GenerateStream` is `generate_stream`."""
    assert registry.snake("InvalidateAll") == "invalidate_all"
    assert registry.snake("GenerateStream") == "generate_stream"
    assert registry.snake("Get") == "get"


def test_every_component_package_serves_its_whole_contract() -> None:
    """Each discovered component names a service whose rpcs the registry knows."""
    assert "cache" in available()
    for name in available():
        component = load(name)
        assert component.name == name
        assert set(component.rpcs) == set(registry.rpcs_of(registry.services()[name]))
