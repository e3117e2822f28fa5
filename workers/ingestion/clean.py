"""Cleaning extracted text: one normal form of whitespace and characters, lines kept.

Line breaks and paragraph breaks carry structure (a chunker starts chunks at them, a table row
is a line), so they survive: `\\r\\n` and `\\r` become `\\n`, runs of blank lines become one blank
line, and only spaces within a line are collapsed. Control characters other than newline and
tab go, as do zero-width characters and soft hyphens; non-breaking and other Unicode spaces
become plain spaces; compatibility ligatures (ﬁ, ﬂ from PDFs) are spelled out. Text is NFC.
"""

from __future__ import annotations

import re
import unicodedata

from workers.ingestion.document import Block, ParsedDocument

_NEWLINES = re.compile(r"\r\n?|[\u2028\u2029\x0b\x0c\x85]")
# C0/C1 controls except \t and \n; zero-width characters, soft hyphen, BOM, bidi controls.
_DROP = re.compile(
    r"[\x00-\x08\x0e-\x1f\x7f-\x84\x86-\x9f\u00ad\u200b-\u200d\u2060\ufeff\u202a-\u202e\u2066-\u2069]"
)
_SPACES = re.compile(r"[ \t\u00a0\u1680\u2000-\u200a\u202f\u205f\u3000]+")
_TRAILING = re.compile(r" +\n|\n +")
_BLANK_LINES = re.compile(r"\n{3,}")
_HYPHENATED = re.compile(r"(\w)-\n(\w+) ?")
# A line break inside a sentence: after a word or a comma, before a lowercase word.
_SOFT_BREAK = re.compile(r"(?<=[\w,;])\n(?=[a-z])")
_LIGATURES = str.maketrans(
    {
        "\ufb00": "ff",
        "\ufb01": "fi",
        "\ufb02": "fl",
        "\ufb03": "ffi",
        "\ufb04": "ffl",
        "\ufb05": "st",
        "\ufb06": "st",
    }
)


def clean_text(text: str, *, dehyphenate: bool = False, reflow: bool = False) -> str:
    """`text` in the normal form above. `dehyphenate` joins words a PDF broke at a line end
    ("infor-\\nmation" -> "information\\n"), keeping the line break after the word.
    `reflow` joins lines a PDF's layout wrapped mid-sentence ("seventeen passing\\nships" ->
    "seventeen passing ships"): a sentence then stays one line for the chunker, the answer's
    sentence splitter and a reader, while breaks after a full stop or colon, before a
    capital, a digit or a bullet, and blank lines stay."""
    text = _NEWLINES.sub("\n", text)
    text = _DROP.sub("", text)
    text = unicodedata.normalize("NFC", text.translate(_LIGATURES))
    text = _SPACES.sub(" ", text)
    text = _TRAILING.sub("\n", text)
    if dehyphenate:
        text = _dehyphenate(text)
    if reflow:
        text = _SOFT_BREAK.sub(" ", text)
    text = _BLANK_LINES.sub("\n\n", text)
    return text.strip("\n ")


def _dehyphenate(text: str) -> str:
    # "infor-\nmation rest" -> "information\nrest": the rest of the word moves up a line.
    return _HYPHENATED.sub(lambda m: m.group(1) + m.group(2) + "\n", text)


def clean_cell(text: str) -> str:
    """A table cell on one line: newlines and runs of whitespace become single spaces."""
    return _SPACES.sub(" ", _DROP.sub("", _NEWLINES.sub("\n", text)).replace("\n", " ")).strip()


def clean_document(
    doc: ParsedDocument, *, dehyphenate: bool = False, reflow: bool = False
) -> ParsedDocument:
    """Every block cleaned; blocks left empty are dropped."""
    blocks: list[Block] = []
    for block in doc.blocks:
        if block.kind == "table":
            rows = [[clean_cell(c) for c in row] for row in block.rows]
            rows = [r for r in rows if any(r)]
            if rows:
                blocks.append(Block("table", rows=rows, page=block.page))
            continue
        if block.kind == "code":
            text = _DROP.sub("", _NEWLINES.sub("\n", block.text)).strip("\n")
        elif block.kind == "heading":
            text = clean_cell(block.text)
        else:
            text = clean_text(block.text, dehyphenate=dehyphenate, reflow=reflow)
        if text:
            blocks.append(Block(block.kind, text=text, level=block.level, page=block.page))
    doc.blocks = blocks
    doc.title = clean_cell(doc.title)
    return doc
