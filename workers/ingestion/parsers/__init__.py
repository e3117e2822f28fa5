"""One parser per supported type: `parse(path, options, limits, progress) -> ParsedDocument`."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ParseOptions:
    """What a caller may choose about parsing (the contract's ProcessingOptions)."""

    # Parse at most this many pages (PDF) or sheets (XLSX); 0: up to the limit.
    max_pages: int = 0
    # HTML: "main" text only, or "full" (every visible text).
    html_mode: str = "main"
    # CSV: one-character delimiter; "" detects it.
    csv_delimiter: str = ""
    # Text formats: the encoding detection settled on.
    encoding: str = "utf-8"
