"""Chunking: structure-aware pieces within the character size and the model's token limit,
each pointing at its exact place in the document."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from workers.rag.chunking import Chunker, default_overlap, load_tokenizer

TOKENIZER = (
    Path(__file__).resolve().parents[2] / "workers/gateway/models/all-minilm-l6-v2/tokenizer.json"
)


@pytest.fixture(scope="module")
def chunker() -> Chunker:
    return Chunker(load_tokenizer(TOKENIZER), max_tokens=256)


def test_tokenizer_counts_past_its_default_truncation(chunker: Chunker) -> None:
    """The MiniLM tokenizer.json truncates at 128; loaded here it counts every token."""
    assert chunker.count(["word " * 500]) == [500]


def test_chunks_are_exact_slices_within_size_and_token_limits(chunker: Chunker) -> None:
    """Every chunk is content[start:end], at most chunk_size characters and 254 tokens."""
    content = "# Intro\n\n" + "Ünïcode sentences about NATS streams. " * 200 + "\n\n## End\n\nBye."
    chunks = chunker.split(content, chunk_size=1000, chunk_overlap=200)
    assert len(chunks) > 5
    for i, c in enumerate(chunks):
        assert c.ordinal == i
        assert content[c.start : c.end] == c.text
        assert len(c.text) <= 1000
        assert c.tokens <= 254
        assert chunker.count([c.text])[0] == c.tokens


def test_a_heading_starts_a_chunk(chunker: Chunker) -> None:
    """Two sections that do not fit one chunk are split at the heading, not mid-section."""
    one = "## One\n\n" + "First section text goes on. " * 20
    two = "## Two\n\n" + "Second section text goes on. " * 20
    content = one + "\n\n" + two
    chunks = chunker.split(content, chunk_size=1000, chunk_overlap=0)
    assert [c.text[:6] for c in chunks] == ["## One", "## Two"]


def test_dense_text_is_cut_by_tokens_not_characters(chunker: Chunker) -> None:
    """Text with many tokens per character (digits, symbols) still fits the model."""
    content = " ".join(f"x{i}=\u03b1{i * 7}\u03b2" for i in range(2000))
    chunks = chunker.split(content, chunk_size=2000, chunk_overlap=0)
    assert all(c.tokens <= 254 for c in chunks)
    assert all(content[c.start : c.end] == c.text for c in chunks)


def test_an_unbroken_run_is_still_split(chunker: Chunker) -> None:
    """A string with no separator at all is cut at token boundaries."""
    content = "a" * 5000
    chunks = chunker.split(content, chunk_size=2000, chunk_overlap=0)
    assert len(chunks) >= 3
    assert all(c.tokens <= 254 for c in chunks)
    assert "".join(c.text for c in chunks) == content


def test_overlap_repeats_text_between_neighbours(chunker: Chunker) -> None:
    """With overlap, consecutive chunks share text; without, they do not."""
    content = " ".join(f"Sentence number {i} is here." for i in range(100))
    with_overlap = chunker.split(content, chunk_size=300, chunk_overlap=100)
    assert any(b.start < a.end for a, b in itertools.pairwise(with_overlap))
    without = chunker.split(content, chunk_size=300, chunk_overlap=0)
    assert all(b.start >= a.end for a, b in itertools.pairwise(without))
    assert chunker.split("   \n ", chunk_size=300, chunk_overlap=0) == []
    assert default_overlap(1000) == 200
    assert default_overlap(100) == 20


def test_sizes_outside_the_documented_ranges_are_refused(chunker: Chunker) -> None:
    """chunk_size 50..2000, overlap up to half of it."""
    with pytest.raises(ValueError, match="chunk_size"):
        chunker.split("x", chunk_size=10, chunk_overlap=0)
    with pytest.raises(ValueError, match="overlap"):
        chunker.split("x", chunk_size=100, chunk_overlap=60)
