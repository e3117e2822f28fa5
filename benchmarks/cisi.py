"""The CISI test collection (SMART format) and the ranking measures of the RAG benchmark.

See the collection's README: `.I` starts a record, `.T` title, `.A` authors, `.W` text, `.X`
cross-references; a field runs until the next line starting with `.` and a letter.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

_FIELD = re.compile(r"^\.([A-Z])(?:\s+(\d+))?\s*$")


@dataclass(frozen=True)
class Record:
    id: str
    fields: dict[str, str]


def records(path: Path) -> list[Record]:
    out: list[Record] = []
    current: dict[str, list[str]] | None = None
    field = ""
    rid = ""
    for line in path.read_text(encoding="latin-1").splitlines():
        match = _FIELD.match(line)
        if match and match.group(1) == "I":
            if current is not None:
                out.append(Record(rid, {k: " ".join(v).strip() for k, v in current.items()}))
            rid, current, field = match.group(2) or "", {}, ""
            continue
        if match:
            field = match.group(1)
            assert current is not None
            current.setdefault(field, [])
            continue
        if current is not None and field:
            current[field].append(line.strip())
    if current is not None:
        out.append(Record(rid, {k: " ".join(v).strip() for k, v in current.items()}))
    return out


@dataclass(frozen=True)
class Collection:
    documents: dict[str, tuple[str, str]]  # id -> (title, abstract)
    queries: dict[str, str]  # judged queries only
    relevant: dict[str, set[str]]


def load(directory: Path) -> Collection:
    # Whitespace runs (a few titles hold tabs) become one space.
    documents = {
        r.id: (" ".join(r.fields.get("T", "").split()), r.fields.get("W", ""))
        for r in records(directory / "CISI.ALL")
    }
    relevant: dict[str, set[str]] = {}
    for line in (directory / "CISI.REL").read_text().splitlines():
        parts = line.split()
        if len(parts) >= 2:
            relevant.setdefault(parts[0], set()).add(parts[1])
    queries = {
        r.id: r.fields.get("W", "")
        for r in records(directory / "CISI.QRY")
        if r.id in relevant and r.fields.get("W")
    }
    return Collection(documents, queries, relevant)


def ndcg_at(ranked: Sequence[str], relevant: set[str], k: int = 10) -> float:
    """Binary-relevance nDCG@k."""
    dcg = sum(1 / math.log2(i + 2) for i, d in enumerate(ranked[:k]) if d in relevant)
    ideal = sum(1 / math.log2(i + 2) for i in range(min(k, len(relevant))))
    return dcg / ideal if ideal else 0.0


def recall_at(ranked: Sequence[str], relevant: set[str], k: int = 100) -> float:
    return len(set(ranked[:k]) & relevant) / len(relevant) if relevant else 0.0


def distinct(ids: Sequence[str]) -> list[str]:
    """Document ids in first-appearance order (a document's best chunk ranks it)."""
    seen: dict[str, None] = {}
    for d in ids:
        seen.setdefault(d, None)
    return list(seen)
