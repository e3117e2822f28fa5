"""The ML registry's SQL (schema `ml`): every statement names its tenant.

Writes to one model serialize on its row in `models` (`SELECT ... FOR UPDATE`), so concurrent
registrations get consecutive versions and an alias never points at a version being deleted.
Writes that publish events take the caller's connection, so the caller stages the events in
the same transaction (the kit's outbox). A version is registered at most once per training:
`versions` is unique on (tenant, training_id), and `register` returns the existing version when
a redone training arrives after the first registered.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

import asyncpg

from workers.ml.reference import ModelRef

SCHEMA = "ml"


@dataclass(frozen=True)
class VersionRow:
    name: str
    version: int
    model_type: str
    params: dict[str, Any]
    metrics: dict[str, float]
    signature: dict[str, Any]
    data_sha256: str
    data_object: str
    training_rows: int
    artifact_object: str
    artifact_sha256: str
    artifact_bytes: int
    training_id: str
    trained_by: str
    created_at: dt.datetime
    aliases: list[str]


@dataclass(frozen=True)
class Serving:
    """What predict needs to find (or load) the version a reference names."""

    version: int
    artifact_object: str
    artifact_sha256: str
    artifact_bytes: int


@dataclass(frozen=True)
class NewVersion:
    model_type: str
    params: dict[str, Any]
    metrics: dict[str, float]
    signature: dict[str, Any]
    profile: dict[str, Any]
    data_sha256: str
    data_object: str
    training_rows: int
    artifact_object: str
    artifact_sha256: str
    artifact_bytes: int
    training_id: str
    trained_by: str


@dataclass(frozen=True)
class SummaryRow:
    name: str
    latest_version: int
    model_type: str
    version_count: int
    aliases: dict[str, int]
    updated_at: dt.datetime


class NotFoundError(Exception):
    pass


class AliasedVersion(Exception):
    def __init__(self, aliases: list[str]) -> None:
        super().__init__(", ".join(aliases))
        self.aliases = aliases


_VERSION_COLUMNS = """
    v.name, v.version, v.model_type, v.params, v.metrics, v.signature, v.data_sha256,
    v.data_object, v.training_rows, v.artifact_object, v.artifact_sha256, v.artifact_bytes,
    v.training_id, v.trained_by, v.created_at,
    ARRAY(SELECT a.alias FROM ml.aliases a
          WHERE a.tenant = v.tenant AND a.name = v.name AND a.version = v.version
          ORDER BY a.alias) AS aliases
