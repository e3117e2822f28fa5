"""How a request names a model: `name`, `name@alias` or `name/version`."""

from __future__ import annotations

import re
from dataclasses import dataclass

from schemas.errors import BadRequest

NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}"
ALIAS_PATTERN = r"[a-z0-9][a-z0-9_.-]{0,62}"
_NAME = re.compile(NAME_PATTERN + r"\Z")
_ALIAS = re.compile(ALIAS_PATTERN + r"\Z")
MAX_VERSION = 2**31 - 1
PRODUCTION = "production"


@dataclass(frozen=True)
class ModelRef:
    name: str
    version: int | None = None
    alias: str | None = None

    @property
    def bare(self) -> bool:
        return self.version is None and self.alias is None

    def __str__(self) -> str:
        if self.version is not None:
            return f"{self.name}/{self.version}"
        if self.alias is not None:
            return f"{self.name}@{self.alias}"
        return self.name


def check_name(name: str, field: str = "name") -> str:
    if not name:
        raise BadRequest(f"{field} is required", details={"field": field})
    if not _NAME.match(name):
        raise BadRequest(
            f"{field} must match {NAME_PATTERN}", details={"field": field, "pattern": NAME_PATTERN}
        )
    return name


def check_alias(alias: str, field: str = "alias") -> str:
    if not _ALIAS.match(alias):
        raise BadRequest(
            f"{field} must match {ALIAS_PATTERN}",
            details={"field": field, "pattern": ALIAS_PATTERN},
        )
    return alias


def check_version(version: int, field: str = "version") -> int:
    if not 0 < version <= MAX_VERSION:
        raise BadRequest(f"{field} must be 1 to {MAX_VERSION}", details={"field": field})
    return version


def parse(model_id: str, field: str = "model_id") -> ModelRef:
    """`name`, `name@alias` or `name/version` (400 naming `field` otherwise)."""
    if not model_id:
        raise BadRequest(f"{field} is required", details={"field": field})
    if "@" in model_id:
        name, _, alias = model_id.partition("@")
        return ModelRef(check_name(name, field), alias=check_alias(alias, field))
    if "/" in model_id:
        name, _, number = model_id.partition("/")
        if not number.isdigit() or len(number) > 10:
            raise BadRequest(f"{field}: the version must be a number", details={"field": field})
        return ModelRef(check_name(name, field), version=check_version(int(number), field))
    return ModelRef(check_name(model_id, field))


def serving(ref: ModelRef) -> ModelRef:
    """What predict uses: a bare name means its `production` alias."""
    return ModelRef(ref.name, alias=PRODUCTION) if ref.bare else ref
