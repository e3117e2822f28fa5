"""Group commit of operations: concurrent handlers' inserts share one transaction.

The runtime calls the handler once per consumed event and acks it when the handler returns.
Each handler queues its operation here and waits for the transaction that holds it to commit,
so the ack still follows the commit while one transaction stores a whole fetched batch. One
flush runs at a time: operations that arrive while it runs go into the next one, so batches
grow with the load and a lone insert waits for no timer. A batch PostgreSQL refuses for its
data is stored again row by row, so one bad row fails (and is retried, then dead-lettered)
alone; any other failure fails every row of the batch, each message retried on its own.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

import asyncpg

from schemas.errors import Unavailable
from workers.llmops.store import LlmopsStore, Operation, Stored
from workers.runtime.logs import get_logger

MAX_BATCH = 500
# Refusals that come from one row's data, not from the database being unavailable.
_ROW_ERRORS = (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError)

log = get_logger(component="llmops")


@dataclass(frozen=True)
class _Queued:
    tenant: str
    operation: Operation
    stored: asyncio.Future[Stored]


class Batcher:
    """Stores operations through `LlmopsStore.insert_many`, many callers per transaction."""

    def __init__(self, store: LlmopsStore, *, max_rows: int = MAX_BATCH) -> None:
        self._store = store
        self._max_rows = max_rows
        self._queue: list[_Queued] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def insert(self, tenant: str, operation: Operation) -> Stored:
        """Store the operation; returns once the transaction holding it has committed."""
        stored: asyncio.Future[Stored] = asyncio.get_running_loop().create_future()
        self._queue.append(_Queued(tenant, operation, stored))
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="llmops-batcher")
        self._wake.set()
        return await stored

    async def close(self) -> None:
        """Stop flushing; callers still waiting get a retryable error (nothing was acked)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        queued, self._queue = self._queue, []
        for item in queued:
            _settle(item.stored, Unavailable("llmops is stopping"))

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                batch = self._queue[: self._max_rows]
                del self._queue[: self._max_rows]
                await self._flush(batch)

    async def _flush(self, batch: list[_Queued]) -> None:
        try:
            results = await self._store.insert_many([(q.tenant, q.operation) for q in batch])
        except _ROW_ERRORS as exc:
            if len(batch) == 1:
                _settle(batch[0].stored, exc)
                return
            log.warning("operation batch refused; storing row by row", error=type(exc).__name__)
            for item in batch:
                await self._flush([item])
        except Exception as exc:
            for item in batch:
                _settle(item.stored, exc)
        else:
            for item, result in zip(batch, results, strict=True):
                _settle(item.stored, result)


def _settle(future: asyncio.Future[Stored], outcome: Stored | BaseException) -> None:
    """Hand over the outcome unless the caller gave up waiting (its deadline passed)."""
    if future.done():
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)
