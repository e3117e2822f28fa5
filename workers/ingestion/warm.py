"""Imported by the parse sandbox's forkserver only: every parser's first-use set-up (trafilatura
loads its language data and compiles its expressions on the first page: ~0.6 s) runs once
there, so no child repeats it."""

from __future__ import annotations

import tempfile
from pathlib import Path

from workers.ingestion.limits import ParseLimits
from workers.ingestion.parsers import ParseOptions
from workers.ingestion.parsers.html import parse_html

# An article page, and a page of <div>s only (which takes trafilatura's justext fallback).
_PAGES = (
    b"<html><head><title>warm</title></head><body><main><h1>Warm up</h1>"
    b"<p>A paragraph long enough to count as the main text of this small page.</p>"
    b"</main></body></html>",
    b"<html><body><div><div>Menu</div></div><div>A sentence in a div that is the text of the "
    b"page.</div><div>Another sentence in a div follows it here.</div></body></html>",
)

with tempfile.TemporaryDirectory(prefix="aifleet-warm-") as _directory:
    _page = Path(_directory) / "page.html"
    for _html in _PAGES:
        _page.write_bytes(_html)
        parse_html(_page, ParseOptions(), ParseLimits(), lambda done, total: None)
