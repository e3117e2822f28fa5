"""What a file is, from its bytes.

Binary formats are recognised by their signature (`filetype`; for zip archives, by the parts
inside: `word/document.xml` is DOCX, `xl/workbook.xml` XLSX). For text the bytes decide what
they can: HTML, JSON and binary garbage are unambiguous. CSV, Markdown and plain text often are
not (a plain text is valid Markdown, a sentence with commas may parse as CSV): there the file
name's extension and the declared Content-Type break the tie among the formats the bytes allow,
and without them the strongest signal wins. A name or Content-Type never overrides the bytes.
"""

from __future__ import annotations

import codecs
import csv
import json
import re
from dataclasses import dataclass

import filetype

SUPPORTED = ("pdf", "docx", "html", "markdown", "text", "csv", "json", "xlsx")
MIME = {
    "pdf": "application/pdf",
    "docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "html": "text/html",
    "markdown": "text/markdown",
    "text": "text/plain",
    "csv": "text/csv",
    "json": "application/json",
}
_BY_EXTENSION = {
    "pdf": "pdf",
    "docx": "docx",
    "xlsx": "xlsx",
    "htm": "html",
    "html": "html",
    "xhtml": "html",
    "md": "markdown",
    "markdown": "markdown",
    "txt": "text",
    "text": "text",
    "log": "text",
    "csv": "csv",
    "tsv": "csv",
    "json": "json",
}
_BY_MIME = {mime: kind for kind, mime in MIME.items()} | {
    "text/x-markdown": "markdown",
    "application/csv": "csv",
    "text/tab-separated-values": "csv",
    "application/xhtml+xml": "html",
}
SAMPLE_BYTES = 64 * 1024
# Text heuristics look at the start only (and their expressions are bounded): a hostile sample
# must not cost more than a fair one.
_HEURISTIC_CHARS = 8 * 1024
_HTML_START = re.compile(
    rb"\s*(<!--.*?-->\s*)*<(!doctype\s+html|html[\s>]|head[\s>]|body[\s>])", re.I | re.S
)
_HTML_ANYWHERE = re.compile(rb"<(html|body)[\s>]", re.I)
_MD_SIGNALS = (
    re.compile(r"^#{1,6} \S", re.M),  # ATX heading
    re.compile(r"^```|^~~~", re.M),  # fenced code
    re.compile(r"\[[^\]\n]{1,200}\]\([^)\s]{1,500}\)"),  # link
    re.compile(r"^[ \t]*\|?[^\n]{0,500}\|[^\n]{0,500}\n[ \t]*\|?[ \t]*:?-{3,}", re.M),  # table
    re.compile(r"^\s*([-*+]|\d+\.) \S", re.M),  # list item
    re.compile(r"\*\*[^*\n]{1,200}\*\*|__[^_\n]{1,200}__"),  # bold
)


@dataclass(frozen=True)
class Detected:
    """The detected type: one of SUPPORTED, or another name (`png`, `zip`, `binary`, ...)."""

    kind: str
    mime: str
    # Text formats: the encoding the bytes decoded with.
    encoding: str = ""

    @property
    def supported(self) -> bool:
        return self.kind in SUPPORTED


def extension_of(file_name: str) -> str:
    base = re.split(r"[/\\]", file_name)[-1]
    return base.rsplit(".", 1)[-1].lower() if "." in base else ""


def hinted(file_name: str, content_type: str) -> list[str]:
    """The formats the name and the declared type suggest, name first."""
    out = []
    by_ext = _BY_EXTENSION.get(extension_of(file_name))
    if by_ext:
        out.append(by_ext)
    by_mime = _BY_MIME.get(content_type.split(";", 1)[0].strip().lower())
    if by_mime and by_mime not in out:
        out.append(by_mime)
    return out


def detect(
    head: bytes,
    *,
    file_name: str = "",
    content_type: str = "",
    zip_names: list[str] | None = None,
    complete: bool = False,
) -> Detected:
    """The type of a file whose first bytes are `head` (at least SAMPLE_BYTES, or the whole
    file when `complete`). `zip_names` are the member names when the file is a zip archive."""
    hints = hinted(file_name, content_type)
    binary = _binary(head, zip_names)
    if binary is not None:
        return binary
    decoded = _decode(head, complete=complete)
    if decoded is None:
        return Detected("binary", "application/octet-stream")
    text, encoding = decoded
    kind = _text_kind(head, text, hints, complete=complete)
    return Detected(kind, MIME.get(kind, "text/plain"), encoding)


