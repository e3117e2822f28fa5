"""Structuring: cleaned blocks to one Markdown text, with its sections and page offsets.

Markdown because the RAG chunker starts chunks at its headings and keeps table rows whole;
headings become `#` lines, tables Markdown tables (long ones split into parts that repeat the
header row, so a chunk of a table still says what its columns are). The offsets of sections
and pages in the text let a citation of a chunk (which knows its offsets) name the page.
"""

from __future__ import annotations

from workers.ingestion.document import Block, ParsedDocument, Section, StructuredDocument

TABLE_PART_ROWS = 40


def markdown_table(rows: list[list[str]]) -> str:
    width = max(len(r) for r in rows)
    padded = [[_cell(c) for c in r] + [""] * (width - len(r)) for r in rows]
    header, body = padded[0], padded[1:]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * width]
    lines += ["| " + " | ".join(r) + " |" for r in body]
    return "\n".join(lines)


def _cell(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|")


def render_block(block: Block) -> list[str]:
    """The Markdown of one block (a long table gives several parts)."""
    if block.kind == "heading":
        return ["#" * min(max(block.level, 1), 6) + " " + block.text]
    if block.kind == "code":
        fence = "````" if "```" in block.text else "```"
        return [f"{fence}\n{block.text}\n{fence}"]
    if block.kind == "table":
        header, body = block.rows[0], block.rows[1:]
        if not body:
            return [markdown_table([header])]
        return [
            markdown_table([header, *body[i : i + TABLE_PART_ROWS]])
            for i in range(0, len(body), TABLE_PART_ROWS)
        ]
    return [block.text]


def structure_document(doc: ParsedDocument) -> StructuredDocument:
    parts: list[str] = []
    offset = 0
    page_offsets: list[tuple[int, int]] = []
    headings: list[tuple[Block, int, int]] = []  # (heading, offset, index of its block)
    block_pages: list[tuple[int, int]] = []  # (offset, page) of each block
    for index, block in enumerate(doc.blocks):
        if doc.paged and block.page and (not page_offsets or block.page > page_offsets[-1][0]):
            page_offsets.append((block.page, offset))
        if block.kind == "heading":
            headings.append((block, offset, index))
        block_pages.append((offset, block.page))
        for text in render_block(block):
            parts.append(text)
            offset += len(text) + 2
    text = "\n\n".join(parts)
    sections = _sections(headings, doc.blocks, len(text))
    title = doc.title or next((b.text for b, _, _ in headings if b.level == 1), "")
    return StructuredDocument(
        text=text,
        sections=sections,
        page_offsets=page_offsets,
        pages=doc.pages,
        pages_parsed=doc.pages_parsed,
        title=title,
        paged=doc.paged,
    )


def _sections(
    headings: list[tuple[Block, int, int]], blocks: list[Block], length: int
) -> list[Section]:
    out = []
    for i, (heading, start, index) in enumerate(headings):
        end, last = length, len(blocks)
        for later, later_start, later_index in headings[i + 1 :]:
            if later.level <= heading.level:
                end, last = max(later_start - 2, start), later_index
                break
        pages = [b.page for b in blocks[index:last] if b.page]
        out.append(
            Section(
                title=heading.text,
                level=heading.level,
                char_start=start,
                char_end=end,
                page_start=min(pages, default=0),
                page_end=max(pages, default=0),
            )
        )
    return out
