"""Test helpers for the prompt component: what its tables hold, what it published."""

from __future__ import annotations

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from subjects import STREAM_EVENTS, event_subject
from subjects.events import event_name
from tests.support.database import ComponentDb
from tests.support.events import stored_events
from workers.prompt.service import MIGRATIONS
from workers.prompt.store import SCHEMA


class PromptDb(ComponentDb):
    """Direct reads of the prompt schema, as a test checks what the worker really wrote."""

    schema = SCHEMA
    migrations = MIGRATIONS
    tables = ("names", "versions", "labels", "outbox")

    async def rows_naming(self, text: str) -> int:
        """Rows of any table whose tenant or name contains `text` (for invalid tenants)."""
        total = 0
        for table in self.tables:
            source = "aifleet.outbox" if table == "outbox" else f"prompt.{table}"
            column = "tenant" if table == "outbox" else "tenant || ' ' || name"
            total += await self.pool.fetchval(
                f"SELECT count(*) FROM {source} WHERE strpos({column}, $1) > 0",  # noqa: S608
                text,
            )
        return total

    async def versions(self, tenant: str, name: str) -> list[int]:
        rows = await self.pool.fetch(
            "SELECT version FROM prompt.versions WHERE tenant = $1 AND name = $2 ORDER BY version",
            tenant,
            name,
        )
        return [r["version"] for r in rows]

    async def labels(self, tenant: str, name: str) -> dict[str, int]:
        rows = await self.pool.fetch(
            "SELECT label, version FROM prompt.labels WHERE tenant = $1 AND name = $2",
            tenant,
            name,
        )
        return {r["label"]: r["version"] for r in rows}


async def read_events(nc: NATS, tenant: str, event: str) -> list[Msg]:
    """Every `evt.prompt.<event>` of the tenant stored in AI_EVENTS, oldest first."""
    return await stored_events(nc, tenant, event_name("prompt", event))


async def event_count(nc: NATS, tenant: str) -> int:
    """Events of any kind the prompt component stored for the tenant."""
    js = nc.jetstream()
    subject = event_subject(tenant, "prompt", "*")
    info = await js.stream_info(STREAM_EVENTS, subjects_filter=subject)
    return sum((info.state.subjects or {}).values())
