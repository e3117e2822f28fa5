"""The prompt component's SQL (schema `prompt`): every statement names its tenant.

Writes to one name serialize on that name's row in `names` (taken by the counter upsert in
create, by `UPDATE ... RETURNING` in set_label and delete), so concurrent creates get distinct
consecutive versions, and a label never points at a version being deleted. Each write also
stages its events in the fleet's outbox in the same transaction (workers/runtime/outbox.py).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
from google.protobuf.message import Message

from schemas.v1.prompt_pb2 import (
    PromptLabelMovedEvent,
    PromptTemplateCreatedEvent,
    PromptTemplateDeletedEvent,
)
from subjects.events import (
    PROMPT_LABEL_MOVED,
    PROMPT_TEMPLATE_CREATED,
    PROMPT_TEMPLATE_DELETED,
    EventName,
)
from workers.runtime.outbox import Outbox, StagedEvent

SCHEMA = "prompt"
Headers = Mapping[str, str]


@dataclass(frozen=True)
class VersionRow:
    name: str
    version: int
    kind: str
    body: Any  # str (text) or list of {"role", "content", "name"} (chat)
    variables: list[str]
    config: dict[str, Any]
    metadata: dict[str, Any]
    created_by: str
    created_at: dt.datetime
    labels: list[str]  # labels pointing at this version, `latest` included


@dataclass(frozen=True)
class BodyRow:
    kind: str
    body: Any
    config: dict[str, Any]


@dataclass(frozen=True)
class SummaryRow:
    name: str
    latest_version: int
    kind: str
    version_count: int
    labels: dict[str, int]
    updated_at: dt.datetime


class NameNotFound(Exception):
    pass


class VersionNotFound(Exception):
    pass


class LabelledVersion(Exception):
    def __init__(self, labels: list[str]) -> None:
        super().__init__(", ".join(labels))
        self.labels = labels


_VERSION_COLUMNS = """
    v.name, v.version, v.kind, v.body, v.variables, v.config, v.metadata, v.created_by,
    v.created_at,
    ARRAY(SELECT l.label FROM prompt.labels l
          WHERE l.tenant = v.tenant AND l.name = v.name AND l.version = v.version
          ORDER BY l.label) AS labels,
    v.version = (SELECT max(m.version) FROM prompt.versions m
                 WHERE m.tenant = v.tenant AND m.name = v.name) AS is_latest
