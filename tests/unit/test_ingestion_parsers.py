"""Each supported type parsed, cleaned and structured: text, headings, tables, pages."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support import documents
from workers.ingestion.document import StructuredDocument
from workers.ingestion.limits import ParseLimits
from workers.ingestion.parsers import ParseOptions
from workers.ingestion.pipeline import detect_file, process_file


def ingest(
    tmp_path: Path, data: bytes, options: ParseOptions | None = None, name: str = ""
) -> StructuredDocument:
    path = tmp_path / "source"
    path.write_bytes(data)
    seen: list[tuple[int, int]] = []
    doc = process_file(
        path,
        detect_file(path, file_name=name),
        options or ParseOptions(),
        ParseLimits(),
        lambda done, total: seen.append((done, total)),
    )
    assert seen, "no progress reported"
    assert seen[-1][0] == seen[-1][1], seen
    return doc


def test_pdf_pages_are_cited_by_their_offsets(tmp_path: Path) -> None:
    """Each page's text starts at its recorded offset; the outline gives headings with pages."""
    pages = ["Opening page about harbours.", documents.SENTENCES["pdf"], "Closing remarks."]
    data = documents.pdf(pages, outline=[("Intro", 1, 0), ("Storm log", 2, 0)], title="Log")
    doc = ingest(tmp_path, data)
    assert (doc.pages, doc.pages_parsed, doc.paged, doc.title) == (3, 3, True, "Log")
    where = doc.text.index("seventeen passing ships")
    assert doc.page_at(where) == 2
    assert doc.page_at(doc.text.index("Closing remarks")) == 3
    assert [(s.title, s.page_start, s.page_end) for s in doc.sections] == [
        ("Intro", 1, 1),
        ("Storm log", 2, 3),
    ]
    assert "# Storm log" in doc.text


def test_pdf_max_pages_stops_early(tmp_path: Path) -> None:
    """max_pages parses only the first pages and says how many there were."""
    doc = ingest(
        tmp_path, documents.pdf([f"Page {i}" for i in range(1, 6)]), ParseOptions(max_pages=2)
    )
    assert (doc.pages, doc.pages_parsed) == (5, 2)
    assert "Page 3" not in doc.text


def test_pdf_with_empty_owner_only_encryption_is_read(tmp_path: Path) -> None:
    """Encryption with an empty user password (permissions only) still opens."""
    doc = ingest(tmp_path, documents.pdf(["Readable despite encryption."], owner_password="o"))
    assert "Readable despite encryption." in doc.text


def test_docx_keeps_headings_lists_tables_and_page_breaks(tmp_path: Path) -> None:
    """Heading styles become Markdown headings, a table a Markdown table, page breaks pages."""
    data = documents.docx_file(
        [
            ("h1", "Tour report"),
            ("p", documents.SENTENCES["docx"]),
            ("li", "Cable car"),
            ("pagebreak", ""),
            ("h2", "Costs"),
            ("p", "Maintenance stayed within budget."),
        ],
        table=[["Season", "Visitors"], ["Winter", "1200"]],
        title="Tours",
    )
    doc = ingest(tmp_path, data)
    assert doc.text.startswith("# Tour report\n\n" + documents.SENTENCES["docx"])
    assert "- Cable car" in doc.text
    assert "## Costs" in doc.text
    assert "| Season | Visitors |\n|---|---|\n| Winter | 1200 |" in doc.text
    assert doc.title == "Tours"
    assert doc.paged
    assert doc.pages == 2
    assert doc.page_at(doc.text.index("Maintenance")) == 2
    costs = next(s for s in doc.sections if s.title == "Costs")
    assert (costs.level, costs.page_start) == (2, 2)


def test_xlsx_sheets_are_headings_with_tables(tmp_path: Path) -> None:
    """Each sheet is a heading and a table; integral floats come back as integers."""
    data = documents.xlsx_file(
        {"Stock": [["item", "count"], [documents.SENTENCES["xlsx"], 3], ["Lamp", 2.5]], "Empty": []}
    )
    doc = ingest(tmp_path, data)
    assert (
        "## Stock\n\n| item | count |\n|---|---|\n| Walnut desk | 3 |\n| Lamp | 2.5 |" in doc.text
    )
    assert "## Empty" in doc.text
    assert doc.pages == 2


