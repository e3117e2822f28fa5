"""The refusals of file processing, in the fleet's error shape.

`UnsupportedType` is 415 (what was detected is named); `schemas.errors` has no 415 yet, since
until now only the bridge refused media types. It belongs beside the others there.
"""

from __future__ import annotations

from typing import Any

from schemas.errors import ServiceError, Unprocessable


class UnsupportedType(ServiceError):
    status, code = 415, "UNSUPPORTED_MEDIA_TYPE"


def unsupported(detected: str, supported: tuple[str, ...]) -> UnsupportedType:
    return UnsupportedType(
        f"files of type {detected} are not supported",
        details={"detected_type": detected, "supported": list(supported)},
    )


def unreadable(message: str, **details: Any) -> Unprocessable:
    """A corrupt, encrypted or hostile file: 422 with the parser's reason (never a trace)."""
    return Unprocessable(f"the file cannot be parsed: {message[:300]}", details=details or None)
