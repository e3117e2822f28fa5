"""Limits that keep a hostile file from costing more than a fair one.

Checked before a parser opens anything it cannot bound by itself: DOCX and XLSX are zip
archives (a zip bomb declares a small file that inflates to gigabytes), and their XML parts
could declare entities that expand exponentially. The sandbox (workers/ingestion/sandbox.py)
adds the time and memory limits around the whole parse.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import defusedxml.ElementTree as safe_xml
from defusedxml import DefusedXmlException

from workers.ingestion.errors import unreadable


@dataclass(frozen=True)
class ParseLimits:
    # PDF pages (XLSX sheets) parsed at most; a file with more is parsed up to here.
    max_pages: int = 5000
    # A PDF declaring more pages than this is refused outright (its page tree is hostile or
    # absurd): reading the tree alone would cost too much.
    max_declared_pages: int = 100_000
    # Zip archives (DOCX, XLSX): total uncompressed bytes, entries, and compression ratio of any
    # entry over 1 MiB.
    max_unzipped_bytes: int = 512 * 1024 * 1024
    max_zip_entries: int = 10_000
    max_zip_ratio: float = 200.0
    # Extracted text, in characters, after which a file is refused as too large to ingest.
    max_characters: int = 50_000_000
    # Rows of one CSV file or XLSX sheet.
    max_rows: int = 1_000_000


_RATIO_FLOOR = 1024 * 1024  # small entries may compress well without being bombs


def check_zip(path: Path, limits: ParseLimits) -> list[str]:
    """The archive's member names, after refusing a zip bomb (422). Sizes are those the central
    directory declares: zipfile stops reading a member at its declared size, so a member that
    lies about it fails its CRC check instead of inflating further."""
    try:
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise unreadable(f"not a valid zip archive ({exc})") from None
    if len(infos) > limits.max_zip_entries:
        raise unreadable("the archive has too many entries", limit=limits.max_zip_entries)
    total = 0
    for info in infos:
        total += info.file_size
        if total > limits.max_unzipped_bytes:
            raise unreadable(
                "the archive inflates beyond the limit", limit_bytes=limits.max_unzipped_bytes
            )
        if info.file_size > _RATIO_FLOOR:
            ratio = info.file_size / max(info.compress_size, 1)
            if ratio > limits.max_zip_ratio:
                raise unreadable(
                    "an archive entry is compressed suspiciously well (a zip bomb?)",
                    entry=info.filename[:200],
                    ratio=round(ratio),
                    limit=limits.max_zip_ratio,
                )
    return [info.filename for info in infos]


def check_xml_members(path: Path, names: list[str]) -> None:
    """Refuse (422) XML parts that declare a DTD or entities. Office Open XML never needs one,
    and a declared entity is how XML bombs and external-entity reads start. Only the prolog is
    read: a DTD must come before the root element."""
    with zipfile.ZipFile(path) as archive:
        for name in names:
            if not (name.endswith(".xml") or name.endswith(".rels")):
                continue
            with archive.open(name) as member:
                try:
                    for _ in safe_xml.iterparse(member, events=("start",), forbid_dtd=True):
                        break
                except DefusedXmlException:
                    raise unreadable(
                        "the document declares XML entities or a DTD", entry=name[:200]
                    ) from None
                except (safe_xml.ParseError, zipfile.BadZipFile, OSError, EOFError) as exc:
                    raise unreadable(f"a part of the document is damaged ({exc})") from None