def test_html_main_text_without_scripts_navigation_or_footer(tmp_path: Path) -> None:
    """The article's text, headings and table stay; scripts, nav and footer go."""
    doc = ingest(tmp_path, documents.HTML_PAGE)
    assert documents.SENTENCES["html"] in doc.text
    assert "## Birds" in doc.text
    assert "| Day | High tide |" in doc.text
    assert doc.text.startswith("# Harbour notes")
    for gone in ("SCRIPT-SECRET", "color: red", "Cookie settings", "About the harbour office"):
        assert gone not in doc.text


def test_html_full_mode_keeps_every_visible_text_but_no_script(tmp_path: Path) -> None:
    """html_mode=full keeps navigation and footer, never scripts or styles."""
    doc = ingest(tmp_path, documents.HTML_PAGE, ParseOptions(html_mode="full"))
    assert "Cookie settings" in doc.text
    assert documents.SENTENCES["html"] in doc.text
    assert "SCRIPT-SECRET" not in doc.text
    assert "color: red" not in doc.text


def test_html_made_of_divs_keeps_its_paragraphs(tmp_path: Path) -> None:
    """A page without semantic tags still yields its real paragraphs, not only the menu."""
    doc = ingest(tmp_path, documents.DIV_PAGE)
    assert "real paragraph about birds" in doc.text
    assert "swallows fly south" in doc.text


def test_markdown_headings_and_code_fences(tmp_path: Path) -> None:
    """ATX headings are sections; a '#' inside a fence is code, not a heading."""
    doc = ingest(tmp_path, documents.MARKDOWN)
    assert [s.title for s in doc.sections] == ["Observatory", "Dome", "Telescope"]
    assert documents.SENTENCES["markdown"] + "\nIt was built in 1911." in doc.text
    assert '```\n# not a heading, code\nprint("hi")\n```' in doc.text
    dome = doc.sections[1]
    assert doc.text[dome.char_start : dome.char_end].startswith("## Dome")
    assert "Telescope" not in doc.text[dome.char_start : dome.char_end]


def test_csv_becomes_a_table_with_the_header_repeated_in_long_tables(tmp_path: Path) -> None:
    """A CSV is one Markdown table; every 40 rows the header row is repeated."""
    rows = "\n".join(f"item {i};{i}" for i in range(100))
    doc = ingest(tmp_path, f"name;number\n{rows}\n".encode(), name="x.csv")
    assert doc.text.count("| name | number |") == 3
    assert "| item 99 | 99 |" in doc.text
    small = ingest(tmp_path, documents.CSV)
    assert "| Copper kettle | copper | 42 |" in small.text


def test_json_lists_of_objects_are_tables_and_others_key_paths(tmp_path: Path) -> None:
    """Records become a table; nested JSON becomes `path: value` lines."""
    table = ingest(tmp_path, json.dumps([{"a": 1, "b": "x"}, {"a": 2, "c": None}]).encode())
    assert "| a | b | c |\n|---|---|---|\n| 1 | x |  |\n| 2 |  | null |" in table.text
    nested = ingest(
        tmp_path,
        json.dumps({"station": {"id": documents.SENTENCES["json"], "tags": [1, True]}}).encode(),
    )
    assert "station.id: violet-hill-station" in nested.text
    assert "station.tags[1]: true" in nested.text


def test_plain_text_keeps_lines_and_paragraphs(tmp_path: Path) -> None:
    """Cleaning never joins lines or paragraphs of a text file."""
    doc = ingest(
        tmp_path,
        b"First line\r\nsecond line\r\n\r\n\r\n\r\nNext   paragraph\t here.\x07\n",
        name="a.txt",
    )
    assert doc.text == "First line\nsecond line\n\nNext paragraph here."


@pytest.mark.parametrize("encoding", ["utf-16", "cp1252"])
def test_text_in_other_encodings_is_decoded(tmp_path: Path, encoding: str) -> None:
    """UTF-16 and cp1252 text reaches the document as the same characters."""
    doc = ingest(tmp_path, "Café crème, façade\n\nsecond".encode(encoding), name="a.txt")
    assert doc.text == "Café crème, façade\n\nsecond"
