"""Parsers that misbehave, for the sandbox tests (the child imports them by name)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from workers.ingestion.document import ParsedDocument, Progress
from workers.ingestion.limits import ParseLimits
from workers.ingestion.parsers import ParseOptions


def hang(
    path: Path, options: ParseOptions, limits: ParseLimits, progress: Progress
) -> ParsedDocument:
    """Reports progress, then never returns (ignoring the signals Python could catch)."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    progress(1, 10)
    (path.parent / "hang.pid").write_text(str(os.getpid()))
    while True:
        time.sleep(0.05)


def hog_memory(
    path: Path, options: ParseOptions, limits: ParseLimits, progress: Progress
) -> ParsedDocument:
    """Tries to hold 8 GiB."""
    chunks = [bytearray(256 * 1024 * 1024) for _ in range(32)]
    return ParsedDocument([], pages=len(chunks))


def crash(
    path: Path, options: ParseOptions, limits: ParseLimits, progress: Progress
) -> ParsedDocument:
    """Dies the way a segfaulting C extension does."""
    os.kill(os.getpid(), signal.SIGSEGV)
    raise AssertionError("unreachable")


def fail(
    path: Path, options: ParseOptions, limits: ParseLimits, progress: Progress
) -> ParsedDocument:
    """Raises an exception no parser should (a bug): reported as a 422, never a traceback."""
    raise KeyError("internal detail /secret/path")
