"""DOCX (python-docx) and XLSX (python-calamine): Office Open XML, i.e. zip archives of XML.

Both are checked for zip bombs and XML entity declarations before the library opens them
(workers/ingestion/limits.py). DOCX keeps headings (from the paragraph style), list items and
tables in reading order, and page numbers where the file records page breaks. XLSX gives one
heading and one table per sheet, a sheet counting as a page.
"""

from __future__ import annotations

import datetime
import re
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import docx
from docx.document import Document
from docx.opc.exceptions import OpcError
from docx.table import Table
from docx.text.paragraph import Paragraph
from lxml import etree
from python_calamine import CalamineError, CalamineWorkbook, SheetTypeEnum

from workers.ingestion.document import Block, ParsedDocument, Progress
from workers.ingestion.errors import unreadable
from workers.ingestion.limits import ParseLimits, check_xml_members, check_zip
from workers.ingestion.parsers import ParseOptions

_W = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"
_HEADING_STYLE = re.compile(r"(?:heading|titre|überschrift|título|titolo)\s*(\d)", re.I)


def parse_docx(
    path: Path, options: ParseOptions, limits: ParseLimits, progress: Progress
) -> ParsedDocument:
    check_xml_members(path, check_zip(path, limits))
    progress(0, 1)
    try:
        document = docx.Document(str(path))
        blocks, pages, paged = _docx_blocks(document)
        title = document.core_properties.title or ""
    except (OpcError, KeyError, ValueError, zipfile.BadZipFile, etree.XMLSyntaxError) as exc:
        raise unreadable(f"not a readable DOCX ({type(exc).__name__}: {str(exc)[:200]})") from None
    progress(1, 1)
    return ParsedDocument(blocks, pages=pages, pages_parsed=pages, title=title, paged=paged)


def _docx_blocks(document: Document) -> tuple[list[Block], int, bool]:
    body = document.element.body
    # Word records where it last broke pages; without those, explicit page breaks are used.
    rendered = body.find(f".//{_W}lastRenderedPageBreak") is not None
    explicit = rendered or body.find(f".//{_W}br[@{_W}type='page']") is not None
    blocks: list[Block] = []
    page = 1
    for item in document.iter_inner_content():
        if isinstance(item, Table):
            rows = _table_rows(item)
            if rows:
                blocks.append(Block("table", rows=rows, page=page))
            if explicit:
                page += sum(_breaks(item._tbl, rendered))
            continue
        before, after = _breaks(item._p, rendered) if explicit else (0, 0)
        page += before
        block = _paragraph_block(item, page)
        if block is not None:
            blocks.append(block)
        page += after
    return blocks, page if explicit else 1, explicit


def _paragraph_block(paragraph: Paragraph, page: int) -> Block | None:
    text = paragraph.text
    if not text.strip():
        return None
    style = paragraph.style
    name = (style.name or "") if style is not None else ""
    style_id = (style.style_id or "") if style is not None else ""
    if name == "Title" or style_id == "Title":
        return Block("heading", text=text, level=1, page=page)
    found = _HEADING_STYLE.match(name) or _HEADING_STYLE.match(style_id)
    if found:
        return Block("heading", text=text, level=min(max(int(found.group(1)), 1), 6), page=page)
    if "list" in name.lower():
        return Block("paragraph", text="- " + text, page=page)
    return Block("paragraph", text=text, page=page)


def _breaks(element: Any, rendered: bool) -> tuple[int, int]:
    """Page breaks in an element before any of its text, and after some of it."""
    before = after = 0
    seen_text = False
    for node in element.iter(f"{_W}t", f"{_W}br", f"{_W}lastRenderedPageBreak"):
        if node.tag == f"{_W}t":
            seen_text = seen_text or bool(node.text)
            continue
        is_break = (
            node.tag == f"{_W}lastRenderedPageBreak"
            if rendered
            else node.get(f"{_W}type") == "page"
        )
        if is_break:
            if seen_text:
                after += 1
            else:
                before += 1
    return before, after


def _table_rows(table: Table) -> list[list[str]]:
    rows = []
    for row in table.rows:
        seen: set[int] = set()
        cells = []
        for cell in row.cells:  # a merged cell appears once per grid column it spans
            if id(cell._tc) in seen:
                continue
            seen.add(id(cell._tc))
            cells.append(cell.text)
        rows.append(cells)
    return rows


def parse_xlsx(
    path: Path, options: ParseOptions, limits: ParseLimits, progress: Progress
) -> ParsedDocument:
    check_xml_members(path, check_zip(path, limits))
    try:
        workbook = CalamineWorkbook.from_path(str(path))
        sheets = [m.name for m in workbook.sheets_metadata if m.typ == SheetTypeEnum.WorkSheet]
    except (CalamineError, ValueError, OSError) as exc:
        raise unreadable(f"not a readable XLSX ({str(exc)[:200]})") from None
    wanted = min(len(sheets), options.max_pages or limits.max_pages, limits.max_pages)
    blocks: list[Block] = []
    progress(0, wanted)
    for index, name in enumerate(sheets[:wanted]):
        try:
            rows = _sheet_rows(workbook.get_sheet_by_name(name).iter_rows(), limits, name)
        except (CalamineError, ValueError) as exc:
            raise unreadable(f"sheet {name[:80]!r} cannot be read ({str(exc)[:200]})") from None
        blocks.append(Block("heading", text=name, level=2, page=index + 1))
        if rows:
            blocks.append(Block("table", rows=rows, page=index + 1))
        progress(index + 1, wanted)
    return ParsedDocument(blocks, pages=len(sheets), pages_parsed=wanted, paged=True)


def _sheet_rows(source: Iterable[list[Any]], limits: ParseLimits, name: str) -> list[list[str]]:
    rows: list[list[str]] = []
    for row in source:
        if len(rows) >= limits.max_rows:
            raise unreadable(f"sheet {name[:80]!r} has too many rows", limit=limits.max_rows)
        rows.append([_cell(v) for v in row])
    rows = [r for r in rows if any(r)]
    width = max((max((i + 1 for i, c in enumerate(r) if c), default=0) for r in rows), default=0)
    return [r[:width] for r in rows]


def _cell(value: Any) -> str:
    """calamine gives ints as floats and empty cells as ''."""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)
    if isinstance(value, datetime.datetime | datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, datetime.timedelta):
        return str(value)
    return str(value)