def _binary(head: bytes, zip_names: list[str] | None) -> Detected | None:
    if zip_names is not None:
        names = set(zip_names)
        if "word/document.xml" in names:
            return Detected("docx", MIME["docx"])
        if "xl/workbook.xml" in names:
            return Detected("xlsx", MIME["xlsx"])
    guess = filetype.guess(head[:8192])
    if guess is None:
        return None
    kind = {"docx": "docx", "xlsx": "xlsx", "pdf": "pdf"}.get(guess.extension, guess.extension)
    if kind in ("docx", "xlsx") and zip_names is not None:
        kind = "zip"  # the archive was opened and holds neither
    return Detected(kind, MIME.get(kind, guess.mime))


def is_zip(head: bytes) -> bool:
    return head[:4] in (b"PK\x03\x04", b"PK\x05\x06")


def _decode(head: bytes, *, complete: bool) -> tuple[str, str] | None:
    """Text and encoding, or None for bytes that are no text (NUL bytes, control characters)."""
    for bom, encoding in (
        (codecs.BOM_UTF8, "utf-8-sig"),
        (codecs.BOM_UTF16_LE, "utf-16"),
        (codecs.BOM_UTF16_BE, "utf-16"),
    ):
        if head.startswith(bom):
            try:
                return head.decode(encoding, errors="strict" if complete else "ignore"), encoding
            except UnicodeDecodeError:
                return None
    if b"\x00" in head:
        return None
    try:
        text = head.decode("utf-8")
        encoding = "utf-8"
    except UnicodeDecodeError as exc:
        # A sample may end inside a multi-byte character; anything earlier is not UTF-8.
        if not complete and exc.start >= len(head) - 3:
            text, encoding = head[: exc.start].decode("utf-8"), "utf-8"
        else:
            text, encoding = head.decode("cp1252", errors="replace"), "cp1252"
    controls = sum(1 for c in text if ord(c) < 32 and c not in "\t\n\r\f\v")
    if controls > max(8, len(text) // 100):
        return None
    return text, encoding


def _text_kind(head: bytes, text: str, hints: list[str], *, complete: bool) -> str:
    if _HTML_START.match(head) or (_HTML_ANYWHERE.search(head[:4096]) and "html" in hints):
        return "html"
    stripped = text.lstrip()
    if stripped[:5].lower() == "<?xml":
        return "html" if _HTML_ANYWHERE.search(head) else "xml"
    if stripped[:1] in ("{", "[") and _looks_like_json(stripped, complete=complete):
        return "json"
    plausible = {"text": 1}
    text = text[:_HEURISTIC_CHARS]
    if _looks_like_csv(text):
        plausible["csv"] = 3
    # Any text is valid Markdown; its signals make it more than plain text.
    plausible["markdown"] = 1 + sum(1 for pattern in _MD_SIGNALS if pattern.search(text))
    for hint in hints:
        if hint in plausible:
            return hint
    return max(plausible, key=lambda k: (plausible[k], k == "text"))


def _looks_like_json(text: str, *, complete: bool) -> bool:
    """Valid JSON; for a sample of a larger file, valid up to where the sample was cut."""
    try:
        json.loads(text)
    except json.JSONDecodeError as exc:
        if complete:
            return False
        return exc.pos >= len(text.rstrip()) - 1 or exc.msg.startswith("Unterminated string")
    except RecursionError:
        return True  # JSON nested deeper than Python parses: the JSON parser refuses it
    except ValueError:
        return False
    return True


def _looks_like_csv(text: str) -> bool:
    lines = [line for line in text.splitlines()[:50] if line.strip()]
    if len(lines) < 2:
        return False
    try:
        dialect = csv.Sniffer().sniff("\n".join(lines[:20]), delimiters=",;\t|")
    except csv.Error:
        return False
    rows = list(csv.reader(lines[:-1] if len(lines) > 2 else lines, dialect))
    widths = {len(r) for r in rows}
    return len(widths) == 1 and widths.pop() >= 2
