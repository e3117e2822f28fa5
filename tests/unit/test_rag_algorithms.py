"""The RAG component's pure parts: fusion, filters, citations, grounding, MMR, answers."""

from __future__ import annotations

import numpy as np
import pytest

from schemas.errors import BadRequest
from workers.rag import answers, citations, grounding
from workers.rag.filters import compile_filters
from workers.rag.fusion import reciprocal_rank_fusion
from workers.rag.rerank import Candidate, MmrReranker


def test_rrf_scores_by_rank_and_rewards_agreement() -> None:
    """An item both legs rank highly beats one that a single leg ranks first."""
    fused = reciprocal_rank_fusion({"vector": ["a", "b", "c"], "keyword": ["b", "d", "a"]})
    assert [f.key for f in fused] == ["b", "a", "d", "c"]
    assert fused[0].score == pytest.approx(1 / 62 + 1 / 61)
    assert fused[0].ranks == {"vector": 2, "keyword": 1}
    assert fused[-1].ranks == {"vector": 3}


def test_rrf_breaks_ties_deterministically_and_refuses_duplicates() -> None:
    """Equal scores order by best rank then leg order; a repeated item in one leg is a bug."""
    fused = reciprocal_rank_fusion({"x": ["a"], "y": ["b"]})
    assert [f.key for f in fused] == ["a", "b"]
    with pytest.raises(ValueError, match="twice"):
        reciprocal_rank_fusion({"x": ["a", "a"]})


def test_filters_compile_to_bound_parameters() -> None:
    """Keys and values are parameters; the SQL holds only operators and placeholders."""
    out = compile_filters(
        {"lang": "en", "year": {"$gte": 2000, "$lt": 2010}, "tag": {"$in": ["a", "b"]}},
        column="c.metadata",
        first_param=8,
    )
    assert "en" not in out.sql
    assert "2000" not in out.sql
    assert out.params[0] == '{"lang": "en"}'
    assert "$8" in out.sql
    assert f"${8 + len(out.params) - 1}" in out.sql
    assert compile_filters({}, column="m", first_param=1).sql == "TRUE"


@pytest.mark.parametrize(
    ("filters", "field"),
    [
        ({"k": {"$regex": "x"}}, "metadata_filters.k.$regex"),
        ({"k": {"$in": []}}, "metadata_filters.k.$in"),
        ({"k": {"$in": "x"}}, "metadata_filters.k.$in"),
        ({"k": {"$gt": [1]}}, "metadata_filters.k.$gt"),
        ({"k": {"$gt": True}}, "metadata_filters.k.$gt"),
        ({"k": {"a": 1}}, "metadata_filters.k.a"),
        ({"k": {}}, "metadata_filters.k"),
        ({"k": [1, 2]}, "metadata_filters.k"),
        ({"bad key!": 1}, "metadata_filters.bad key!"),
        ({"k": {"$eq": {"x": 1}}}, "metadata_filters.k.$eq"),
    ],
)
def test_filters_refuse_what_they_do_not_support(filters: dict[str, object], field: str) -> None:
    """Unknown operators and malformed operands are a 400 naming the filter."""
    with pytest.raises(BadRequest) as err:
        compile_filters(filters, column="m", first_param=1)
    assert err.value.details["field"] == field


def test_sentences_keep_their_markers_and_offsets() -> None:
    """Markers after a full stop belong to that sentence; offsets index the answer."""
    answer = "NATS is fast [1]. It stores streams. [2][3]\nValues like 3.5 stay whole [1, 4-5]."
    found = citations.split_sentences(answer)
    assert [s.text for s in found] == [
        "NATS is fast [1].",
        "It stores streams. [2][3]",
        "Values like 3.5 stay whole [1, 4-5].",
    ]
    assert [s.markers for s in found] == [[1], [2, 3], [1, 4, 5]]
    assert all(answer[s.start : s.end] == s.text for s in found)


