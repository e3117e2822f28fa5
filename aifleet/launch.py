"""The `aifleet` entry point, and `aifleet worker NAME...` without the rest of the CLI.

A worker process is what runs once per replica (systemd unit, container), so it should not pay
for the interactive CLI: typer and rich are ~8 MiB resident and 40 ms of start-up. Plain
`aifleet worker cache [rag ...]` runs here; anything else (`--help`, options, other commands)
goes to the full CLI in aifleet.cli.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Coroutine
from typing import Any, TypeVar

from pydantic import ValidationError

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run on uvloop when it is installed (it is on Linux and macOS)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    result: T = uvloop.run(coro)
    return result


def invalid_variables(prefix: str, exc: ValidationError) -> list[str]:
    """One line per invalid variable, named as it is set (`prefix` + field)."""
    lines = []
    for e in exc.errors():
        name = prefix + ".".join(str(p) for p in e["loc"]).upper() if e["loc"] else prefix + "*"
        lines.append(f"{name}: {e['msg']}")
    return lines


def run_worker(components: list[str]) -> int:
    """Run components in this process until SIGTERM; the exit status (2: configuration, 3:
    NATS unreachable at start)."""
    from workers.components import load
    from workers.runtime.config import ConfigurationError, Settings
    from workers.runtime.logs import configure as configure_logging
    from workers.runtime.telemetry import configure as configure_telemetry
    from workers.runtime.worker import Worker

    try:
        settings = Settings()
    except ValidationError as exc:
        lines = invalid_variables("AIFLEET_", exc)
        return fail("invalid configuration:", *("  " + line for line in lines))
    configure_logging(settings.log_level, settings.log_format)
    try:
        loaded = [load(name) for name in components]
    except KeyError as exc:
        return fail(str(exc.args[0]))
    shutdown = configure_telemetry("aifleet-" + "-".join(components), settings.otel_endpoint)
    try:
        run(Worker(loaded, settings).run())
    except ConfigurationError as exc:
        return fail(f"cannot start: {exc}")
    except ConnectionError as exc:  # NATS unreachable at start
        return fail(f"cannot start: {exc}", status=3)
    finally:
        shutdown()
    return 0


def fail(*lines: str, status: int = 2) -> int:
    print("\n".join(lines), file=sys.stderr)
    return status


def main() -> None:
    args = sys.argv[1:]
    if len(args) >= 2 and args[0] == "worker" and not any(a.startswith("-") for a in args[1:]):
        raise SystemExit(run_worker(args[1:]))
    from aifleet.cli import main as cli_main

    cli_main()
