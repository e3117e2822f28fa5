"""The files resource against a real nats-server: streamed, tenant-scoped, size-limited."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import psutil
import pytest
from nats.aio.client import Client as NATS

from schemas.errors import BadRequest, NotFound, PayloadTooLarge
from subjects import FILES_BUCKET
from workers.runtime.files import CHUNK_BYTES, FileStore

MIB = 1024 * 1024


@pytest.fixture
async def files(nc: NATS) -> FileStore:
    return await FileStore.open(nc.jetstream())


async def pattern(total: int, piece: int = 64 * 1024) -> AsyncIterator[bytes]:
    """`total` bytes in `piece`-sized parts, as an HTTP upload arrives: never all at once."""
    block = os.urandom(piece)
    sent = 0
    while sent < total:
        part = block[: min(piece, total - sent)]
        sent += len(part)
        yield part
        await asyncio.sleep(0)


async def test_a_file_round_trips_with_its_metadata(files: FileStore, tmp_path: Path) -> None:
    """put from bytes, get into a file: same bytes, SHA-256, content type and metadata."""
    data = os.urandom(3 * CHUNK_BYTES + 17)
    stored = await files.put(
        "acme",
        "docs/a.pdf",
        data,
        max_bytes=10 * MIB,
        content_type="application/pdf",
        metadata={"file_name": "a.pdf"},
    )
    assert (stored.size, stored.sha256) == (len(data), hashlib.sha256(data).hexdigest())
    out = tmp_path / "a.pdf"
    with out.open("wb") as f:
        got = await files.get("acme", "docs/a.pdf", f)
    assert out.read_bytes() == data
    assert got.content_type == "application/pdf"
    assert got.metadata == {"file_name": "a.pdf"}
    assert b"".join([c async for c in files.read("acme", "docs/a.pdf")]) == data


async def test_a_100_mb_round_trip_keeps_memory_flat(files: FileStore, tmp_path: Path) -> None:
    """100 MB in from a stream and out to a file: the process grows by less than 32 MiB."""
    me = psutil.Process()
    peak = baseline = me.memory_info().rss
    done = asyncio.Event()

    async def watch() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, me.memory_info().rss)
            await asyncio.sleep(0.01)

    watcher = asyncio.create_task(watch())
    digest = hashlib.sha256()

    async def source() -> AsyncIterator[bytes]:
        async for part in pattern(100 * 1000 * 1000):
            digest.update(part)
            yield part

    try:
        stored = await files.put("acme", "big.bin", source(), max_bytes=200 * MIB)
        out = tmp_path / "big.bin"
        with out.open("wb") as f:
            await files.get("acme", "big.bin", f)
    finally:
        done.set()
        await watcher
    assert stored.size == 100 * 1000 * 1000
    assert stored.sha256 == digest.hexdigest()
    with out.open("rb") as back:
        assert hashlib.file_digest(back, "sha256").hexdigest() == digest.hexdigest()
    assert (peak - baseline) / MIB < 32, f"grew by {(peak - baseline) / MIB:.1f} MiB"
    await files.delete("acme", "big.bin")


async def test_another_tenant_never_reaches_an_object(files: FileStore, tmp_path: Path) -> None:
    """The same name under two tenants is two objects; one tenant cannot read or delete the
    other's, and listing shows each tenant only its own."""
    await files.put("t-a", "same.txt", b"a's", max_bytes=MIB)
    await files.put("t-b", "same.txt", b"b's", max_bytes=MIB)
    assert b"".join([c async for c in files.read("t-b", "same.txt")]) == b"b's"
    assert await files.info("t-c", "same.txt") is None
    with pytest.raises(NotFound):
        await files.get("t-c", "same.txt", (tmp_path / "x").open("wb"))
    assert await files.delete("t-c", "same.txt") is False
    assert [f.name async for f in files.list("t-a")] == ["same.txt"]
    assert await files.delete("t-a", "same.txt") is True
    assert await files.info("t-a", "same.txt") is None
    assert (await files.info("t-b", "same.txt")) is not None


async def test_over_the_limit_is_413_and_nothing_is_stored(files: FileStore, nc: NATS) -> None:
    """The size is counted while reading: the upload stops at the limit and its chunks go."""
    js = nc.jetstream()
    before = (await js.stream_info(f"OBJ_{FILES_BUCKET}")).state.bytes
    with pytest.raises(PayloadTooLarge) as raised:
        await files.put("acme", "huge.bin", pattern(5 * MIB), max_bytes=2 * MIB)
    assert raised.value.details == {"limit_bytes": 2 * MIB}
    assert await files.info("acme", "huge.bin") is None
    assert (await js.stream_info(f"OBJ_{FILES_BUCKET}")).state.bytes == before


async def test_replacing_an_object_drops_its_old_chunks(files: FileStore, nc: NATS) -> None:
    js = nc.jetstream()
    await files.put("acme", "r.bin", os.urandom(2 * MIB), max_bytes=4 * MIB)
    before = (await js.stream_info(f"OBJ_{FILES_BUCKET}")).state.bytes
    await files.put("acme", "r.bin", b"small", max_bytes=4 * MIB)
    after = (await js.stream_info(f"OBJ_{FILES_BUCKET}")).state.bytes
    assert after < before - MIB
    assert b"".join([c async for c in files.read("acme", "r.bin")]) == b"small"


@pytest.mark.parametrize(
    "name", ["", "/abs", "a/../b", "./a", "a//b", "a/", "with\nnewline", "back\\slash", "x" * 513]
)
async def test_names_that_could_escape_are_refused(files: FileStore, name: str) -> None:
    """Names are keys, never paths, and still look like safe relative paths."""
    with pytest.raises(BadRequest):
        await files.put("acme", name, b"x", max_bytes=MIB)


async def test_an_empty_file_is_a_file(files: FileStore) -> None:
    stored = await files.put("acme", "empty", b"", max_bytes=MIB)
    assert (stored.size, stored.sha256) == (0, hashlib.sha256(b"").hexdigest())
    assert [c async for c in files.read("acme", "empty")] == []
