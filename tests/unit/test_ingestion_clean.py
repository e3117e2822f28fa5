"""Cleaning keeps structure (lines, paragraphs) and normalises everything else."""

from __future__ import annotations

from workers.ingestion.clean import clean_cell, clean_document, clean_text
from workers.ingestion.document import Block, ParsedDocument
from workers.ingestion.names import display_name
from workers.ingestion.structure import markdown_table, structure_document


def test_newlines_and_paragraph_breaks_survive_cleaning() -> None:
    """\\r\\n, \\r and Unicode line separators become \\n; blank-line runs become one."""
    assert clean_text("a\r\nb\rc\u2028d\n\n\n\n\ne") == "a\nb\nc\nd\n\ne"


def test_spaces_and_controls_are_normalised_within_lines() -> None:
    """Tabs, no-break and wide spaces collapse; controls and zero-width characters go."""
    assert clean_text("a\t\u00a0 b\u3000c\x00\x07d\u200be\u00adf  \nnext") == "a b cdef\nnext"


def test_ligatures_and_composed_characters_are_normalised() -> None:
    """PDF ligatures are spelled out and decomposed accents are composed (NFC)."""
    assert clean_text("\ufb01nal e\u0301t\u00e9") == "final \u00e9t\u00e9"


def test_dehyphenation_joins_words_broken_at_line_ends_only() -> None:
    """ "infor-\\nmation" is joined; a real hyphen inside a line is kept."""
    assert clean_text("infor-\nmation well-known", dehyphenate=True) == "information\nwell-known"
    assert clean_text("infor-\nmation") == "infor-\nmation"


def test_reflow_joins_lines_wrapped_mid_sentence_only() -> None:
    """A break between a word and a lowercase word is a space; breaks after a full stop or a
    colon, before a capital, a digit or a bullet, and paragraph breaks stay."""
    text = (
        "The keeper logged seventeen passing\nships, then slept.\nNext line.\n"
        "Items:\n- lamps\nlist of\n3 wicks\n\nnew paragraph"
    )
    assert clean_text(text, reflow=True) == (
        "The keeper logged seventeen passing ships, then slept.\nNext line.\n"
        "Items:\n- lamps list of\n3 wicks\n\nnew paragraph"
    )
    assert clean_text("infor-\nmation goes\non", dehyphenate=True, reflow=True) == (
        "information goes on"
    )
    assert clean_text("passing\nships") == "passing\nships"


def test_table_cells_are_single_lines_and_pipes_are_escaped() -> None:
    """A cell's newlines become spaces; a pipe in a cell cannot break the Markdown table."""
    assert clean_cell(" two\nlines ") == "two lines"
    assert markdown_table([["a|b", "c"], ["1", "2"]]) == "| a\\|b | c |\n|---|---|\n| 1 | 2 |"


def test_empty_blocks_and_rows_are_dropped() -> None:
    """Blocks with no text left after cleaning disappear, as do empty table rows."""
    doc = clean_document(
        ParsedDocument(
            [
                Block("paragraph", text=" \x07 "),
                Block("table", rows=[["", ""], ["x", ""]]),
                Block("heading", text="Title\n", level=1),
            ]
        )
    )
    assert [(b.kind, b.text, b.rows) for b in doc.blocks] == [
        ("table", "", [["x", ""]]),
        ("heading", "Title", []),
    ]


def test_sections_nest_by_level_and_end_at_the_next_peer() -> None:
    """An h2 section ends at the next h2 or h1; an h1 section holds its h2s."""
    doc = structure_document(
        ParsedDocument(
            [
                Block("heading", text="A", level=1, page=1),
                Block("heading", text="A.1", level=2, page=1),
                Block("paragraph", text="one", page=2),
                Block("heading", text="A.2", level=2, page=3),
                Block("paragraph", text="two", page=3),
                Block("heading", text="B", level=1, page=4),
            ],
            paged=True,
            pages=4,
        )
    )
    spans = {s.title: (s.page_start, s.page_end) for s in doc.sections}
    assert spans == {"A": (1, 3), "A.1": (1, 2), "A.2": (3, 3), "B": (4, 4)}
    a1 = next(s for s in doc.sections if s.title == "A.1")
    assert doc.text[a1.char_start : a1.char_end] == "## A.1\n\none"
    assert doc.page_offsets == [
        (1, 0),
        (2, doc.text.index("one")),
        (3, doc.text.index("## A.2")),
        (4, doc.text.index("# B")),
    ]


def test_client_file_names_are_display_names_never_paths() -> None:
    """Path segments, control and bidi characters are removed from a client's file name."""
    assert display_name("../../etc/passwd") == "passwd"
    assert display_name("..\\..\\windows\\win.ini") == "win.ini"
    assert display_name("rep\u202eort\x00.pdf") == "report.pdf"
    assert len(display_name("x" * 400 + ".pdf")) == 255
    assert display_name("x" * 400 + ".pdf").endswith(".pdf")