"""


def _version(r: asyncpg.Record) -> VersionRow:
    values = dict(r)
    for key in ("params", "metrics", "signature"):
        values[key] = json.loads(values[key])
    values["aliases"] = list(values["aliases"])
    return VersionRow(**values)


def _where_ref(ref: ModelRef) -> tuple[str, tuple[Any, ...]]:
    """A WHERE clause over versions `v` naming the version of `ref` ($1 tenant, $2 name)."""
    if ref.version is not None:
        return "v.tenant = $1 AND v.name = $2 AND v.version = $3", (ref.version,)
    if ref.alias is not None:
        return (
            "v.tenant = $1 AND v.name = $2 AND v.version = (SELECT a.version FROM ml.aliases a"
            " WHERE a.tenant = $1 AND a.name = $2 AND a.alias = $3)",
            (ref.alias,),
        )
    return (
        "v.tenant = $1 AND v.name = $2 AND v.version = (SELECT max(m.version) FROM ml.versions m"
        " WHERE m.tenant = $1 AND m.name = $2)",
        (),
    )


class MlStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    # -- the registry: reads ----------------------------------------------------------------

    async def serving(self, tenant: str, ref: ModelRef) -> Serving | None:
        """The version `ref` names now (an alias is resolved here, on every call)."""
        where, args = _where_ref(ref)
        row = await self.pool.fetchrow(
            "SELECT v.version, v.artifact_object, v.artifact_sha256, v.artifact_bytes"  # noqa: S608 (constant clauses)
            f" FROM ml.versions v WHERE {where}",
            tenant,
            ref.name,
            *args,
        )
        return Serving(**dict(row)) if row is not None else None

    async def signature(self, tenant: str, name: str, version: int) -> dict[str, Any] | None:
        found = await self.pool.fetchval(
            "SELECT signature FROM ml.versions WHERE tenant = $1 AND name = $2 AND version = $3",
            tenant,
            name,
            version,
        )
        return json.loads(found) if found is not None else None

    async def profile(
        self, tenant: str, name: str, version: int
    ) -> tuple[dict[str, Any], dict[str, Any]] | None:
        row = await self.pool.fetchrow(
            "SELECT signature, profile FROM ml.versions"
            " WHERE tenant = $1 AND name = $2 AND version = $3",
            tenant,
            name,
            version,
        )
        return (json.loads(row["signature"]), json.loads(row["profile"])) if row else None

    async def versions(self, tenant: str, ref: ModelRef) -> list[VersionRow]:
        """Every version of a bare name (newest first), or the one `ref` names."""
        if ref.bare:
            where, args = "v.tenant = $1 AND v.name = $2", ()
        else:
            where, args = _where_ref(ref)
        rows = await self.pool.fetch(
            f"SELECT {_VERSION_COLUMNS} FROM ml.versions v WHERE {where}"  # noqa: S608
            " ORDER BY v.version DESC",
            tenant,
            ref.name,
            *args,
        )
        return [_version(r) for r in rows]

    async def aliases(self, tenant: str, name: str) -> dict[str, int]:
        rows = await self.pool.fetch(
            "SELECT alias, version FROM ml.aliases WHERE tenant = $1 AND name = $2",
            tenant,
            name,
        )
        return {r["alias"]: r["version"] for r in rows}

    async def model_exists(self, tenant: str, name: str) -> bool:
        return bool(
            await self.pool.fetchval(
                "SELECT true FROM ml.models WHERE tenant = $1 AND name = $2", tenant, name
            )
        )

    async def list_models(
        self, tenant: str, *, prefix: str, after: str | None, limit: int
    ) -> list[SummaryRow]:
        """Models with at least one version, by name, after `after`."""
        rows = await self.pool.fetch(
            "SELECT m.name, m.updated_at, latest.version, latest.model_type, counts.n,"
            " ARRAY(SELECT a.alias || '=' || a.version FROM ml.aliases a"
            "       WHERE a.tenant = m.tenant AND a.name = m.name ORDER BY a.alias) AS aliases"
            " FROM ml.models m"
            " CROSS JOIN LATERAL (SELECT v.version, v.model_type FROM ml.versions v"
            "   WHERE v.tenant = m.tenant AND v.name = m.name"
            "   ORDER BY v.version DESC LIMIT 1) latest"
            " CROSS JOIN LATERAL (SELECT count(*) AS n FROM ml.versions c"
            "   WHERE c.tenant = m.tenant AND c.name = m.name) counts"
            " WHERE m.tenant = $1 AND starts_with(m.name, $2) AND ($3::text IS NULL OR m.name > $3)"
            " ORDER BY m.name LIMIT $4",
            tenant,
            prefix,
            after,
            limit,
        )
        out = []
        for r in rows:
            aliases = {}
            for pair in r["aliases"]:
                alias, _, version = pair.rpartition("=")
                aliases[alias] = int(version)
            out.append(
                SummaryRow(
                    r["name"], r["version"], r["model_type"], r["n"], aliases, r["updated_at"]
                )
            )
        return out

    # -- the registry: writes (in the caller's transaction) ---------------------------------

    @staticmethod
    async def register(
        conn: asyncpg.Connection, tenant: str, name: str, new: NewVersion
    ) -> tuple[int, bool]:
        """Register the next version of `name` for `new.training_id`; (version, created). A
        training already registered returns its version and creates nothing."""
        await conn.execute(
            "INSERT INTO ml.models (tenant, name) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            tenant,
            name,
        )
        await conn.execute(
            "SELECT 1 FROM ml.models WHERE tenant = $1 AND name = $2 FOR UPDATE", tenant, name
        )
        existing = await conn.fetchval(
            "SELECT version FROM ml.versions WHERE tenant = $1 AND training_id = $2",
            tenant,
            new.training_id,
        )
        if existing is not None:
            return int(existing), False
        version = await conn.fetchval(
            "UPDATE ml.models SET last_version = last_version + 1, updated_at = clock_timestamp()"
            " WHERE tenant = $1 AND name = $2 RETURNING last_version",
            tenant,
            name,
        )
        await conn.execute(
            "INSERT INTO ml.versions (tenant, name, version, model_type, params, metrics,"
            " signature, profile, data_sha256, data_object, training_rows, artifact_object,"
            " artifact_sha256, artifact_bytes, training_id, trained_by) VALUES ($1, $2, $3, $4,"
            " $5::jsonb, $6::jsonb, $7::jsonb, $8::jsonb, $9, $10, $11, $12, $13, $14, $15, $16)",
            tenant,
            name,
            version,
            new.model_type,
            json.dumps(new.params),
            json.dumps(new.metrics),
            json.dumps(new.signature),
            json.dumps(new.profile),
            new.data_sha256,
            new.data_object,
            new.training_rows,
            new.artifact_object,
            new.artifact_sha256,
            new.artifact_bytes,
            new.training_id,
            new.trained_by,
        )
        return int(version), True

    @staticmethod
    async def set_alias(
        conn: asyncpg.Connection, tenant: str, name: str, alias: str, version: int | None
    ) -> tuple[int, int]:
        """Point `alias` at `version` (None: the newest); (version, previous version or 0)."""
        await MlStore._lock(conn, tenant, name)
        if version is None:
            version = await conn.fetchval(
                "SELECT max(version) FROM ml.versions WHERE tenant = $1 AND name = $2",
                tenant,
                name,
            )
            if version is None:
                raise NotFoundError
        elif not await conn.fetchval(
            "SELECT true FROM ml.versions WHERE tenant = $1 AND name = $2 AND version = $3",
            tenant,
            name,
            version,
        ):
            raise NotFoundError
        previous = await conn.fetchval(
            "SELECT version FROM ml.aliases WHERE tenant = $1 AND name = $2 AND alias = $3",
            tenant,
            name,
            alias,
        )
        await conn.execute(
            "INSERT INTO ml.aliases (tenant, name, alias, version) VALUES ($1, $2, $3, $4)"
            " ON CONFLICT (tenant, name, alias) DO UPDATE"
            " SET version = EXCLUDED.version, updated_at = clock_timestamp()",
            tenant,
            name,
            alias,
            version,
        )
        return int(version), int(previous or 0)

    @staticmethod
    async def remove_alias(conn: asyncpg.Connection, tenant: str, name: str, alias: str) -> int:
        """Remove `alias`; the version it pointed at (NotFoundError if none)."""
        await MlStore._lock(conn, tenant, name)
        previous = await conn.fetchval(
            "DELETE FROM ml.aliases WHERE tenant = $1 AND name = $2 AND alias = $3"
            " RETURNING version",
            tenant,
            name,
            alias,
        )
        if previous is None:
            raise NotFoundError
        return int(previous)

    @staticmethod
    async def delete(
        conn: asyncpg.Connection, tenant: str, name: str, version: int | None, *, force: bool
    ) -> tuple[list[int], list[tuple[str, int]], list[str]]:
        """Delete one version (or all: None); (versions, removed (alias, version), artifact
        objects to remove after the commit)."""
        await MlStore._lock(conn, tenant, name)
        only = "AND version = $3" if version is not None else ""
        args: tuple[Any, ...] = (tenant, name) + ((version,) if version is not None else ())
        found = await conn.fetch(
            f"SELECT version, artifact_object FROM ml.versions"  # noqa: S608 (constant)
            f" WHERE tenant = $1 AND name = $2 {only} ORDER BY version",
            *args,
        )
        if not found:
            raise NotFoundError
        aliases = await conn.fetch(
            f"SELECT alias, version FROM ml.aliases WHERE tenant = $1 AND name = $2 {only}"  # noqa: S608
            " ORDER BY alias",
            *args,
        )
        if aliases and version is not None and not force:
            raise AliasedVersion([r["alias"] for r in aliases])
        await conn.execute(
            f"DELETE FROM ml.aliases WHERE tenant = $1 AND name = $2 {only}",  # noqa: S608 (constant clauses)
            *args,
        )
        await conn.execute(
            f"DELETE FROM ml.prediction_inputs WHERE tenant = $1 AND name = $2 {only}",  # noqa: S608
            *args,
        )
        await conn.execute(
            f"DELETE FROM ml.versions WHERE tenant = $1 AND name = $2 {only}",  # noqa: S608 (constant clauses)
            *args,
        )
        return (
            [r["version"] for r in found],
            [(r["alias"], r["version"]) for r in aliases],
            [r["artifact_object"] for r in found],
        )

    @staticmethod
    async def _lock(conn: asyncpg.Connection, tenant: str, name: str) -> None:
        found = await conn.fetchval(
            "UPDATE ml.models SET updated_at = clock_timestamp()"
            " WHERE tenant = $1 AND name = $2 RETURNING true",
            tenant,
            name,
        )
        if not found:
            raise NotFoundError