def test_markers_ignore_years_and_links() -> None:
    """`[2023]`-like numbers over 999 and Markdown links are not citations."""
    assert citations.markers_in("see [2023] and [docs](http://x) and [2]") == [2]
    assert citations.resolve([1, 2, 9], results=2) == citations.Resolved([0, 1], [9])
    assert citations.strip_markers("Fast [1][2] and safe [3].") == "Fast and safe ."


def _unit(v: list[float]) -> np.ndarray:
    a = np.asarray(v, dtype=np.float32)
    return a / np.linalg.norm(a)


def test_grounding_compares_a_sentence_with_what_it_cites() -> None:
    """Support comes from the cited chunk's vectors; an uncited sentence is never grounded."""
    evidence = [
        grounding.Evidence(np.stack([_unit([1, 0, 0]), _unit([1, 1, 0])])),
        grounding.Evidence(np.stack([_unit([0, 0, 1])])),
    ]
    close = grounding.judge(_unit([1, 0.1, 0]), [0], evidence, threshold=0.8)
    assert close.grounded
    assert close.best_result == 0
    assert close.support > 0.99
    wrong = grounding.judge(_unit([1, 0.1, 0]), [1], evidence, threshold=0.8)
    assert not wrong.grounded
    assert wrong.support < 0.2
    uncited = grounding.judge(_unit([0, 0, 1]), [], evidence, threshold=0.8)
    assert not uncited.grounded
    assert uncited.best_result == 1
    assert grounding.groundedness([close, wrong, uncited]) == pytest.approx(1 / 3)
    assert grounding.groundedness([]) == 0.0


def test_mmr_prefers_a_new_aspect_over_a_near_duplicate() -> None:
    """With two near-identical top candidates, MMR takes the second aspect before the copy."""
    q = _unit([1, 1, 0])
    cands = [
        Candidate("a", _unit([1, 0.9, 0]), 1.0),
        Candidate("a copy", _unit([1, 0.91, 0]), 0.9),
        Candidate("b", _unit([0.6, 1, 0.3]), 0.8),
    ]
    first, second = MmrReranker(0.5).rerank("q", q, cands, 2)
    assert first in (0, 1)
    assert second == 2
    assert MmrReranker(1.0).rerank("q", q, cands, 3)[0] in (0, 1)
    assert MmrReranker().rerank("q", q, [], 3) == []


def test_extractive_answer_quotes_the_best_sentences_with_their_markers() -> None:
    """The sentences most similar to the query, at most two per chunk, each cited."""
    passages = [
        answers.Passage(
            "t1", "JetStream persists messages on disk. Unrelated filler sentence here."
        ),
        answers.Passage("t2", "Consumers acknowledge each message explicitly"),
    ]
    cands = answers.candidate_sentences(passages)
    vectors = np.stack([_unit([1, 0]), _unit([0, 1]), _unit([0.9, 0.3])])
    text = answers.extractive_answer(cands, vectors, _unit([1, 0.1]), max_sentences=2)
    assert text == (
        "JetStream persists messages on disk. [1]"
        " Consumers acknowledge each message explicitly. [2]"
    )
    cited = citations.split_sentences(text)
    assert [s.markers for s in cited] == [[1], [2]]


def test_generation_prompt_numbers_passages_and_asks_for_citations() -> None:
    """Passages are numbered [1]..[n] in the order given; the system prompt asks for [n]."""
    messages = answers.generation_messages(
        "why?", [answers.Passage("T", "x"), answers.Passage("", "y")]
    )
    assert "[n]" in messages[0]["content"]
    assert messages[1]["content"].endswith("Question: why?")
    assert "[1] T\nx" in messages[1]["content"]
    assert "[2] y" in messages[1]["content"]
    assert (
        answers.cleaned_rewrite('\n "jetstream retention"\nmore', limit=100)
        == "jetstream retention"
    )
