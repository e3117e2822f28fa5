"""Uploading a 100 MiB file: through the HTTP bridge (multipart, streamed into the Object Store,
then `ingestion.upload`) versus a raw Object Store put from Python, in the same run.

    python -m benchmarks.ingestion_upload             # ~1 min; writes results/ingestion_upload.json
    python -m benchmarks.ingestion_upload --mib 20 --rounds 1

Starts an embedded nats-server and PostgreSQL, the ingestion worker and the bridge (dev mode,
rate limit off) each in a process of its own. Per round, in alternating order:

- `raw put`: a fresh Python process opens the bucket and `FileStore.put`s the file from disk
  (the kit's put, 1 MiB chunks), the baseline a user would write;
- `bridge`: this process streams a multipart POST of the same file (httpx, 1 MiB pieces) to
  /api/v1/ingestion/upload and waits for the 201 (which includes the worker registering the
  object: type detection from its first 64 KiB, dedupe; `auto_ingest` off, so no parsing).

MB/s = file size / wall time. Peak RSS is the process's high-water mark (Linux `VmHWM`) minus
its resident size before the upload: for the bridge, what one 100 MiB upload costs it in
memory; for the raw put, the same for its process.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from aifleet.embedded import EmbeddedNats, EmbeddedPostgres, free_port

REPO = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results" / "ingestion_upload.json"
MIB = 1024 * 1024

RAW_PUT = """
import asyncio, sys, time, uuid
import nats
from workers.runtime.files import FileStore

def rss(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) * 1024

async def main(url, path, tenant):
    nc = await nats.connect(url)
    store = await FileStore.open(nc.jetstream())
    before = rss("VmRSS:")
    started = time.perf_counter()
    with open(path, "rb") as source:
        await store.put(tenant, f"uploads/{uuid.uuid4()}", source, max_bytes=1 << 40)
    took = time.perf_counter() - started
    print(took, rss("VmHWM:") - before)
    await nc.close()

asyncio.run(main(*sys.argv[1:]))
"""


def status_kib(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field):
                return int(line.split()[1]) * 1024
    raise KeyError(field)


def reset_peak(pid: int) -> None:
    """Linux ≥ 4.0: writing 5 to clear_refs resets VmHWM to the current RSS."""
    with open(f"/proc/{pid}/clear_refs", "w") as refs:
        refs.write("5")


def make_file(path: Path, size: int) -> None:
    line = b"The harbour office logs every arrival, departure and the weather at the pier.\n"
    with path.open("wb") as out:
        written = 0
        counter = 0
        while written < size:
            piece = b"%08d " % counter + line
            out.write(piece)
            written += len(piece)
            counter += 1


def multipart(path: Path, boundary: str) -> Iterator[bytes]:
    yield (
        f'--{boundary}\r\nContent-Disposition: form-data; name="auto_ingest"\r\n\r\nfalse\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{path.name}"\r\n'
        "Content-Type: text/plain\r\n\r\n"
    ).encode()
    with path.open("rb") as source:
        while piece := source.read(MIB):
            yield piece
    yield f"\r\n--{boundary}--\r\n".encode()


def start(args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "aifleet.cli", *args],
        cwd=REPO,
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def wait_ready(url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError("the bridge did not become ready")


def bridge_upload(url: str, path: Path, tenant: str, pid: int) -> tuple[float, int]:
    reset_peak(pid)
    before = status_kib(pid, "VmRSS:")
    boundary = "benchmarkboundary"
    started = time.perf_counter()
    reply = httpx.post(
        url + "/api/v1/ingestion/upload",
        content=multipart(path, boundary),
        headers={
            "Content-Type": f"multipart/form-data; boundary={boundary}",
            "X-Tenant-ID": tenant,
        },
        timeout=300,
    )
    took = time.perf_counter() - started
    assert reply.status_code == 201, reply.text[:300]
    return took, status_kib(pid, "VmHWM:") - before


def raw_put(nats_url: str, path: Path, tenant: str) -> tuple[float, int]:
    out = subprocess.run(
        [sys.executable, "-c", RAW_PUT, nats_url, str(path), tenant],
        cwd=REPO,
        capture_output=True,
        check=True,
        text=True,
    ).stdout.split()
    return float(out[0]), int(out[1])


def main(mib: int, rounds: int) -> dict[str, Any]:
    size = mib * MIB
    with tempfile.TemporaryDirectory(prefix="aifleet-bench-upload-") as tmp:
        directory = Path(tmp)
        nats_server = EmbeddedNats(directory / "nats", config=REPO / "nats-server.conf")
        postgres = EmbeddedPostgres(directory / "pg")
        nats_server.start()
        postgres.start()
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        env = {
            "NATS_URL": nats_server.url,
            "DATABASE_URL": postgres.dsn,
            "AIFLEET_INGESTION_MAX_FILE_BYTES": str(size + MIB),
            "AIFLEET_LOG_LEVEL": "WARNING",
        }
        worker = start(["worker", "ingestion"], env)
        bridge = start(
            ["bridge", "--port", str(port)],
            {
                **env,
                "AIFLEET_BRIDGE_AUTH": "off",
                "AIFLEET_BRIDGE_RATE_PER_SECOND": "0",
                "AIFLEET_BRIDGE_REQUEST_TIMEOUT": "300",
                "AIFLEET_BRIDGE_COMPONENTS": '["ingestion"]',
            },
        )
        try:
            wait_ready(url)
            warm = directory / "warm.txt"
            make_file(warm, 4096)  # the bridge opens the bucket on its first upload
            bridge_upload(url, warm, "benchwarm", bridge.pid)
            runs: list[dict[str, float]] = []
            for n in range(rounds):
                path = directory / f"upload-{n}.txt"
                make_file(path, size)  # new bytes every round: no dedupe between rounds
                with path.open("ab") as out:
                    out.write(b"round %d\n" % n)
                order = ["raw", "bridge"] if n % 2 == 0 else ["bridge", "raw"]
                result: dict[str, float] = {}
                for name in order:
                    tenant = f"bench{n}{name}"
                    if name == "raw":
                        took, peak = raw_put(nats_server.url, path, tenant)
                    else:
                        took, peak = bridge_upload(url, path, tenant, bridge.pid)
                    result[f"{name}_mb_s"] = size / took / 1e6
                    result[f"{name}_peak_rss_mib"] = peak / MIB
                result["bridge_rss_mib"] = status_kib(bridge.pid, "VmRSS:") / MIB
                runs.append(result)
                print(json.dumps({"round": n + 1, **result}), flush=True)
                path.unlink()
        finally:
            for proc in (bridge, worker):
                proc.terminate()
                proc.wait(20)
            postgres.stop()
            nats_server.stop()

    def median(key: str) -> float:
        return round(statistics.median(r[key] for r in runs), 2)

    return {
        "file_mib": mib,
        "rounds": runs,
        "medians": {k: median(k) for k in runs[0]},
        "bridge_to_raw_throughput": round(
            statistics.median(r["bridge_mb_s"] / r["raw_mb_s"] for r in runs), 3
        ),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mib", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    result = main(args.mib, args.rounds)
    print(json.dumps(result, indent=2))
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
