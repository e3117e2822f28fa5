"""No worker leaves session state on a pooled connection (read from the source, nothing run).

The fleet's pool skips asyncpg's reset query on release (workers/runtime/postgres.py), which is
sound only while no statement a worker sends sets a session setting, LISTENs, or takes a
session advisory lock outside `session_lock`.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

from tests.conftest import REPO_ROOT

QUERIES = {"execute", "executemany", "fetch", "fetchrow", "fetchval", "cursor", "prepare"}
SESSION_LOCK_MODULE = REPO_ROOT / "workers" / "runtime" / "postgres.py"
STATEFUL = re.compile(
    r"^\s*(SET(?!\s+LOCAL\b)|RESET\b|LISTEN\b|DECLARE\b.*\bWITH\s+HOLD\b)", re.I | re.S
)
SESSION_LOCK = re.compile(r"pg_advisory_lock|pg_try_advisory_lock|set_config", re.I)


def sql_texts(path: Path) -> Iterator[tuple[int, str]]:
    """(line, constant text) of the SQL given as the first argument of every query call; an
    f-string's constant parts count, each interpolation read as "x"."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if not (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in QUERIES
            and node.args
        ):
            continue
        arg = node.args[0]
        if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
            yield node.lineno, arg.value
        elif isinstance(arg, ast.JoinedStr):
            parts = [
                v.value if isinstance(v, ast.Constant) else "x"
                for v in arg.values
                if isinstance(v, ast.Constant | ast.FormattedValue)
            ]
            yield node.lineno, "".join(str(p) for p in parts)


def stateful_statements(path: Path) -> list[str]:
    found = []
    where = path.relative_to(REPO_ROOT) if path.is_relative_to(REPO_ROOT) else path.name
    for line, text in sql_texts(path):
        for statement in text.split(";"):
            if STATEFUL.match(statement) or (
                path != SESSION_LOCK_MODULE and SESSION_LOCK.search(statement)
            ):
                found.append(f"{where}:{line}: {statement.strip()[:60]}")
    return found


def test_workers_leave_no_session_state_on_pooled_connections() -> None:
    """Only SET LOCAL, no RESET/LISTEN/held cursors, session locks only through session_lock."""
    found = [
        s
        for path in sorted((REPO_ROOT / "workers").rglob("*.py"))
        for s in stateful_statements(path)
    ]
    assert found == []


def test_the_check_finds_session_state(tmp_path: Path) -> None:
    """The scan itself reports each kind of session state it guards against."""
    module = tmp_path / "module.py"
    module.write_text(
        "async def f(conn, name):\n"
        "    await conn.execute('SET statement_timeout = 5')\n"
        "    await conn.execute('SET LOCAL work_mem = 1; SET search_path TO x')\n"
        "    await conn.execute(f'LISTEN {name}')\n"
        "    await conn.fetchval('SELECT pg_advisory_lock(1)')\n"
        "    await conn.execute('SET LOCAL lock_timeout = 1')\n"
        "    await conn.execute('UPDATE t SET v = 1')\n"
    )
    found = stateful_statements(module)
    assert [f.split(": ", 1)[1] for f in found] == [
        "SET statement_timeout = 5",
        "SET search_path TO x",
        "LISTEN x",
        "SELECT pg_advisory_lock(1)",
    ]
