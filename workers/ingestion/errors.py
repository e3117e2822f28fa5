"""The refusals of file processing, in the fleet's error shape: 415 naming the detected type,
422 with the parser's reason."""

from __future__ import annotations

from typing import Any

from schemas.errors import Unprocessable, UnsupportedMediaType

UnsupportedType = UnsupportedMediaType


def unsupported(detected: str, supported: tuple[str, ...]) -> UnsupportedType:
    return UnsupportedType(
        f"files of type {detected} are not supported",
        details={"detected_type": detected, "supported": list(supported)},
    )


def unreadable(message: str, **details: Any) -> Unprocessable:
    """A corrupt, encrypted or hostile file: 422 with the parser's reason (never a trace)."""
    return Unprocessable(f"the file cannot be parsed: {message[:300]}", details=details or None)
