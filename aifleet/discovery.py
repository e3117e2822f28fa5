"""`aifleet status` and `aifleet streams`: what NATS micro discovery and JetStream say."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from rich.console import Console
from rich.table import Table

from aifleet.connection import connect
from subjects.streams import provision_streams
from workers.runtime.config import Settings

out = Console()
err = Console(stderr=True)


async def _gather(nc: NATS, subject: str, wait: float) -> list[dict[str, Any]]:
    """Every answer to a discovery request that arrives within `wait` seconds."""
    inbox = nc.new_inbox()
    answers: list[dict[str, Any]] = []

    async def collect(msg: Msg) -> None:
        try:
            answers.append(json.loads(msg.data))
        except ValueError:
            return

    sub = await nc.subscribe(inbox, cb=collect)
    await nc.publish(subject, b"", reply=inbox)
    await asyncio.sleep(wait)
    await sub.unsubscribe()
    return answers


async def show_status(settings: Settings, wait: float) -> int:
    nc = await connect(settings)
    try:
        infos, stats = await asyncio.gather(
            _gather(nc, "$SRV.INFO", wait), _gather(nc, "$SRV.STATS", wait)
        )
    finally:
        await nc.close()
    by_id = {s["id"]: s for s in stats}
    table = Table(title="aifleet components (NATS micro discovery)")
    table.add_column("service", no_wrap=True)
    table.add_column("instance", no_wrap=True)
    table.add_column("op", no_wrap=True)
    for col in ("requests", "errors", "avg ms"):
        table.add_column(col, justify="right", no_wrap=True)
    table.add_column("last error", overflow="fold")
    for info in sorted(infos, key=lambda i: (i.get("name", ""), i.get("id", ""))):
        endpoint_stats = {e["name"]: e for e in by_id.get(info["id"], {}).get("endpoints", [])}
        for ep in info.get("endpoints", []):
            s = endpoint_stats.get(ep["name"], {})
            table.add_row(
                f"{info['name']} {info.get('version', '')}",
                info["id"][-6:],
                ep["name"],
                str(s.get("num_requests", "?")),
                str(s.get("num_errors", "?")),
                f"{s.get('average_processing_time', 0) / 1e6:.2f}",
                (s.get("last_error") or "")[:60],
            )
    if not infos:
        err.print(f"no component answered on {settings.nats_url}")
        return 1
    out.print(table)
    return 0


async def show_streams(settings: Settings) -> int:
    nc = await connect(settings)
    try:
        reports = await provision_streams(nc.jetstream())
    finally:
        await nc.close()
    table = Table(title="aifleet JetStream streams")
    for col in ("stream", "state", "messages", "bytes", "consumers", "differs from defaults"):
        table.add_column(col)
    for r in reports:
        diffs = "; ".join(f"{k}: ours {a!r}, yours {b!r}" for k, (a, b) in r.differences.items())
        table.add_row(
            r.name,
            "created" if r.created else "exists",
            str(r.messages),
            str(r.bytes),
            str(r.consumers),
            diffs or "-",
        )
    out.print(table)
    return 0
