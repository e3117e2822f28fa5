"""What a process shares among its components: the NATS connection, and what is opened on first
use — one Redis client, one asyncpg pool, the outbox (with its one flusher) and the files
bucket per process."""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from workers.runtime.client import Client
from workers.runtime.config import ConfigurationError, Settings
from workers.runtime.events import EventPublisher

if TYPE_CHECKING:
    import asyncpg
    import redis.asyncio

    from workers.runtime.files import FileStore
    from workers.runtime.outbox import Outbox


class Resources:
    def __init__(self, nc: NATS, settings: Settings) -> None:
        self.nc = nc
        self.js: JetStreamContext = nc.jetstream()
        self.settings = settings
        self.client = Client(nc)
        self.events = EventPublisher(self.js)
        self._redis: redis.asyncio.Redis | None = None
        self._pool: asyncpg.Pool | None = None
        self._pool_lock = asyncio.Lock()
        self._outbox: Outbox | None = None
        self._flusher: asyncio.Task[None] | None = None
        self._files: FileStore | None = None
        self._open_lock = asyncio.Lock()

    def redis(self) -> redis.asyncio.Redis:
        """The process's Redis-protocol client. Fails fast (within `dependency_timeout`) when
        the server is down, so callers answer 503 instead of hanging.

        Its pool blocks: a command finding every connection busy waits (at most
        `dependency_timeout`) for one to come back. redis-py's default pool raises
        `MaxConnectionsError` at once instead, which under a burst of concurrent requests
        (hundreds in flight on a busy event loop) turned healthy requests into 503s."""
        if self._redis is None:
            import redis.asyncio
            from redis.asyncio.retry import Retry
            from redis.backoff import NoBackoff

            if not self.settings.redis_url:
                raise ConfigurationError(
                    "REDIS_URL is not set; this component needs a Redis-protocol server"
                )
            timeout = self.settings.dependency_timeout
            pool = redis.asyncio.BlockingConnectionPool.from_url(
                self.settings.redis_url,
                max_connections=self.settings.redis_max_connections,
                timeout=timeout,
                socket_connect_timeout=timeout,
                socket_timeout=timeout,
                # One retry for a broken connection (a restarted server leaves dead sockets in
                # the pool), none for a timeout: a hung server costs one dependency_timeout.
                retry=Retry(
                    NoBackoff(), retries=1, supported_errors=(redis.exceptions.ConnectionError,)
                ),
                health_check_interval=30,
            )
            self._redis = redis.asyncio.Redis.from_pool(pool)
        return self._redis

    async def postgres(self) -> asyncpg.Pool:
        """The process's asyncpg pool, created on first use."""
        async with self._pool_lock:
            if self._pool is None:
                from workers.runtime.postgres import create_pool

                if not self.settings.database_url:
                    raise ConfigurationError(
                        "DATABASE_URL is not set; this component needs PostgreSQL"
                    )
                self._pool = await create_pool(
                    self.settings.database_url,
                    timeout=self.settings.dependency_timeout,
                    max_size=self.settings.postgres_pool_size,
                )
            return self._pool

    async def outbox(self) -> Outbox:
        """The fleet's transactional outbox on this process's pool; its flusher runs until the
        process stops (one per process, however many components use it)."""
        async with self._open_lock:
            if self._outbox is None:
                from workers.runtime.outbox import Outbox

                self._outbox = await Outbox.open(
                    await self.postgres(),
                    self.events,
                    grace=self.settings.outbox_grace,
                    interval=self.settings.outbox_interval,
                )
                self._flusher = asyncio.create_task(self._outbox.run(), name="outbox-flusher")
            return self._outbox

    async def files(self) -> FileStore:
        """The fleet's files bucket (JetStream Object Store), created if missing."""
        async with self._open_lock:
            if self._files is None:
                from workers.runtime.files import FileStore

                self._files = await FileStore.open(self.js, max_bytes=self.settings.files_max_bytes)
            return self._files

    async def close(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
            self._flusher = None
        self._outbox = None
        self._files = None
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None
        if self._pool is not None:
            await self._pool.close()
            self._pool = None
