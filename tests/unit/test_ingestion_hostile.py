"""Hostile files: each refused with a clear 422 (or 415), inside the time and memory limits."""

from __future__ import annotations

import functools
import os
import time
from pathlib import Path

import pytest

from schemas.errors import Unprocessable
from tests.support import documents, hostile_parsers
from workers.ingestion.document import StructuredDocument
from workers.ingestion.errors import UnsupportedType
from workers.ingestion.limits import ParseLimits
from workers.ingestion.parsers import ParseOptions
from workers.ingestion.pipeline import Pipeline
from workers.ingestion.sandbox import ParseSandbox, SandboxLimits
from workers.ingestion.sniff import Detected


@pytest.fixture(scope="module")
def sandbox() -> ParseSandbox:
    return ParseSandbox(
        SandboxLimits(timeout=20.0, memory_bytes=1536 * 1024**2),
        ParseLimits(max_unzipped_bytes=64 * 1024**2, max_declared_pages=10_000),
    )


async def run(
    sandbox: ParseSandbox, tmp_path: Path, data: bytes, name: str = ""
) -> StructuredDocument:
    path = tmp_path / "source"
    path.write_bytes(data)
    detected = await sandbox.detect(path, file_name=name, content_type="")
    return await sandbox.process(path, detected, ParseOptions())


async def refused(sandbox: ParseSandbox, tmp_path: Path, data: bytes, name: str = "") -> str:
    with pytest.raises(Unprocessable) as caught:
        await run(sandbox, tmp_path, data, name)
    return caught.value.message


async def test_a_fair_file_parses_in_the_sandbox_with_progress(
    sandbox: ParseSandbox, tmp_path: Path
) -> None:
    """The child parses, reports progress per page and returns the document."""
    path = tmp_path / "source"
    path.write_bytes(documents.pdf(["one", "two", "three"]))
    seen: list[tuple[int, int]] = []
    detected = await sandbox.detect(path, file_name="", content_type="")
    doc = await sandbox.process(path, detected, ParseOptions(), lambda d, t: seen.append((d, t)))
    assert doc.pages == 3
    assert "three" in doc.text
    assert seen[0] == (0, 3)
    assert seen[-1] == (3, 3)


def _record(seen: list[tuple[int, int]], done: int, total: int) -> None:
    seen.append((done, total))


async def test_a_sandbox_reports_progress_as_often_as_its_interval_allows(tmp_path: Path) -> None:
    """With no interval every page is reported; the default leaves a fast parse at first and
    last."""
    path = tmp_path / "source"
    path.write_bytes(documents.pdf(["one", "two", "three"]))
    reports: dict[float, list[tuple[int, int]]] = {0.0: [], 60.0: []}
    for interval, seen in reports.items():
        eager = ParseSandbox(SandboxLimits(timeout=20.0, progress_interval=interval), ParseLimits())
        detected = await eager.detect(path, file_name="", content_type="")
        await eager.process(path, detected, ParseOptions(), functools.partial(_record, seen))
    assert reports[0.0] == [(0, 3), (1, 3), (2, 3), (3, 3)]
    assert reports[60.0] == [(0, 3), (3, 3)]


async def test_zip_bomb_docx_is_refused_by_its_compression_ratio(
    sandbox: ParseSandbox, tmp_path: Path
) -> None:
    """A DOCX member of 32 MiB zeros (ratio ~1000:1) is refused before it is inflated."""
    bomb = documents.zip_bomb(documents.docx_file([("p", "hi")]), inflated_bytes=32 * 1024**2)
    assert len(bomb) < 200_000
    assert "zip bomb" in await refused(sandbox, tmp_path, bomb)


async def test_zip_bomb_xlsx_is_refused_by_its_total_size(tmp_path: Path) -> None:
    """Past the configured total uncompressed size an XLSX is refused, whatever the ratio."""
    small = ParseSandbox(
        SandboxLimits(timeout=20.0), ParseLimits(max_unzipped_bytes=4 * 1024**2, max_zip_ratio=1e9)
    )
    bomb = documents.zip_bomb(documents.xlsx_file({"S": [["a"]]}), inflated_bytes=8 * 1024**2)
    assert "inflates beyond the limit" in await refused(small, tmp_path, bomb)


@pytest.mark.parametrize("kind", ["docx", "xlsx"])
async def test_xml_entity_expansion_is_refused(
    sandbox: ParseSandbox, tmp_path: Path, kind: str
) -> None:
    """A billion-laughs DTD in an Office part is refused without expanding anything."""
    if kind == "docx":
        data = documents.replace_member(
            documents.docx_file([("p", "x")]), "word/document.xml", documents.BILLION_LAUGHS
        )
    else:
        data = documents.replace_member(
            documents.xlsx_file({"S": [["a"]]}),
            "xl/worksheets/sheet1.xml",
            documents.BILLION_LAUGHS,
        )
    started = time.monotonic()
    assert "declares XML entities" in await refused(sandbox, tmp_path, data)
    assert time.monotonic() - started < 10


