"""Text formats: Markdown, plain text, CSV and JSON.

Markdown keeps its own structure (ATX headings become heading blocks, fenced code stays code,
the rest is paragraphs split at blank lines). Plain text is paragraphs. CSV is one table with
its first row as header. JSON is a table when it is a list of flat objects, otherwise one
`path: value` line per scalar, so every value is searchable next to the key that names it.
"""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path
from typing import Any

from workers.ingestion.document import Block, ParsedDocument, Progress
from workers.ingestion.errors import unreadable
from workers.ingestion.limits import ParseLimits
from workers.ingestion.parsers import ParseOptions

_ATX = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t#]*$")
_FENCE = re.compile(r"^(```+|~~~+)")
_MAX_JSON_DEPTH = 64
_MAX_JSON_COLUMNS = 50


def read_text(path: Path, options: ParseOptions) -> str:
    return path.read_bytes().decode(options.encoding or "utf-8", errors="replace")


def parse_markdown(
    path: Path, options: ParseOptions, limits: ParseLimits, progress: Progress
) -> ParsedDocument:
    progress(0, 1)
    blocks: list[Block] = []
    paragraph: list[str] = []
    fence = ""
    code: list[str] = []

    def flush() -> None:
        if paragraph:
            blocks.append(Block("paragraph", text="\n".join(paragraph)))
            paragraph.clear()

    for line in read_text(path, options).splitlines():
        if fence:
            if line.startswith(fence):
                blocks.append(Block("code", text="\n".join(code)))
                fence, code = "", []
            else:
                code.append(line)
            continue
        opening = _FENCE.match(line)
        heading = _ATX.match(line)
        if opening:
            flush()
            fence = opening.group(1)
        elif heading:
            flush()
            blocks.append(Block("heading", text=heading.group(2), level=len(heading.group(1))))
        elif not line.strip():
            flush()
        else:
            paragraph.append(line)
    flush()
    if fence:  # an unclosed fence runs to the end, as CommonMark says
        blocks.append(Block("code", text="\n".join(code)))
    progress(1, 1)
    return ParsedDocument(blocks)


def parse_text(
    path: Path, options: ParseOptions, limits: ParseLimits, progress: Progress
) -> ParsedDocument:
    progress(0, 1)
    paragraphs = re.split(r"\n[ \t]*\n", read_text(path, options))
    progress(1, 1)
    return ParsedDocument([Block("paragraph", text=p) for p in paragraphs if p.strip()])


def parse_csv(
    path: Path, options: ParseOptions, limits: ParseLimits, progress: Progress
) -> ParsedDocument:
    progress(0, 1)
    text = read_text(path, options)
    delimiter = options.csv_delimiter or _delimiter(text[: 64 * 1024])
    rows: list[list[str]] = []
    try:
        for row in csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=False):
            if len(rows) >= limits.max_rows:
                raise unreadable("the CSV has too many rows", limit=limits.max_rows)
            rows.append(row)
    except csv.Error as exc:
        raise unreadable(f"not a readable CSV ({exc})") from None
    progress(1, 1)
    rows = [r for r in rows if any(c.strip() for c in r)]
    return ParsedDocument([Block("table", rows=rows)] if rows else [])


def _delimiter(sample: str) -> str:
    try:
        return csv.Sniffer().sniff(sample, delimiters=",;\t|").delimiter
    except csv.Error:
        return ","


def parse_json(
    path: Path, options: ParseOptions, limits: ParseLimits, progress: Progress
) -> ParsedDocument:
    progress(0, 1)
    try:
        data = json.loads(read_text(path, options))
    except RecursionError:
        raise unreadable("the JSON is nested too deeply") from None
    except ValueError as exc:
        raise unreadable(f"not valid JSON ({str(exc)[:200]})") from None
    table = _as_table(data)
    if table is not None:
        blocks = [Block("table", rows=table)]
    else:
        lines: list[str] = []
        _flatten(data, "", lines, 0)
        blocks = [Block("code", text="\n".join(lines))] if lines else []
    progress(1, 1)
    return ParsedDocument(blocks)


def _scalar(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _as_table(data: Any) -> list[list[str]] | None:
    """A list of objects whose values are all scalars, as rows under the union of keys."""
    if not isinstance(data, list) or not data or not all(isinstance(d, dict) for d in data):
        return None
    columns: dict[str, None] = {}
    for item in data:
        for key, value in item.items():
            if isinstance(value, dict | list):
                return None
            columns.setdefault(str(key))
    if len(columns) > _MAX_JSON_COLUMNS:
        return None
    header = list(columns)
    return [header] + [[_scalar(item.get(k, "")) for k in header] for item in data]


def _flatten(value: Any, path: str, out: list[str], depth: int) -> None:
    if depth > _MAX_JSON_DEPTH:
        raise unreadable("the JSON is nested too deeply", limit=_MAX_JSON_DEPTH)
    if isinstance(value, dict):
        for key, item in value.items():
            _flatten(item, f"{path}.{key}" if path else str(key), out, depth + 1)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _flatten(item, f"{path}[{index}]", out, depth + 1)
    else:
        out.append(f"{path or '$'}: {_scalar(value)}")
