"""PDF with pypdf: text page by page, the outline (bookmarks) as headings, pages as metadata.

pypdf walks the page tree iteratively with its own depth and size limits (object loops and
absurd trees raise LimitReachedError); the page count a file declares is checked before the
tree is walked at all. Encrypted files open only when the empty user password works (a common
"permissions only" encryption); otherwise they are refused, as are files pypdf cannot read.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from pypdf import PdfReader
from pypdf.errors import FileNotDecryptedError, PyPdfError
from pypdf.generic import Destination

from workers.ingestion.document import Block, ParsedDocument, Progress
from workers.ingestion.errors import unreadable
from workers.ingestion.limits import ParseLimits
from workers.ingestion.parsers import ParseOptions

# pypdf logs every recoverable oddity of a file at WARNING; the outcome is what we report.
logging.getLogger("pypdf").setLevel(logging.ERROR)


def parse_pdf(
    path: Path, options: ParseOptions, limits: ParseLimits, progress: Progress
) -> ParsedDocument:
    try:
        reader = PdfReader(path, strict=False)
        if reader.is_encrypted and not _decrypt(reader):
            raise unreadable("the PDF is encrypted with a password", reason="encrypted")
        declared = _declared_pages(reader)
        if declared > limits.max_declared_pages:
            raise unreadable(
                "the PDF declares more pages than allowed",
                pages=declared,
                limit=limits.max_declared_pages,
            )
        total = len(reader.pages)
        wanted = min(total, options.max_pages or limits.max_pages, limits.max_pages)
        headings = _outline(reader)
        title = str(reader.metadata.get("/Title") or "") if reader.metadata else ""
    except PyPdfError as exc:
        raise unreadable(_reason(exc)) from None
    except (RecursionError, ValueError, TypeError, KeyError, AttributeError) as exc:
        raise unreadable(f"the PDF structure is damaged ({type(exc).__name__})") from None
    blocks: list[Block] = []
    failed = 0
    progress(0, wanted)
    for index in range(wanted):
        number = index + 1
        blocks += [
            Block("heading", text=t, level=lv, page=number) for t, lv in headings.get(index, [])
        ]
        try:
            text = reader.pages[index].extract_text()
        except (PyPdfError, RecursionError, ValueError, TypeError, KeyError, AttributeError):
            failed += 1
            text = ""
        if text.strip():
            blocks.append(Block("paragraph", text=text, page=number))
        progress(number, wanted)
    if wanted and failed == wanted:
        raise unreadable("no page of the PDF could be read")
    return ParsedDocument(blocks, pages=total, pages_parsed=wanted, title=title, paged=True)


def _decrypt(reader: PdfReader) -> bool:
    try:
        return bool(reader.decrypt(""))
    except (FileNotDecryptedError, PyPdfError, NotImplementedError):
        return False


def _declared_pages(reader: PdfReader) -> int:
    try:
        root: Any = reader.trailer["/Root"]
        return int(root["/Pages"]["/Count"])
    except (KeyError, TypeError, ValueError, PyPdfError):
        return 0


def _outline(reader: PdfReader) -> dict[int, list[tuple[str, int]]]:
    """Outline titles by 0-based page index, in outline order, with their nesting level."""
    found: dict[int, list[tuple[str, int]]] = {}

    def walk(items: list[Any], level: int) -> None:
        for item in items:
            if isinstance(item, list):
                if level < 6:
                    walk(item, level + 1)
            elif isinstance(item, Destination):
                try:
                    page = reader.get_destination_page_number(item)
                except (PyPdfError, ValueError, KeyError, TypeError, AttributeError):
                    continue
                title = str(item.title or "").strip()
                if title and page is not None and page >= 0:
                    found.setdefault(page, []).append((title, level))

    try:
        walk(list(reader.outline), 1)
    except (PyPdfError, RecursionError, ValueError, TypeError, KeyError, AttributeError):
        return {}
    return found


def _reason(exc: PyPdfError) -> str:
    text = str(exc).strip() or type(exc).__name__
    return f"not a readable PDF ({text[:200]})"