async def test_pdf_declaring_a_huge_page_count_is_refused(
    sandbox: ParseSandbox, tmp_path: Path
) -> None:
    """A page tree claiming a billion pages is refused before it is walked."""
    assert "declares more pages" in await refused(
        sandbox, tmp_path, documents.pdf_declaring_pages(10**9)
    )


async def test_pdf_with_a_page_tree_loop_is_refused(sandbox: ParseSandbox, tmp_path: Path) -> None:
    """A page tree that contains itself ends in a 422, not an endless walk."""
    message = await refused(sandbox, tmp_path, documents.pdf_with_page_tree_loop())
    assert "PDF" in message or "no text" in message


async def test_password_protected_pdf_is_refused_as_encrypted(
    sandbox: ParseSandbox, tmp_path: Path
) -> None:
    """A PDF that needs a user password says so."""
    data = documents.pdf(["secret"], user_password="pw", owner_password="owner")
    assert "encrypted" in await refused(sandbox, tmp_path, data)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (documents.pdf(["some text"])[:300], "PDF"),
        (b"%PDF-1.7\n" + os.urandom(2000), "PDF"),
        (b"PK\x03\x04" + os.urandom(500), "zip"),
        (documents.docx_file([("p", "x")])[:-200], "zip"),
        (documents.pdf([""]), "no text"),
        (b"[" * 200_000 + b"]" * 200_000, "nested too deeply"),
    ],
    ids=["truncated-pdf", "garbage-pdf", "garbage-zip", "truncated-docx", "blank-pdf", "deep-json"],
)
async def test_corrupt_files_are_refused_with_the_parsers_reason(
    sandbox: ParseSandbox, tmp_path: Path, data: bytes, reason: str
) -> None:
    """Damaged, empty or absurd files get 422 with a reason, never a traceback."""
    with pytest.raises((Unprocessable, UnsupportedType)) as caught:
        await run(sandbox, tmp_path, data)
    assert reason in caught.value.message or reason in str(caught.value.details), (
        caught.value.message
    )
    assert "Traceback" not in caught.value.message


async def test_a_hanging_parser_is_killed_at_the_time_limit(tmp_path: Path) -> None:
    """A parser that never returns (and ignores SIGTERM) is SIGKILLed at the deadline."""
    quick = ParseSandbox(SandboxLimits(timeout=1.5), ParseLimits())
    (tmp_path / "source").write_bytes(b"x")
    seen: list[tuple[int, int]] = []
    started = time.monotonic()
    with pytest.raises(Unprocessable, match=r"longer than 1\.5 s"):
        await quick.process(
            tmp_path / "source",
            Detected("text", "text/plain", "utf-8"),
            ParseOptions(),
            lambda d, t: seen.append((d, t)),
            pipelines={"text": Pipeline(hostile_parsers.hang)},
        )
    assert time.monotonic() - started < 5
    assert seen == [(1, 10)]
    pid = int((tmp_path / "hang.pid").read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


@pytest.mark.parametrize(
    ("parser", "message"),
    [
        (hostile_parsers.hog_memory, "more memory"),
        (hostile_parsers.crash, "stopped unexpectedly"),
        (hostile_parsers.fail, "the parser failed (KeyError)"),
    ],
    ids=["memory", "segfault", "bug"],
)
async def test_a_misbehaving_parser_gives_a_422_and_the_worker_lives(
    sandbox: ParseSandbox, tmp_path: Path, parser: object, message: str
) -> None:
    """Memory over the cap, a crash or an exception inside the parser are a 422 each."""
    (tmp_path / "source").write_bytes(b"x")
    with pytest.raises(Unprocessable) as caught:
        await sandbox.process(
            tmp_path / "source",
            Detected("text", "text/plain", "utf-8"),
            ParseOptions(),
            pipelines={"text": Pipeline(parser)},  # type: ignore[arg-type]
        )
    assert message in caught.value.message
    assert "secret" not in caught.value.message


async def test_a_type_without_a_pipeline_is_415_naming_it(
    sandbox: ParseSandbox, tmp_path: Path
) -> None:
    """A PNG reaches no parser: 415 with the detected type."""
    with pytest.raises(UnsupportedType) as caught:
        await run(sandbox, tmp_path, b"\x89PNG\r\n\x1a\n" + bytes(100), "photo.pdf")
    assert caught.value.details["detected_type"] == "png"
