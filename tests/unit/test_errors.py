"""The one error shape: every ServiceError survives the trip through aifleet.v1.Error."""

from __future__ import annotations

import pytest

from schemas import errors
from schemas.errors import (
    BadRequest,
    Conflict,
    DeadlineExceeded,
    Internal,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
    RateLimited,
    ServiceError,
    Unauthenticated,
    Unavailable,
    Unprocessable,
    UnsupportedMediaType,
)
from schemas.v1.common_pb2 import Error

EXPECTED = [
    (BadRequest, 400, "INVALID_ARGUMENT", False),
    (Unauthenticated, 401, "UNAUTHENTICATED", False),
    (PermissionDenied, 403, "PERMISSION_DENIED", False),
    (NotFound, 404, "NOT_FOUND", False),
    (Conflict, 409, "CONFLICT", False),
    (PayloadTooLarge, 413, "PAYLOAD_TOO_LARGE", False),
    (UnsupportedMediaType, 415, "UNSUPPORTED_MEDIA_TYPE", False),
    (Unprocessable, 422, "UNPROCESSABLE", False),
    (RateLimited, 429, "RATE_LIMITED", True),
    (Internal, 500, "INTERNAL", False),
    (Unavailable, 503, "UNAVAILABLE", True),
    (DeadlineExceeded, 504, "DEADLINE_EXCEEDED", True),
]


@pytest.mark.parametrize(("cls", "status", "code", "retryable"), EXPECTED)
def test_each_error_has_its_status_code_and_retryable_default(
    cls: type[ServiceError], status: int, code: str, retryable: bool
) -> None:
    """Status, code and the retryable default are part of the contract."""
    exc = cls("boom")
    assert (exc.status, exc.code, exc.retryable) == (status, code, retryable)


@pytest.mark.parametrize(("cls", "status", "code", "retryable"), EXPECTED)
def test_to_proto_and_back_rebuilds_the_same_error(
    cls: type[ServiceError], status: int, code: str, retryable: bool
) -> None:
    """to_proto → wire bytes → from_proto gives the same class, message, details, retryable."""
    details = {"field": "key", "limit": 3.0, "nested": {"ok": True, "list": ["a", None]}}
    original = cls("something failed", details=details)
    err = original.to_proto()
    assert (err.code, err.message, err.retryable) == (code, "something failed", retryable)
    rebuilt = ServiceError.from_proto(Error.FromString(err.SerializeToString()), status)
    assert type(rebuilt) is cls
    assert (rebuilt.status, rebuilt.code, rebuilt.message) == (status, code, "something failed")
    assert rebuilt.details == details
    assert rebuilt.retryable is retryable


@pytest.mark.parametrize(("cls", "status", "code", "retryable"), EXPECTED)
def test_retryable_can_be_overridden_and_survives_the_trip(
    cls: type[ServiceError], status: int, code: str, retryable: bool
) -> None:
    """An explicit retryable wins over the class default, on both sides of the wire."""
    exc = cls("x", retryable=not retryable)
    assert exc.retryable is (not retryable)
    rebuilt = ServiceError.from_proto(exc.to_proto(), status)
    assert rebuilt.retryable is (not retryable)


def test_error_without_details_leaves_details_unset() -> None:
    """No details → the Struct is absent on the wire and empty after the trip."""
    err = NotFound("no such key").to_proto()
    assert not err.HasField("details")
    assert ServiceError.from_proto(err, 404).details == {}


def test_unknown_code_falls_back_to_the_status() -> None:
    """A code this build does not know maps by the HTTP-like status."""
    rebuilt = ServiceError.from_proto(Error(code="TEAPOT", message="m"), 404)
    assert type(rebuilt) is NotFound
    assert rebuilt.message == "m"


def test_unknown_code_and_status_become_internal_keeping_the_status() -> None:
    """Nothing known → Internal, with the status the reply carried."""
    rebuilt = ServiceError.from_proto(Error(code="", message="odd"), 418)
    assert type(rebuilt) is Internal
    assert rebuilt.status == 418
    assert Internal.status == 500  # the class attribute is untouched


def test_codes_and_statuses_are_unique_and_match_the_design() -> None:
    """One class per status listed in DESIGN §2, one code per class."""
    classes = errors._ALL
    assert sorted(c.status for c in classes) == [
        400,
        401,
        403,
        404,
        409,
        413,
        415,
        422,
        429,
        500,
        503,
        504,
    ]
    assert len({c.code for c in classes}) == len(classes)
    assert {c for c, *_ in EXPECTED} == set(classes)


def test_repr_names_class_status_and_code() -> None:
    """The repr is useful in logs and test failures."""
    assert repr(BadRequest("bad key")) == "BadRequest(400 INVALID_ARGUMENT: 'bad key')"