"""


def _version_row(r: asyncpg.Record) -> VersionRow:
    labels = list(r["labels"])
    if r["is_latest"]:
        labels = sorted([*labels, "latest"])
    return VersionRow(
        name=r["name"],
        version=r["version"],
        kind=r["kind"],
        body=json.loads(r["body"]),
        variables=list(r["variables"]),
        config=json.loads(r["config"]),
        metadata=json.loads(r["metadata"]),
        created_by=r["created_by"],
        created_at=r["created_at"],
        labels=labels,
    )


class PromptStore:
    def __init__(self, pool: asyncpg.Pool, outbox: Outbox) -> None:
        self.pool = pool
        self.outbox = outbox

    async def _stage(
        self,
        conn: asyncpg.Connection,
        tenant: str,
        events: Sequence[tuple[EventName, Message]],
        headers: Headers,
    ) -> list[StagedEvent]:
        return [
            await self.outbox.stage_for(conn, tenant, event, message, headers=dict(headers))
            for event, message in events
        ]

    # -- writes -------------------------------------------------------------------------------

    async def create_version(
        self,
        tenant: str,
        name: str,
        *,
        kind: str,
        body: Any,
        variables: Sequence[str],
        config: dict[str, Any],
        metadata: dict[str, Any],
        created_by: str,
        labels: Sequence[str],
        headers: Headers,
    ) -> tuple[VersionRow, list[StagedEvent]]:
        async with self.pool.acquire() as conn, conn.transaction():
            # The upsert takes the name's row lock until commit: concurrent creates of one name
            # queue here, and each sees the number the previous one committed.
            version = await conn.fetchval(
                "INSERT INTO prompt.names (tenant, name, last_version) VALUES ($1, $2, 1)"
                " ON CONFLICT (tenant, name) DO UPDATE"
                " SET last_version = names.last_version + 1, updated_at = clock_timestamp()"
                " RETURNING last_version",
                tenant,
                name,
            )
            await conn.execute(
                "INSERT INTO prompt.versions (tenant, name, version, kind, body, variables,"
                " config, metadata, created_by)"
                " VALUES ($1, $2, $3, $4, $5::jsonb, $6, $7::jsonb, $8::jsonb, $9)",
                tenant,
                name,
                version,
                kind,
                json.dumps(body),
                list(variables),
                json.dumps(config),
                json.dumps(metadata),
                created_by,
            )
            events: list[tuple[EventName, Message]] = [
                (
                    PROMPT_TEMPLATE_CREATED,
                    PromptTemplateCreatedEvent(
                        name=name,
                        version=version,
                        kind=kind,
                        variables=variables,
                        created_by=created_by,
                    ),
                )
            ]
            for label in labels:
                previous = await self._point_label(conn, tenant, name, label, version)
                events.append(
                    (
                        PROMPT_LABEL_MOVED,
                        PromptLabelMovedEvent(
                            name=name, label=label, version=version, previous_version=previous
                        ),
                    )
                )
            pending = await self._stage(conn, tenant, events, headers)
            row = await conn.fetchrow(
                f"SELECT {_VERSION_COLUMNS} FROM prompt.versions v"  # noqa: S608 (constant)
                " WHERE v.tenant = $1 AND v.name = $2 AND v.version = $3",
                tenant,
                name,
                version,
            )
        return _version_row(row), pending

    async def set_label(
        self, tenant: str, name: str, label: str, version: int, *, headers: Headers
    ) -> tuple[int, list[StagedEvent]]:
        """Point `label` at `version`; returns the previous version (0: new label)."""
        async with self.pool.acquire() as conn, conn.transaction():
            await self._lock_name(conn, tenant, name)
            exists = await conn.fetchval(
                "SELECT true FROM prompt.versions WHERE tenant = $1 AND name = $2 AND version = $3",
                tenant,
                name,
                version,
            )
            if not exists:
                raise VersionNotFound
            previous = await self._point_label(conn, tenant, name, label, version)
            pending: list[StagedEvent] = []
            if previous != version:
                event = PromptLabelMovedEvent(
                    name=name, label=label, version=version, previous_version=previous
                )
                pending = await self._stage(conn, tenant, [(PROMPT_LABEL_MOVED, event)], headers)
        return previous, pending

    async def delete(
        self, tenant: str, name: str, version: int | None, *, force: bool, headers: Headers
    ) -> tuple[list[int], list[str], list[StagedEvent]]:
        """Delete one version (or all, `version=None`); returns the deleted versions and the
        labels removed with them."""
        async with self.pool.acquire() as conn, conn.transaction():
            await self._lock_name(conn, tenant, name)
            if version is None:
                removed = await conn.fetch(
                    "DELETE FROM prompt.labels WHERE tenant = $1 AND name = $2"
                    " RETURNING label, version",
                    tenant,
                    name,
                )
                deleted = await conn.fetch(
                    "DELETE FROM prompt.versions WHERE tenant = $1 AND name = $2 RETURNING version",
                    tenant,
                    name,
                )
                if not deleted:
                    raise NameNotFound
            else:
                exists = await conn.fetchval(
                    "SELECT true FROM prompt.versions"
                    " WHERE tenant = $1 AND name = $2 AND version = $3",
                    tenant,
                    name,
                    version,
                )
                if not exists:
                    raise VersionNotFound
                labels = await conn.fetch(
                    "SELECT label FROM prompt.labels"
                    " WHERE tenant = $1 AND name = $2 AND version = $3 ORDER BY label",
                    tenant,
                    name,
                    version,
                )
                if labels and not force:
                    raise LabelledVersion([r["label"] for r in labels])
                removed = await conn.fetch(
                    "DELETE FROM prompt.labels WHERE tenant = $1 AND name = $2 AND version = $3"
                    " RETURNING label, version",
                    tenant,
                    name,
                    version,
                )
                deleted = await conn.fetch(
                    "DELETE FROM prompt.versions WHERE tenant = $1 AND name = $2 AND version = $3"
                    " RETURNING version",
                    tenant,
                    name,
                    version,
                )
            versions = sorted(r["version"] for r in deleted)
            removed_labels = sorted(r["label"] for r in removed)
            events: list[tuple[EventName, Message]] = [
                (
                    PROMPT_TEMPLATE_DELETED,
                    PromptTemplateDeletedEvent(
                        name=name, versions=versions, all_versions=version is None
                    ),
                )
            ]
            for r in sorted(removed, key=lambda r: r["label"]):
                moved = PromptLabelMovedEvent(
                    name=name, label=r["label"], version=0, previous_version=r["version"]
                )
                events.append((PROMPT_LABEL_MOVED, moved))
            pending = await self._stage(conn, tenant, events, headers)
        return versions, removed_labels, pending

    @staticmethod
    async def _lock_name(conn: asyncpg.Connection, tenant: str, name: str) -> None:
        found = await conn.fetchval(
            "UPDATE prompt.names SET updated_at = clock_timestamp()"
            " WHERE tenant = $1 AND name = $2 RETURNING true",
            tenant,
            name,
        )
        if not found:
            raise NameNotFound

    @staticmethod
    async def _point_label(
        conn: asyncpg.Connection, tenant: str, name: str, label: str, version: int
    ) -> int:
        previous = await conn.fetchval(
            "SELECT version FROM prompt.labels WHERE tenant = $1 AND name = $2 AND label = $3",
            tenant,
            name,
            label,
        )
        await conn.execute(
            "INSERT INTO prompt.labels (tenant, name, label, version) VALUES ($1, $2, $3, $4)"
            " ON CONFLICT (tenant, name, label) DO UPDATE"
            " SET version = EXCLUDED.version, updated_at = clock_timestamp()",
            tenant,
            name,
            label,
            version,
        )
        return int(previous or 0)

    # -- reads --------------------------------------------------------------------------------

    async def get_version(
        self, tenant: str, name: str, *, version: int | None, label: str | None
    ) -> VersionRow | None:
        """A version by number, by label, or (neither) the newest one."""
        if version is not None:
            where = "v.tenant = $1 AND v.name = $2 AND v.version = $3"
            args: tuple[Any, ...] = (tenant, name, version)
        elif label is not None and label != "latest":
            where = (
                "v.tenant = $1 AND v.name = $2 AND v.version = (SELECT l.version FROM"
                " prompt.labels l WHERE l.tenant = $1 AND l.name = $2 AND l.label = $3)"
            )
            args = (tenant, name, label)
        else:
            where = (
                "v.tenant = $1 AND v.name = $2 AND v.version = (SELECT max(m.version) FROM"
                " prompt.versions m WHERE m.tenant = $1 AND m.name = $2)"
            )
            args = (tenant, name)
        row = await self.pool.fetchrow(
            f"SELECT {_VERSION_COLUMNS} FROM prompt.versions v WHERE {where}",  # noqa: S608
            *args,
        )
        return _version_row(row) if row is not None else None

    async def resolve(
        self, tenant: str, name: str, *, version: int | None, label: str | None
    ) -> int | None:
        """The existing version a (version | label | latest) reference names, in one query."""
        if version is not None:
            found = await self.pool.fetchval(
                "SELECT version FROM prompt.versions"
                " WHERE tenant = $1 AND name = $2 AND version = $3",
                tenant,
                name,
                version,
            )
        elif label is not None and label != "latest":
            found = await self.pool.fetchval(
                "SELECT version FROM prompt.labels WHERE tenant = $1 AND name = $2 AND label = $3",
                tenant,
                name,
                label,
            )
        else:
            found = await self.pool.fetchval(
                "SELECT max(version) FROM prompt.versions WHERE tenant = $1 AND name = $2",
                tenant,
                name,
            )
        return int(found) if found is not None else None

    async def body(self, tenant: str, name: str, version: int) -> BodyRow | None:
        row = await self.pool.fetchrow(
            "SELECT kind, body, config FROM prompt.versions"
            " WHERE tenant = $1 AND name = $2 AND version = $3",
            tenant,
            name,
            version,
        )
        if row is None:
            return None
        return BodyRow(row["kind"], json.loads(row["body"]), json.loads(row["config"]))

    async def list_names(
        self,
        tenant: str,
        *,
        by_name: bool,
        prefix: str,
        after: tuple[dt.datetime, str] | str | None,
        limit: int,
    ) -> list[SummaryRow]:
        """Names with at least one version, most recently changed first or by name, after
        the keyset position `after` ((updated_at, name) or name)."""
        args: list[Any] = [tenant, prefix, limit]
        if by_name:
            keyset = "AND n.name > $4" if after is not None else ""
            order = "n.name ASC"
            if after is not None:
                args.append(after)
        else:
            keyset = "AND (n.updated_at, n.name) < ($4, $5)" if after is not None else ""
            order = "n.updated_at DESC, n.name DESC"
            if isinstance(after, tuple):
                args += list(after)
        rows = await self.pool.fetch(
            "SELECT n.name, n.updated_at, lv.version, lv.kind, c.versions,"  # noqa: S608 (constants)
            " COALESCE((SELECT jsonb_object_agg(l.label, l.version) FROM prompt.labels l"
            "           WHERE l.tenant = n.tenant AND l.name = n.name), '{}') AS labels"
            " FROM prompt.names n"
            " CROSS JOIN LATERAL (SELECT v.version, v.kind FROM prompt.versions v"
            "   WHERE v.tenant = n.tenant AND v.name = n.name"
            "   ORDER BY v.version DESC LIMIT 1) lv"
            " CROSS JOIN LATERAL (SELECT count(*) AS versions FROM prompt.versions v"
            "   WHERE v.tenant = n.tenant AND v.name = n.name) c"
            f" WHERE n.tenant = $1 AND starts_with(n.name, $2) {keyset}"
            f" ORDER BY {order} LIMIT $3",
            *args,
        )
        out = []
        for r in rows:
            labels = {k: int(v) for k, v in json.loads(r["labels"]).items()}
            labels["latest"] = r["version"]
            out.append(
                SummaryRow(
                    r["name"], r["version"], r["kind"], r["versions"], labels, r["updated_at"]
                )
            )
        return out
