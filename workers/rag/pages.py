"""The pages a chunk spans, from the page offsets its document's metadata gives.

A paged source (a PDF, a DOCX with page breaks, an XLSX with sheets) is one text in RAG; where
each page begins is said in the document's metadata, as the ingestion component writes it:
`page_starts` (the character offset where page 1, 2, ... begins) or `page_offsets` (`[page,
offset]` pairs, for sources whose pages are not 1..n, e.g. with empty pages left out). A chunk's
first page is the last one starting at or before its `start`, its last page the last one
starting before its `end`. Metadata without them, or with values that are not ascending
offsets, gives no pages (0, 0): the search result then simply carries none.
"""

from __future__ import annotations

import itertools
from bisect import bisect_right
from collections.abc import Mapping
from typing import Any

NO_PAGES = (0, 0)


def _offset(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if value < 0 or value != int(value):
        return None
    return int(value)


def page_table(metadata: Mapping[str, Any]) -> tuple[list[int], list[int]] | None:
    """(page numbers, their start offsets), ascending; None when the metadata gives none."""
    pages: list[int] = []
    starts: list[int] = []
    if isinstance(metadata.get("page_starts"), list | tuple):
        for number, value in enumerate(metadata["page_starts"], start=1):
            offset = _offset(value)
            if offset is None:
                return None
            pages.append(number)
            starts.append(offset)
    elif isinstance(metadata.get("page_offsets"), list | tuple):
        for pair in metadata["page_offsets"]:
            if not isinstance(pair, list | tuple) or len(pair) != 2:
                return None
            page, start = _offset(pair[0]), _offset(pair[1])
            if page is None or start is None or page < 1:
                return None
            pages.append(page)
            starts.append(start)
    if not starts:
        return None
    ascending = all(a < b for a, b in itertools.pairwise(pages)) and all(
        a <= b for a, b in itertools.pairwise(starts)
    )
    return (pages, starts) if ascending else None


def chunk_pages(metadata: Mapping[str, Any], start: int, end: int) -> tuple[int, int]:
    """The first and last page (1-based) of the chunk `content[start:end]`, or (0, 0)."""
    table = page_table(metadata)
    if table is None:
        return NO_PAGES
    pages, starts = table
    first = bisect_right(starts, start) - 1
    last = bisect_right(starts, max(end - 1, start)) - 1
    if last < 0:
        return NO_PAGES
    return pages[max(first, 0)], pages[last]
