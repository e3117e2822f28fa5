"""Client-supplied file names: shown, stored and passed to RAG, never used as a path.

Objects are named by the component (`uploads/<uuid>`), and the parser reads a temporary copy
whose name the component chose. What the client called the file is kept for display only:
its last path segment (`../../etc/passwd` is `passwd`, `C:\\\\x\\\\report.pdf` is `report.pdf`),
without control characters, at most 255 characters.
"""

from __future__ import annotations

import re
import unicodedata

from schemas.errors import BadRequest

MAX_FILE_NAME_CHARS = 255
_SEPARATORS = re.compile(r"[/\\\\]")


def display_name(raw: str, field: str = "file_name") -> str:
    """The name to show for a client's file name; 400 when nothing printable is left."""
    if len(raw) > 4 * MAX_FILE_NAME_CHARS:
        raise BadRequest(f"{field} is too long", details={"field": field})
    name = _SEPARATORS.split(raw)[-1]
    name = "".join(c for c in name if unicodedata.category(c)[0] != "C").strip()
    if name in ("", ".", ".."):
        raise BadRequest(f"{field} names no file", details={"field": field})
    if len(name) > MAX_FILE_NAME_CHARS:
        stem, dot, extension = name.rpartition(".")
        keep = MAX_FILE_NAME_CHARS - len(extension) - 1 if dot and len(extension) < 16 else 0
        name = stem[:keep] + "." + extension if keep > 0 else name[:MAX_FILE_NAME_CHARS]
    return name
