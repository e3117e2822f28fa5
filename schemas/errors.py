"""The fleet's one error shape, as exceptions.

A handler raises one of these; the runtime turns it into an error reply (headers
`Nats-Service-Error-Code` / `Nats-Service-Error`, body `aifleet.v1.Error`), the bridge into the
same HTTP status, and the client back into the same exception class. Anything else a handler
raises becomes a bare `Internal` error: internals never leak.
"""

from __future__ import annotations

from typing import Any, ClassVar

from google.protobuf import json_format

from schemas.v1.common_pb2 import Error


class ServiceError(Exception):
    """An error with a place in the contract: an HTTP-like status and a stable code."""

    status: ClassVar[int] = 500
    code: ClassVar[str] = "INTERNAL"
    retryable_by_default: ClassVar[bool] = False

    def __init__(
        self,
        message: str,
        *,
        details: dict[str, Any] | None = None,
        retryable: bool | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or {}
        self.retryable = self.retryable_by_default if retryable is None else retryable

    def to_proto(self) -> Error:
        err = Error(code=self.code, message=self.message, retryable=self.retryable)
        if self.details:
            json_format.ParseDict(self.details, err.details)
        return err

    @staticmethod
    def from_proto(err: Error, status: int) -> ServiceError:
        """Rebuild the exception a worker raised from its error reply."""
        cls = _BY_CODE.get(err.code) or _BY_STATUS.get(status, Internal)
        exc = cls(
            err.message,
            details=json_format.MessageToDict(err.details) if err.HasField("details") else None,
            retryable=err.retryable,
        )
        exc.status = status  # type: ignore[misc]
        return exc

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.status} {self.code}: {self.message!r})"


class BadRequest(ServiceError):
    status, code = 400, "INVALID_ARGUMENT"


class Unauthenticated(ServiceError):
    status, code = 401, "UNAUTHENTICATED"


class PermissionDenied(ServiceError):
    status, code = 403, "PERMISSION_DENIED"


class NotFound(ServiceError):
    status, code = 404, "NOT_FOUND"


class Conflict(ServiceError):
    status, code = 409, "CONFLICT"


class PayloadTooLarge(ServiceError):
    status, code = 413, "PAYLOAD_TOO_LARGE"


class UnsupportedMediaType(ServiceError):
    """The content is of a type the operation does not take (e.g. an uploaded file's type)."""

    status, code = 415, "UNSUPPORTED_MEDIA_TYPE"


class Unprocessable(ServiceError):
    status, code = 422, "UNPROCESSABLE"


class RateLimited(ServiceError):
    status, code, retryable_by_default = 429, "RATE_LIMITED", True


class Internal(ServiceError):
    status, code = 500, "INTERNAL"


class Unavailable(ServiceError):
    status, code, retryable_by_default = 503, "UNAVAILABLE", True


class DeadlineExceeded(ServiceError):
    status, code, retryable_by_default = 504, "DEADLINE_EXCEEDED", True


_ALL: tuple[type[ServiceError], ...] = (
    BadRequest,
    Unauthenticated,
    PermissionDenied,
    NotFound,
    Conflict,
    PayloadTooLarge,
    UnsupportedMediaType,
    Unprocessable,
    RateLimited,
    Internal,
    Unavailable,
    DeadlineExceeded,
)
_BY_CODE = {cls.code: cls for cls in _ALL}
_BY_STATUS = {cls.status: cls for cls in _ALL}
