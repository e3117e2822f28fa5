"""The pages of a chunk, from the page offsets in its document's metadata."""

from __future__ import annotations

from typing import Any

import pytest

from workers.rag.pages import chunk_pages

STARTS = {"page_starts": [0, 100, 250, 400]}


@pytest.mark.parametrize(
    ("start", "end", "pages"),
    [
        (0, 50, (1, 1)),
        (0, 100, (1, 1)),  # ends where page 2 begins: not on page 2
        (99, 101, (1, 2)),
        (100, 250, (2, 2)),
        (120, 420, (2, 4)),
        (400, 900, (4, 4)),
    ],
)
def test_chunk_pages_follow_page_starts(start: int, end: int, pages: tuple[int, int]) -> None:
    """A chunk's first page is the last starting at or before it, its last the last starting
    before its end."""
    assert chunk_pages(STARTS, start, end) == pages


def test_page_offsets_name_the_pages_they_list() -> None:
    """`page_offsets` pairs give pages that are not 1..n (an empty page 2 left out)."""
    meta = {"page_offsets": [[1, 0], [3, 80], [4, 200]]}
    assert chunk_pages(meta, 90, 150) == (3, 3)
    assert chunk_pages(meta, 10, 210) == (1, 4)


def test_offsets_from_a_protobuf_struct_count_as_integers() -> None:
    """Metadata that went through a Struct carries numbers as floats: 100.0 is offset 100."""
    assert chunk_pages({"page_starts": [0.0, 100.0]}, 120, 130) == (2, 2)


@pytest.mark.parametrize(
    "metadata",
    [
        {},
        {"page_starts": "0,100"},
        {"page_starts": []},
        {"page_starts": [0, 200, 100]},
        {"page_starts": [0, -5]},
        {"page_starts": [0, 1.5]},
        {"page_starts": [0, True]},
        {"page_offsets": [[1, 0], [1, 10]]},
        {"page_offsets": [[0, 0]]},
        {"page_offsets": [[1, 0, 3]]},
        {"page_offsets": "1:0"},
    ],
)
def test_metadata_without_valid_page_offsets_gives_no_pages(metadata: dict[str, Any]) -> None:
    """Missing, malformed or descending offsets give (0, 0), never a wrong page or an error."""
    assert chunk_pages(metadata, 10, 20) == (0, 0)
