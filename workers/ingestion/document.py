"""What a parser produces: the document as a list of blocks, in reading order.

Parsers say what they saw (a heading of level 2 on page 3, a table, a paragraph); cleaning and
structuring work on blocks, so every format shares them and a citation can lead back to a page.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

BlockKind = Literal["heading", "paragraph", "table", "code"]

# progress(done, total): units (pages, sheets) parsed so far and in all.
Progress = Callable[[int, int], None]


@dataclass
class Block:
    kind: BlockKind
    # Text of a heading, paragraph or code block; empty for tables.
    text: str = ""
    # Heading level, 1 (top) to 6.
    level: int = 0
    # 1-based page (PDF, DOCX with page breaks) or sheet (XLSX) the block starts on; 0 unknown.
    page: int = 0
    # Table cells, the first row being the header.
    rows: list[list[str]] = field(default_factory=list)


@dataclass
class ParsedDocument:
    blocks: list[Block]
    # Pages (or sheets) in the file, and how many were parsed (max_pages may stop earlier).
    pages: int = 1
    pages_parsed: int = 1
    # A title the file declares (PDF metadata, HTML <title>, DOCX core properties).
    title: str = ""
    # True when the format has real pages (PDF, DOCX with page breaks): page numbers cite.
    paged: bool = False


@dataclass(frozen=True)
class Section:
    """A heading and what follows it up to the next heading of the same or a higher level."""

    title: str
    level: int
    char_start: int
    char_end: int
    page_start: int
    page_end: int


@dataclass
class StructuredDocument:
    """The text as Markdown (headings, Markdown tables) with where sections and pages start."""

    text: str
    sections: list[Section]
    # (page, offset of its first character in `text`), ascending; empty when not paged.
    page_offsets: list[tuple[int, int]]
    pages: int
    pages_parsed: int
    title: str = ""
    paged: bool = False

    @property
    def characters(self) -> int:
        return len(self.text)

    def page_at(self, offset: int) -> int:
        """The page holding the character at `offset` (0 when not paged)."""
        page = 0
        for number, start in self.page_offsets:
            if start > offset:
                break
            page = number
        return page
