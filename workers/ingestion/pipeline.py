"""The processing pipeline of a file: detect -> parse -> clean -> structure, stages keyed by type.

Each supported type has a `Pipeline` whose stages can be swapped on their own (a better PDF
parser, a cleaner for OCR text) without touching the others; `PIPELINES` holds the defaults.
Everything here is synchronous and pure (a path in, a document out): the sandbox runs it in a
child process under time and memory limits.
"""

from __future__ import annotations

import dataclasses
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from workers.ingestion import sniff
from workers.ingestion.clean import clean_document
from workers.ingestion.document import ParsedDocument, Progress, StructuredDocument
from workers.ingestion.errors import unreadable, unsupported
from workers.ingestion.limits import ParseLimits
from workers.ingestion.parsers import ParseOptions
from workers.ingestion.parsers.html import parse_html
from workers.ingestion.parsers.office import parse_docx, parse_xlsx
from workers.ingestion.parsers.pdf import parse_pdf
from workers.ingestion.parsers.text import parse_csv, parse_json, parse_markdown, parse_text
from workers.ingestion.structure import structure_document

Parser = Callable[[Path, ParseOptions, ParseLimits, Progress], ParsedDocument]
Cleaner = Callable[[ParsedDocument], ParsedDocument]
Structurer = Callable[[ParsedDocument], StructuredDocument]


@dataclass(frozen=True)
class Pipeline:
    parse: Parser
    clean: Cleaner = clean_document
    structure: Structurer = structure_document


PIPELINES: Mapping[str, Pipeline] = {
    # PDF lines end where the layout broke them: words hyphenated there are joined again, and
    # sentences wrapped there become one line again.
    "pdf": Pipeline(parse_pdf, clean=partial(clean_document, dehyphenate=True, reflow=True)),
    "docx": Pipeline(parse_docx),
    "xlsx": Pipeline(parse_xlsx),
    "html": Pipeline(parse_html),
    "markdown": Pipeline(parse_markdown),
    "text": Pipeline(parse_text),
    "csv": Pipeline(parse_csv),
    "json": Pipeline(parse_json),
}


def detect_file(path: Path, *, file_name: str = "", content_type: str = "") -> sniff.Detected:
    """The type of the file at `path`, from its bytes (zip archives are opened to tell DOCX
    from XLSX from any other zip)."""
    with path.open("rb") as source:
        head = source.read(sniff.SAMPLE_BYTES + 1)
    complete = len(head) <= sniff.SAMPLE_BYTES
    names = None
    if sniff.is_zip(head):
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except (zipfile.BadZipFile, OSError, ValueError):
            names = []
    return sniff.detect(
        head[: sniff.SAMPLE_BYTES],
        file_name=file_name,
        content_type=content_type,
        zip_names=names,
        complete=complete,
    )


def process_file(
    path: Path,
    detected: sniff.Detected,
    options: ParseOptions,
    limits: ParseLimits,
    progress: Progress,
    pipelines: Mapping[str, Pipeline] = PIPELINES,
) -> StructuredDocument:
    """Parse, clean and structure one file of a detected type; 415 for a type without a
    pipeline, 422 for a file that cannot be parsed, holds no text or too much."""
    pipeline = pipelines.get(detected.kind)
    if pipeline is None:
        raise unsupported(detected.kind, tuple(pipelines))
    if detected.encoding:
        options = dataclasses.replace(options, encoding=detected.encoding)
    document = pipeline.structure(pipeline.clean(pipeline.parse(path, options, limits, progress)))
    if document.characters > limits.max_characters:
        raise unreadable(
            "the file holds more text than can be ingested", limit=limits.max_characters
        )
    if not document.text.strip():
        raise unreadable(
            "the file holds no text (a scanned document would need OCR)", reason="no_text"
        )
    return document
