"""The ingestion component's parse path against raw pypdf, on the same generated PDFs.

    python -m benchmarks.ingestion             # ~1 min; prints JSON, writes results/ingestion.json
    python -m benchmarks.ingestion --rounds 1  # one round

1. **Parse throughput** (pages/s) of 100-page PDFs (~1,700 characters of text per page, an
   outline entry every 10 pages), three ways, interleaved round by round:
   - `pypdf`: `PdfReader(path)` and `page.extract_text()` for every page, in process: the
     baseline a user would write;
   - `pipeline`: the component's PDF path in process (`detect_file` + `process_file`: pypdf,
     cleaning, structuring into Markdown with sections and page offsets);
   - `sandbox`: the same in the parse sandbox, as the worker runs it (a child forked from the
     forkserver, result pickled back over a pipe).
2. **Sandbox overhead** per file: a 1-page PDF and a small HTML page, in process vs in the
   sandbox, milliseconds per file (the cost of the time and memory limits).

Medians over rounds; each ratio is taken within a round against that round's pypdf figure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pypdf import PdfReader

from tests.support import documents
from workers.ingestion.limits import ParseLimits
from workers.ingestion.parsers import ParseOptions
from workers.ingestion.pipeline import detect_file, process_file
from workers.ingestion.sandbox import ParseSandbox, SandboxLimits

RESULTS = Path(__file__).resolve().parent / "results" / "ingestion.json"
PAGES = 100
FILES = 4
PARAGRAPH = (
    "The harbour office keeps a daily log of arrivals, departures and the weather at the pier. "
    "Each entry names the vessel, its cargo, the berth it was assigned and the pilot on duty. "
)


def make_pdfs(directory: Path) -> list[Path]:
    paths = []
    for n in range(FILES):
        pages = [f"Log page {p} of file {n}. " + PARAGRAPH * 9 for p in range(1, PAGES + 1)]
        outline = [(f"Week {w + 1}", w * 10 + 1, 0) for w in range(PAGES // 10)]
        path = directory / f"log-{n}.pdf"
        path.write_bytes(documents.pdf(pages, outline=outline, title=f"Log {n}"))
        paths.append(path)
    return paths


def raw_pypdf(path: Path) -> int:
    reader = PdfReader(path)
    chars = sum(len(page.extract_text()) for page in reader.pages)
    assert chars > 0
    return len(reader.pages)


def in_process(path: Path) -> int:
    doc = process_file(
        path, detect_file(path), ParseOptions(), ParseLimits(), lambda done, total: None
    )
    return doc.pages_parsed


def timed(fn: Callable[[Path], int], paths: list[Path]) -> float:
    """Pages per second of `fn` over every file."""
    started = time.perf_counter()
    pages = sum(fn(p) for p in paths)
    return pages / (time.perf_counter() - started)


async def sandboxed_rate(sandbox: ParseSandbox, paths: list[Path]) -> float:
    started = time.perf_counter()
    pages = 0
    for path in paths:
        detected = await sandbox.detect(path, file_name="", content_type="")
        pages += (await sandbox.process(path, detected, ParseOptions())).pages_parsed
    return pages / (time.perf_counter() - started)


async def per_file_ms(sandbox: ParseSandbox, path: Path, repeat: int) -> tuple[float, float]:
    """(in process, in the sandbox) milliseconds per file."""
    detected = detect_file(path)
    started = time.perf_counter()
    for _ in range(repeat):
        process_file(path, detected, ParseOptions(), ParseLimits(), lambda done, total: None)
    direct = (time.perf_counter() - started) / repeat * 1000
    started = time.perf_counter()
    for _ in range(repeat):
        await sandbox.process(path, detected, ParseOptions())
    boxed = (time.perf_counter() - started) / repeat * 1000
    return direct, boxed


async def main(rounds: int) -> dict[str, Any]:
    sandbox = ParseSandbox(SandboxLimits(), ParseLimits())
    with tempfile.TemporaryDirectory(prefix="aifleet-bench-ingest-") as tmp:
        directory = Path(tmp)
        paths = make_pdfs(directory)
        small_pdf = directory / "small.pdf"
        small_pdf.write_bytes(documents.pdf([PARAGRAPH]))
        small_html = directory / "small.html"
        small_html.write_bytes(documents.HTML_PAGE)
        # Warm: the forkserver start and first imports are not part of any figure.
        await sandbox.process(small_pdf, detect_file(small_pdf), ParseOptions())
        in_process(small_html)
        runs: list[dict[str, float]] = []
        for round_number in range(rounds):
            order = ["pypdf", "pipeline", "sandbox"]
            if round_number % 2:
                order.reverse()
            rates: dict[str, float] = {}
            for name in order:
                if name == "pypdf":
                    rates[name] = timed(raw_pypdf, paths)
                elif name == "pipeline":
                    rates[name] = timed(in_process, paths)
                else:
                    rates[name] = await sandboxed_rate(sandbox, paths)
            pdf_direct, pdf_boxed = await per_file_ms(sandbox, small_pdf, 20)
            html_direct, html_boxed = await per_file_ms(sandbox, small_html, 20)
            rates |= {
                "small_pdf_ms": pdf_direct,
                "small_pdf_sandbox_ms": pdf_boxed,
                "small_html_ms": html_direct,
                "small_html_sandbox_ms": html_boxed,
            }
            runs.append(rates)
            print(json.dumps({"round": round_number + 1, **rates}), flush=True)

    def median(key: str) -> float:
        return round(statistics.median(r[key] for r in runs), 2)

    def ratio(key: str) -> float:
        return round(statistics.median(r[key] / r["pypdf"] for r in runs), 3)

    return {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "files": FILES,
        "pages_per_file": PAGES,
        "rounds": runs,
        "pages_per_second": {k: median(k) for k in ("pypdf", "pipeline", "sandbox")},
        "ratio_to_pypdf": {k: ratio(k) for k in ("pipeline", "sandbox")},
        "per_file_ms": {
            k: median(k)
            for k in (
                "small_pdf_ms",
                "small_pdf_sandbox_ms",
                "small_html_ms",
                "small_html_sandbox_ms",
            )
        },
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    result = asyncio.run(main(args.rounds))
    print(json.dumps(result, indent=2))
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
