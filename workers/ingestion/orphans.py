"""Objects nobody will claim: removed once they are older than a grace period.

The bridge stores an upload's bytes as `uploads/<uuid>` and only then calls `ingestion.upload`;
a bridge that dies in between (or whose call timed out and never arrived) leaves an object no
file holds. A NATS upload stores each part as `parts/<upload_id>/<index>` before recording it;
a worker that dies in between leaves a part no session lists. A writer that dies in the middle
of a put leaves chunks without an object. None of these can be told from an upload still on
its way except by age, so each is removed once it is older than
`AIFLEET_INGESTION_ORPHAN_GRACE_SECONDS` (1 h); `ingestion.upload` refuses objects older than
half of that (`claimable`), so a claim never races the sweep.

Only names the component itself gives are touched (`uploads/<uuid>`, `parts/<uuid>/<n>`); any
other object in the bucket (training data, model artifacts) is never looked at twice.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections import defaultdict

from workers.ingestion.store import IngestionStore
from workers.runtime.files import FileStore, StoredFile

UPLOADS = "uploads/"
PARTS = "parts/"


def _uuid(text: str) -> str | None:
    try:
        return str(uuid.UUID(text)) if len(text) == 36 else None
    except ValueError:
        return None


def claimable(stored: StoredFile, grace_seconds: float) -> bool:
    """An object young enough to become a file (the sweep leaves it alone long enough)."""
    if stored.modified is None:
        return True
    age = dt.datetime.now(dt.UTC) - stored.modified
    return age.total_seconds() < grace_seconds / 2


class OrphanSweep:
    def __init__(self, store: IngestionStore, files: FileStore, grace_seconds: float) -> None:
        self.store = store
        self.files = files
        self.grace = grace_seconds

    async def sweep(self) -> int:
        """Remove every orphan older than the grace period, of every tenant; how many."""
        cutoff = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=self.grace)
        uploads: dict[str, list[str]] = defaultdict(list)
        parts: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
        async for tenant, stored in self.files.every_tenant():
            if stored.modified is None or stored.modified > cutoff:
                continue
            name = stored.name
            if name.startswith(UPLOADS) and _uuid(name.removeprefix(UPLOADS)):
                uploads[tenant].append(name)
            elif name.startswith(PARTS) and name.count("/") == 2:
                upload_id = _uuid(name.split("/")[1])
                if upload_id is not None:
                    parts[tenant][upload_id].append(name)
        removed = 0
        for tenant, names in uploads.items():
            held = await self.store.held_objects(tenant, names)
            removed += await self._delete(tenant, [n for n in names if n not in held])
        for tenant, by_upload in parts.items():
            known = await self.store.known_uploads(tenant, list(by_upload))
            for upload_id, names in by_upload.items():
                if upload_id not in known:
                    removed += await self._delete(tenant, names)
        return removed + await self.files.purge_unreferenced_chunks(self.grace)

    async def _delete(self, tenant: str, names: list[str]) -> int:
        return sum([await self.files.delete(tenant, name) for name in names])
