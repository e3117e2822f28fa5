"""Turning whatever a handler raised into the contract's error (DESIGN §2, §4).

A `ServiceError` passes through. A dependency that is down or slow (Redis, Postgres, NATS, a
socket) becomes `503` with `retryable=true`. The deadline passing becomes `504`. Anything else is
a bug: `500 internal error`, logged with its trace here and never sent to the caller.
"""

from __future__ import annotations

import functools

from schemas.errors import DeadlineExceeded, Internal, ServiceError, Unavailable


@functools.cache
def dependency_errors() -> tuple[type[BaseException], ...]:
    """Exception types meaning 'a server we depend on is unreachable or too slow'."""
    kinds: list[type[BaseException]] = [ConnectionError, OSError]
    try:
        import redis.exceptions as r

        kinds += [r.ConnectionError, r.TimeoutError, r.BusyLoadingError]
    except ImportError:
        pass
    try:
        import asyncpg

        kinds += [
            asyncpg.PostgresConnectionError,
            asyncpg.InterfaceError,
            asyncpg.CannotConnectNowError,
            asyncpg.TooManyConnectionsError,
        ]
    except ImportError:
        pass
    try:
        import nats.errors as n

        kinds += [n.ConnectionClosedError, n.NoServersError, n.TimeoutError, n.NoRespondersError]
    except ImportError:
        pass
    return tuple(kinds)


def as_service_error(exc: BaseException, *, deadline_passed: bool) -> tuple[ServiceError, bool]:
    """The error to reply with, and whether it is a bug worth a stack trace in the log."""
    if isinstance(exc, ServiceError):
        return exc, False
    if isinstance(exc, TimeoutError) and deadline_passed:
        return DeadlineExceeded("the request deadline passed before the work finished"), False
    if isinstance(exc, (*dependency_errors(), TimeoutError)):
        return Unavailable("a dependency is unavailable; retry later"), False
    return Internal("internal error"), True
