"""`aifleet`: run the fleet, run one component, call an operation, inspect and replay."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from pydantic import ValidationError
from rich.console import Console

from aifleet.launch import invalid_variables, run, run_worker
from workers.runtime.config import Settings
from workers.runtime.logs import configure as configure_logging

app = typer.Typer(help=__doc__, no_args_is_help=True, pretty_exceptions_enable=False)
err = Console(stderr=True)


def settings() -> Settings:
    """Settings from the environment; an invalid value stops here, naming the variable."""
    try:
        return Settings()
    except ValidationError as exc:
        invalid("configuration", "AIFLEET_", exc)


def invalid(what: str, prefix: str, exc: ValidationError) -> NoReturn:
    """Name every invalid variable (`prefix` + field) and exit with status 2."""
    err.print(f"[red]invalid {what}:[/red]")
    for line in invalid_variables(prefix, exc):
        err.print(f"  {line}")
    raise typer.Exit(2) from None


@app.command()
def up(
    data: Annotated[Path, typer.Option(help="where embedded servers keep their data")] = Path(
        ".aifleet"
    ),
    nats_port: Annotated[int, typer.Option(help="embedded nats-server client port")] = 4222,
    redis_port: Annotated[int, typer.Option(help="embedded Valkey port")] = 6399,
    bridge_port: Annotated[
        int, typer.Option(help="HTTP bridge port on 127.0.0.1 (dev mode, auth off); 0: none")
    ] = 8080,
) -> None:
    """Start the whole fleet on this machine: embedded servers (unless NATS_URL, DATABASE_URL or
    REDIS_URL name real ones), every component and the HTTP bridge, until Ctrl-C."""
    from aifleet.fleet import run_fleet
    from workers.runtime.telemetry import configure as configure_telemetry

    base = settings()
    configure_logging(base.log_level, "console" if sys.stderr.isatty() else base.log_format)
    shutdown = configure_telemetry("aifleet", base.otel_endpoint)
    try:
        run(
            run_fleet(
                base,
                data.resolve(),
                nats_port=nats_port,
                redis_port=redis_port,
                bridge_port=bridge_port,
                console=err,
            )
        )
    finally:
        shutdown()


@app.command("bridge")
def bridge_command(
    host: Annotated[
        str | None, typer.Option(help="address to bind [default: AIFLEET_BRIDGE_HOST, 127.0.0.1]")
    ] = None,
    port: Annotated[
        int | None, typer.Option(help="port to bind [default: AIFLEET_BRIDGE_PORT, 8080]")
    ] = None,
) -> None:
    """Serve the HTTP bridge (REST to NATS, routes from the .proto files) until Ctrl-C.

    Configured by AIFLEET_BRIDGE_* (auth, keys, limits) and NATS_URL; see bridge/README.md."""
    from bridge.config import BridgeSettings, ConfigError
    from bridge.server import run_bridge
    from workers.runtime.telemetry import configure as configure_telemetry

    base = settings()
    configure_logging(base.log_level, base.log_format)
    overrides = {k: v for k, v in (("host", host), ("port", port)) if v is not None}
    try:
        bridge_settings = BridgeSettings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        invalid("bridge configuration", "AIFLEET_BRIDGE_", exc)
    shutdown = configure_telemetry("aifleet-bridge", base.otel_endpoint)
    try:
        run(run_bridge(bridge_settings, err.print))
    except (ConfigError, OSError) as exc:
        err.print(f"[red]cannot start the bridge:[/red] {exc}")
        raise typer.Exit(2) from None
    finally:
        shutdown()


@app.command()
def worker(
    components: Annotated[list[str], typer.Argument(help="component names, e.g. cache")],
) -> None:
    """Run components in this process (what a systemd unit or container runs)."""
    status = run_worker(components)
    if status:
        raise typer.Exit(status)


@app.command()
def call(
    operation: Annotated[str, typer.Argument(help="component.op, e.g. cache.get")],
    body: Annotated[str, typer.Argument(help="request as JSON (proto3 JSON mapping)")] = "{}",
    tenant: Annotated[
        str, typer.Option(help="tenant token (the subject's tenant)")
    ] = os.environ.get("AIFLEET_TENANT", "default"),
    timeout: Annotated[float, typer.Option(help="seconds to wait for the reply")] = 10.0,
    user: Annotated[str | None, typer.Option(help="X-User-ID header")] = None,
) -> None:
    """Call one operation over NATS and print the decoded reply as JSON."""
    from aifleet.calls import call_operation

    configure_logging("WARNING", "console")
    code = run(call_operation(settings(), operation, body, tenant, timeout, user))
    raise typer.Exit(code)


@app.command()
def ingest(
    files: Annotated[list[Path], typer.Argument(help="files to upload (PDF, DOCX, HTML, ...)")],
    tenant: Annotated[
        str, typer.Option(help="tenant token (the subject's tenant)")
    ] = os.environ.get("AIFLEET_TENANT", "default"),
    follow: Annotated[
        bool, typer.Option(help="show each file's processing until it is searchable")
    ] = False,
    auto_ingest: Annotated[bool, typer.Option(help="parse and ingest into RAG right away")] = True,
    timeout: Annotated[float, typer.Option(help="seconds --follow waits in all")] = 600.0,
) -> None:
    """Upload files to the ingestion component over NATS, with a progress bar per file."""
    from aifleet.ingest import ingest_files

    configure_logging("WARNING", "console")
    code = run(
        ingest_files(
            settings(), files, tenant, follow=follow, auto_ingest=auto_ingest, timeout=timeout
        )
    )
    raise typer.Exit(code)


@app.command()
def status(
    wait: Annotated[float, typer.Option(help="seconds to collect discovery answers")] = 0.5,
) -> None:
    """Every running component instance, its endpoints and stats (NATS micro discovery)."""
    from aifleet.discovery import show_status

    configure_logging("WARNING", "console")
    raise typer.Exit(run(show_status(settings(), wait)))


@app.command()
def streams() -> None:
    """Provision the JetStream streams (create missing, never overwrite) and show them."""
    from aifleet.discovery import show_streams

    configure_logging("WARNING", "console")
    raise typer.Exit(run(show_streams(settings())))


@app.command()
def replay(
    tenant: Annotated[str | None, typer.Option(help="only this tenant")] = None,
    component: Annotated[str | None, typer.Option(help="only this component")] = None,
    event: Annotated[str | None, typer.Option(help="only this event name")] = None,
    since: Annotated[str | None, typer.Option(help="ISO time or age like 15m, 2h, 7d")] = None,
    until: Annotated[
        str | None, typer.Option(help="ISO time or age; stop at events after it")
    ] = None,
    follow: Annotated[bool, typer.Option(help="keep printing new events")] = False,
) -> None:
    """Print events from AI_EVENTS as JSON lines, oldest first."""
    from aifleet.replay import replay_events

    configure_logging("WARNING", "console")
    raise typer.Exit(run(replay_events(settings(), tenant, component, event, since, until, follow)))


llmops_app = typer.Typer(help="The LLMOps component's maintenance commands.")
app.add_typer(llmops_app, name="llmops")


@llmops_app.command("rebuild")
def llmops_rebuild(
    since: Annotated[str, typer.Option(help="ISO time or age like 2h, 7d: replay from here")],
    tenant: Annotated[str | None, typer.Option(help="only this tenant")] = None,
) -> None:
    """Insert the llm_operation events of AI_EVENTS (from --since) missing from the tables."""
    from aifleet.connection import connect
    from aifleet.replay import parse_time
    from workers.llmops.rebuild import rebuild

    configure_logging("WARNING", "console")
    try:
        start = parse_time(since)
    except ValueError as exc:
        err.print(f"[red]invalid argument:[/red] {exc}")
        raise typer.Exit(2) from None
    config = settings()

    async def rebuilt() -> int:
        return await rebuild(await connect(config), config, start, tenant)

    raise typer.Exit(run(rebuilt()))


ml_app = typer.Typer(help="The ML component's commands.")
app.add_typer(ml_app, name="ml")


@ml_app.command("watch")
def ml_watch(
    training_id: Annotated[str, typer.Argument(help="the id train answered with")],
    tenant: Annotated[
        str, typer.Option(help="tenant token (the subject's tenant)")
    ] = os.environ.get("AIFLEET_TENANT", "default"),
) -> None:
    """Follow a training until it finished: progress on stderr, the training as JSON."""
    from aifleet.connection import connect
    from workers.ml.watch import watch_training

    configure_logging("WARNING", "console")
    config = settings()

    async def watched() -> int:
        return await watch_training(await connect(config), tenant, training_id)

    raise typer.Exit(run(watched()))


agent_app = typer.Typer(help="Chat with an agent, watch its tasks.")
app.add_typer(agent_app, name="agent")
TENANT = os.environ.get("AIFLEET_TENANT", "default")


@agent_app.command("chat")
def agent_chat(
    agent_id: Annotated[str, typer.Argument(help="the agent's id")],
    tenant: Annotated[str, typer.Option(help="tenant token")] = TENANT,
    user: Annotated[str | None, typer.Option(help="X-User-ID header")] = None,
    session: Annotated[str, typer.Option(help="continue this session")] = "",
    timeout: Annotated[float, typer.Option(help="seconds one answer may take")] = 120.0,
) -> None:
    """Chat with an agent in the terminal; answers stream in with their tool calls."""
    from aifleet.agents import chat

    configure_logging("WARNING", "console")
    raise typer.Exit(run(chat(settings(), agent_id, tenant, user, session, timeout)))


@agent_app.command("task")
def agent_task(
    agent_id: Annotated[str, typer.Argument(help="the agent's id")],
    task_id: Annotated[str, typer.Argument(help="the task's id (from agent.execute)")],
    tenant: Annotated[str, typer.Option(help="tenant token")] = TENANT,
    user: Annotated[str | None, typer.Option(help="X-User-ID header")] = None,
    watch: Annotated[bool, typer.Option(help="show progress until the task finishes")] = False,
) -> None:
    """A task's status, progress and result (exit 1 when it failed)."""
    from aifleet.agents import task

    configure_logging("WARNING", "console")
    raise typer.Exit(run(task(settings(), agent_id, task_id, tenant, user, watch)))


rag_app = typer.Typer(help="The RAG component's commands.")
app.add_typer(rag_app, name="rag")


@rag_app.command("ingest")
def rag_ingest(
    path: Annotated[Path, typer.Argument(help="a text or Markdown file (UTF-8)")],
    tenant: Annotated[
        str, typer.Option(help="tenant token (the subject's tenant)")
    ] = os.environ.get("AIFLEET_TENANT", "default"),
    document_id: Annotated[str, typer.Option("--id", help="document id; default: new")] = "",
    title: Annotated[str, typer.Option(help="default: the file name")] = "",
    source: Annotated[str, typer.Option(help="default: the path")] = "",
) -> None:
    """Ingest a file with rag.create_document; a large one shows the job's progress."""
    from aifleet.documents import ingest_file

    configure_logging("WARNING", "console")
    raise typer.Exit(run(ingest_file(settings(), path, tenant, document_id, title, source)))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
