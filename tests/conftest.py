"""Shared fixtures: real NATS, PostgreSQL and Valkey servers, no mocks.

Servers start lazily (a unit-test run starts none) and are stopped even when tests fail:
PostgreSQL and Valkey once per session, nats-server once per test module. Fault tests that
kill or restart a server take their own from a factory fixture, so the servers other tests rely
on are never disturbed.
"""

from __future__ import annotations

import contextlib
import itertools
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client as NATS

from aifleet.embedded import EmbeddedNats, EmbeddedPostgres, EmbeddedValkey

REPO_ROOT = Path(__file__).resolve().parent.parent
NATS_CONFIG = REPO_ROOT / "nats-server.conf"

# Factory signatures (keyword arguments are passed on to the Embedded* constructor).
NatsFactory = Callable[..., EmbeddedNats]
PostgresFactory = Callable[..., EmbeddedPostgres]
ValkeyFactory = Callable[..., EmbeddedValkey]


@pytest.fixture(scope="module")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedNats]:
    """nats-server with JetStream and the repository's nats-server.conf, one per test module
    (it starts in milliseconds): a worker one module leaves running can neither answer nor be
    counted in another module's tests."""
    server = EmbeddedNats(tmp_path_factory.mktemp("nats"), config=NATS_CONFIG)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def postgres_home() -> Iterator[Path]:
    """A directory for a PostgreSQL data dir, outside pytest's temp root.

    Run as root, pgserver starts PostgreSQL as the unprivileged `pgserver` user and opens the
    path to its data dir for it; every new pytest session resets its own temp root to 0700,
    which would cut a server of a concurrent session off from its files (it then crashes)."""
    home = Path(tempfile.mkdtemp(prefix="aifleet-test-pg-"))
    try:
        yield home
    finally:
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def postgres_dir() -> Iterator[Path]:
    """An empty directory outside pytest's temp root, for a test that starts PostgreSQL itself
    (e.g. `aifleet up` in a fresh directory)."""
    with postgres_home() as home:
        yield home


@pytest.fixture(scope="session")
def postgres() -> Iterator[EmbeddedPostgres]:
    """PostgreSQL 18 with pgvector; connect with `postgres.dsn` (database `aifleet`)."""
    with postgres_home() as home:
        server = EmbeddedPostgres(home / "pgdata")
        server.start()
        try:
            yield server
        finally:
            server.stop()


@pytest.fixture(scope="session")
def valkey(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedValkey]:
    """Valkey (Redis protocol); connect with `valkey.url`."""
    server = EmbeddedValkey(tmp_path_factory.mktemp("valkey"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def nc(nats_server: EmbeddedNats) -> AsyncIterator[NATS]:
    """A nats-py connection to the session nats-server, closed after the test."""
    client = await nats.connect(nats_server.url, name="pytest", connect_timeout=5)
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture
def nats_factory(tmp_path: Path) -> Iterator[NatsFactory]:
    """`nats_factory(port=None, config=<repo conf>)` starts a killable nats-server of the test."""
    names = itertools.count()
    with contextlib.ExitStack() as servers:

        def start(*, port: int | None = None, config: Path | None = NATS_CONFIG) -> EmbeddedNats:
            server = EmbeddedNats(tmp_path / f"nats-{next(names)}", port=port, config=config)
            servers.callback(server.stop)
            server.start()
            return server

        yield start


@pytest.fixture
def postgres_factory() -> Iterator[PostgresFactory]:
    """`postgres_factory(database="aifleet")` starts a PostgreSQL of the test (~1 s: initdb)."""
    names = itertools.count()
    with postgres_home() as home, contextlib.ExitStack() as servers:

        def start(*, database: str = "aifleet") -> EmbeddedPostgres:
            server = EmbeddedPostgres(home / f"pg-{next(names)}", database=database)
            servers.callback(server.stop)
            server.start()
            return server

        yield start


@pytest.fixture
def valkey_factory(tmp_path: Path) -> Iterator[ValkeyFactory]:
    """`valkey_factory(port=None)` starts a killable Valkey of the test."""
    names = itertools.count()
    with contextlib.ExitStack() as servers:

        def start(*, port: int | None = None) -> EmbeddedValkey:
            server = EmbeddedValkey(tmp_path / f"valkey-{next(names)}", port=port)
            servers.callback(server.stop)
            server.start()
            return server

        yield start
