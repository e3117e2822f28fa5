"""The layers of the source tree, read from the imports of every module (no module is run).

contracts (schemas/, subjects/) <- workers/ (runtime and components) <- bridge/ <- aifleet/ (the
CLI and the embedded fleet: the composition root). A layer never imports one above it, also not
lazily inside a function or through `importlib.import_module("...")`.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

# package -> the top-level packages its modules must not import
FORBIDDEN = {
    "schemas": {"workers", "bridge", "aifleet"},
    "subjects": {"workers", "bridge", "aifleet"},
    "workers": {"bridge", "aifleet"},
    "bridge": {"aifleet"},
}


def imported(tree: ast.AST) -> Iterator[tuple[int, str]]:
    """(line, module) of every import in a module, relative ones included as written."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute | ast.Name)
            and (node.func.attr if isinstance(node.func, ast.Attribute) else node.func.id)
            in ("import_module", "__import__")
            and node.args
        ):
            yield node.lineno, _leading_text(node.args[0])


def _leading_text(arg: ast.expr) -> str:
    """The constant start of a module name given as a string or an f-string."""
    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
        return arg.value
    if isinstance(arg, ast.JoinedStr) and arg.values:
        first = arg.values[0]
        if isinstance(first, ast.Constant) and isinstance(first.value, str):
            return first.value
    return ""


def violations(root: Path, package: str, forbidden: set[str]) -> list[str]:
    out = []
    for path in sorted((root / package).rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for line, module in imported(tree):
            top = module.split(".", 1)[0]
            if top in forbidden:
                out.append(f"{path.relative_to(root)}:{line} imports {module}")
    return out


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_layer_imports_one_above_it(package: str) -> None:
    """schemas/subjects import no workers, bridge or aifleet; workers no bridge or aifleet;
    bridge no aifleet."""
    assert (REPO_ROOT / package).is_dir()
    assert violations(REPO_ROOT, package, FORBIDDEN[package]) == []


def test_the_check_sees_lazy_and_dynamic_imports(tmp_path: Path) -> None:
    """An import inside a function and an import_module of a literal or f-string are caught;
    a relative import and an unrelated name are not."""
    (tmp_path / "workers").mkdir()
    (tmp_path / "workers" / "x.py").write_text(
        "import importlib\n"
        "from . import sibling\n"
        "import bridgework\n"
        "def f(name):\n"
        "    from bridge.app import create_app\n"
        "    importlib.import_module('aifleet.cli')\n"
        "    return importlib.import_module(f'aifleet.{name}')\n"
    )
    assert violations(tmp_path, "workers", FORBIDDEN["workers"]) == [
        "workers/x.py:5 imports bridge.app",
        "workers/x.py:6 imports aifleet.cli",
        "workers/x.py:7 imports aifleet.",
    ]


def test_the_composition_root_is_not_inside_workers() -> None:
    """The CLI, the fleet runner and the embedded servers live in aifleet/; no module at the top
    of a package is named like a standard library module (as workers/inspect.py was)."""
    for name in ("cli", "fleet", "embedded"):
        assert (REPO_ROOT / "aifleet" / f"{name}.py").is_file()
        assert not (REPO_ROOT / "workers" / f"{name}.py").exists()
    shadowing = [
        str(p.relative_to(REPO_ROOT))
        for package in ("workers", "bridge", "aifleet", "schemas", "subjects")
        for p in (REPO_ROOT / package).glob("*.py")
        if p.stem in sys.stdlib_module_names
    ]
    assert shadowing == []
