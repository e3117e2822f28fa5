"""Answer sentences and their inline citations `[n]`.

An answer is split into sentences at `.`, `!`, `?` (and their CJK forms) followed by whitespace, and
at line breaks; markers written right after the sentence's full stop ("... fast. [2]") belong
to that sentence. A marker is `[n]`, `[n, m]` or `[n-m]` (n from 1, at most 999, a range of at
most 20), so `[2023]`, `[a]` or a Markdown link `[text](url)` are not citations.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

_MARKER = re.compile(r"\[(\d{1,3}(?:\s*(?:,|-|\u2013)\s*\d{1,3})*)\](?!\()")
_END = re.compile(r"[.!?\u3002\uff01\uff1f]+[\"')\]]*")
_TRAILING_MARKERS = re.compile(r"(?:\s*\[\d[\d\s,\-\u2013]*\](?!\())+")
MAX_RANGE = 20


@dataclass(frozen=True, slots=True)
class Sentence:
    """A sentence of the answer: `answer[start:end]`, and the markers it carries."""

    index: int
    text: str
    start: int
    end: int
    markers: list[int] = field(default_factory=list)


def markers_in(text: str) -> list[int]:
    """The citation numbers in `text`, in order of appearance, without repeats."""
    found: list[int] = []
    for match in _MARKER.finditer(text):
        for part in re.split(r"\s*,\s*", match.group(1)):
            bounds = re.split(r"\s*[-\u2013]\s*", part)
            numbers = [int(b) for b in bounds]
            if len(numbers) == 2 and 0 < numbers[1] - numbers[0] <= MAX_RANGE:
                numbers = list(range(numbers[0], numbers[1] + 1))
            elif len(numbers) == 2:
                numbers = [numbers[0], numbers[1]]
            for n in numbers:
                if n >= 1 and n not in found:
                    found.append(n)
    return found


def split_sentences(text: str) -> list[Sentence]:
    """The sentences of `text` with offsets (stripped of surrounding whitespace)."""
    spans: list[tuple[int, int]] = []
    start = 0
    position = 0
    while position < len(text):
        newline = text.find("\n", position)
        end_match = _END.search(text, position)
        if end_match is not None and (newline == -1 or end_match.start() < newline):
            cut = end_match.end()
            trailing = _TRAILING_MARKERS.match(text, cut)
            if trailing is not None:
                cut = trailing.end()
            if cut < len(text) and not text[cut].isspace():
                position = cut  # "3.5", "e.g.x": not a sentence end
                continue
            spans.append((start, cut))
            start = position = cut
        elif newline != -1:
            spans.append((start, newline))
            start = position = newline + 1
        else:
            break
    spans.append((start, len(text)))
    sentences: list[Sentence] = []
    for a, b in spans:
        piece = text[a:b]
        stripped = piece.strip()
        if not stripped:
            continue
        offset = a + (len(piece) - len(piece.lstrip()))
        sentences.append(
            Sentence(
                index=len(sentences),
                text=stripped,
                start=offset,
                end=offset + len(stripped),
                markers=markers_in(stripped),
            )
        )
    return sentences


def strip_markers(text: str) -> str:
    """The sentence without its citation markers (what is compared with the chunks)."""
    return re.sub(r"\s+", " ", _MARKER.sub("", text)).strip()


@dataclass(frozen=True, slots=True)
class Resolved:
    """A sentence's markers split into the retrieved results they point at (0-based) and the
    markers that point at nothing."""

    result_indexes: list[int]
    invalid: list[int]


def resolve(markers: Sequence[int], results: int) -> Resolved:
    valid = [m - 1 for m in markers if 1 <= m <= results]
    invalid = [m for m in markers if not 1 <= m <= results]
    return Resolved(valid, invalid)
