"""HTML: the main text (trafilatura), or every visible text, as headings, paragraphs, lists,
code and tables. Scripts, styles and forms never become text.

trafilatura finds the main content of an article-like page and drops navigation, footers and
ads, but on pages built only of `<div>`s its default mode keeps menus and footers in one lump.
So "main" tries its precision mode first and falls back to its default, and then to the full
text, when a mode keeps less than a sliver of the page's visible text; the page's `<title>`
becomes the top heading when the extraction dropped the page's own `<h1>`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trafilatura
from lxml import etree, html
from lxml_html_clean import Cleaner

from workers.ingestion.document import Block, ParsedDocument, Progress
from workers.ingestion.errors import unreadable
from workers.ingestion.limits import ParseLimits
from workers.ingestion.parsers import ParseOptions

# A mode's text must reach this share of the page's visible text (or _ENOUGH characters).
_MIN_SHARE = 0.15
_ENOUGH = 400
_CLEANER = Cleaner(
    scripts=True,
    javascript=True,
    comments=True,
    style=True,
    inline_style=True,
    links=True,
    meta=True,
    page_structure=False,
    processing_instructions=True,
    embedded=True,
    frames=True,
    forms=True,
    annoying_tags=True,
    remove_unknown_tags=False,
    safe_attrs_only=True,
)
_BLOCK_TAGS = {"p", "div", "section", "article", "blockquote", "li", "dd", "dt", "figcaption"}
_CONTAINED = _BLOCK_TAGS | {"table", "ul", "ol", "pre", "main", "header", "footer", "nav"}


def parse_html(
    path: Path, options: ParseOptions, limits: ParseLimits, progress: Progress
) -> ParsedDocument:
    progress(0, 1)
    text = path.read_bytes().decode(options.encoding or "utf-8", errors="replace")
    try:
        tree = html.document_fromstring(text)
        title = (tree.findtext(".//title") or "").strip()
        full = _full_blocks(_CLEANER.clean_html(tree))
    except (etree.ParserError, ValueError) as exc:
        raise unreadable(f"not a readable HTML page ({str(exc)[:200]})") from None
    blocks = full
    if options.html_mode != "full":
        visible = sum(len(b.text) + sum(len(c) for r in b.rows for c in r) for b in full)
        for precision in (True, False):
            found = _main_blocks(text, precision)
            size = sum(len(b.text) + sum(len(c) for r in b.rows for c in r) for b in found)
            if found and (size >= _ENOUGH or size >= visible * _MIN_SHARE):
                blocks = found
                break
    if title and not any(b.kind == "heading" and b.level == 1 for b in blocks):
        blocks.insert(0, Block("heading", text=title, level=1))
    progress(1, 1)
    return ParsedDocument(blocks, title=title)


def _main_blocks(text: str, precision: bool) -> list[Block]:
    found = trafilatura.bare_extraction(
        text,
        include_tables=True,
        include_comments=False,
        include_images=False,
        include_links=False,
        include_formatting=False,
        favor_precision=precision,
        deduplicate=False,
        with_metadata=False,
    )
    body = getattr(found, "body", None)
    if body is None:
        return []
    blocks: list[Block] = []
    for element in body:
        blocks += _extracted(element)
    return blocks


def _extracted(element: Any) -> list[Block]:
    """trafilatura's XML: head(rend=hN), p, list/item, code, quote, table/row/cell."""
    tag = element.tag
    if tag == "head":
        rend = element.get("rend", "h2")
        level = int(rend[1]) if len(rend) == 2 and rend[1].isdigit() else 2
        return [Block("heading", text=_text(element), level=level)]
    if tag == "list":
        return [Block("paragraph", text="- " + _text(item)) for item in element.iter("item")]
    if tag == "code":
        return [Block("code", text="".join(element.itertext()))]
    if tag == "table":
        rows = [[_text(c) for c in row.iter("cell")] for row in element.iter("row")]
        return [Block("table", rows=rows)] if rows else []
    if tag == "quote":
        return [Block("paragraph", text="> " + _text(element))]
    return [Block("paragraph", text=_text(element))]


def _text(element: Any) -> str:
    parts = [element.text or ""]
    for node in element.iterdescendants():
        if node.tag == "lb":
            parts.append("\n")
        elif node.text:
            parts.append(node.text)
        if node.tail:
            parts.append(node.tail)
    return "".join(parts)


def _is_container(element: Any) -> bool:
    """Whether a block element holds other blocks (then its children are walked one by one)."""
    for child in element:
        tag = child.tag if isinstance(child.tag, str) else ""
        if tag in _CONTAINED or (tag[:1] == "h" and tag[1:].isdigit()):
            return True
    return False


def _full_blocks(root: Any) -> list[Block]:
    """Every visible text of a cleaned page, block by block."""
    blocks: list[Block] = []

    def walk(element: Any) -> None:
        tag = element.tag if isinstance(element.tag, str) else ""
        if tag in ("h1", "h2", "h3", "h4", "h5", "h6"):
            blocks.append(Block("heading", text=element.text_content(), level=int(tag[1])))
            return
        if tag == "table":
            rows = [
                [cell.text_content() for cell in row if cell.tag in ("td", "th")]
                for row in element.iter("tr")
            ]
            blocks.append(Block("table", rows=[r for r in rows if r]))
            return
        if tag == "pre":
            blocks.append(Block("code", text=element.text_content()))
            return
        if tag in ("ul", "ol"):
            for item in element.iter("li"):
                blocks.append(Block("paragraph", text="- " + item.text_content()))
            return
        own = (element.text or "") if tag else ""
        if tag in _BLOCK_TAGS and not _is_container(element):
            blocks.append(Block("paragraph", text=element.text_content()))
            return
        if own.strip():
            blocks.append(Block("paragraph", text=own))
        for child in element:
            walk(child)
            if child.tail and child.tail.strip():
                blocks.append(Block("paragraph", text=child.tail))

    body = root.find(".//body")
    walk(body if body is not None else root)
    return [b for b in blocks if b.text.strip() or b.rows]
