"""Type detection: the bytes decide; name and Content-Type only break ties among text formats."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import documents
from workers.ingestion.pipeline import detect_file
from workers.ingestion.sniff import detect


def detected(tmp_path: Path, data: bytes, file_name: str = "", content_type: str = "") -> str:
    path = tmp_path / "source"
    path.write_bytes(data)
    return detect_file(path, file_name=file_name, content_type=content_type).kind


@pytest.mark.parametrize(
    ("make", "kind"),
    [
        (lambda: documents.pdf(["hello"]), "pdf"),
        (lambda: documents.docx_file([("p", "hello")]), "docx"),
        (lambda: documents.xlsx_file({"S": [["a", "b"], [1, 2]]}), "xlsx"),
        (lambda: documents.HTML_PAGE, "html"),
        (lambda: documents.DIV_PAGE, "html"),
        (lambda: documents.CSV, "csv"),
        (lambda: documents.MARKDOWN, "markdown"),
        (lambda: b'{"a": [1, 2, {"b": null}]}', "json"),
        (lambda: b"Just a note.\nWith two lines of plain words.\n", "text"),
    ],
)
def test_each_supported_type_is_recognised_from_its_bytes_alone(
    tmp_path: Path, make: object, kind: str
) -> None:
    """No name, no Content-Type: the bytes alone give the type."""
    assert callable(make)
    assert detected(tmp_path, make()) == kind


@pytest.mark.parametrize(
    ("make", "name", "kind"),
    [
        (lambda: documents.pdf(["hello"]), "notes.txt", "pdf"),
        (lambda: documents.docx_file([("p", "x")]), "sheet.xlsx", "docx"),
        (lambda: documents.xlsx_file({"S": [["a"]]}), "letter.docx", "xlsx"),
        (lambda: documents.HTML_PAGE, "data.csv", "html"),
        (lambda: b'{"a": 1}', "readme.md", "json"),
    ],
)
def test_a_lying_extension_does_not_change_the_detected_type(
    tmp_path: Path, make: object, name: str, kind: str
) -> None:
    """A PDF called notes.txt is a PDF; the extension cannot override a clear signature."""
    assert callable(make)
    assert detected(tmp_path, make(), name, "text/plain") == kind


def test_extension_breaks_the_tie_between_plausible_text_formats(tmp_path: Path) -> None:
    """Comma-separated lines are CSV unless the name says it is a text note."""
    data = b"one, two, three\nfour, five, six\nseven, eight, nine\n"
    assert detected(tmp_path, data) == "csv"
    assert detected(tmp_path, data, "notes.txt") == "text"
    assert detected(tmp_path, data, "", "text/plain; charset=utf-8") == "text"
    assert detected(tmp_path, b"plain words only\nand more\n", "x.md") == "markdown"


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        (b"\x89PNG\r\n\x1a\n" + bytes(64), "png"),
        (b"\x7fELF\x02\x01\x01" + bytes(64), "elf"),
        (bytes(range(256)) * 4, "binary"),
        (b'<?xml version="1.0"?><catalog><book id="1"/></catalog>', "xml"),
    ],
)
def test_unsupported_types_are_named(tmp_path: Path, data: bytes, kind: str) -> None:
    """Images, executables, binary noise and plain XML are detected as what they are."""
    assert detected(tmp_path, data, "report.pdf", "application/pdf") == kind


def test_a_zip_that_is_no_office_file_is_a_zip(tmp_path: Path) -> None:
    """A zip archive holding neither word/ nor xl/ parts is reported as zip."""
    import io
    import zipfile

    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("word.txt", "not a document")
    assert detected(tmp_path, out.getvalue(), "a.docx") == "zip"


def test_text_encodings_are_detected_and_kept() -> None:
    """UTF-16 with a BOM and cp1252 are text; their encoding is reported for parsing."""
    assert detect("Grüße aus Köln\n".encode("utf-16"), complete=True).encoding == "utf-16"
    latin = detect("Caf\u00e9 cr\u00e8me, fa\u00e7ade\n".encode("cp1252"), complete=True)
    assert (latin.kind, latin.encoding) == ("text", "cp1252")


def test_a_sample_cut_inside_a_character_is_still_utf8() -> None:
    """The first 64 KiB of a large UTF-8 file may end mid-character; it is still UTF-8."""
    head = ("é" * 40).encode()[:-1]
    assert detect(head).encoding == "utf-8"
