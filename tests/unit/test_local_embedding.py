"""The offline embedding model, run for real: all-MiniLM-L6-v2 int8 ONNX and its tokenizer."""

from __future__ import annotations

import asyncio
import base64
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime
import pytest

from workers.gateway.embedding import (
    CHUNK,
    DIMENSIONS,
    MAX_TOKENS,
    MODEL_SHA256,
    PADDING_PER_RUN,
    TOKENIZER_FILE,
    TOKENIZER_SHA256,
    TOKENS_PER_RUN,
    MiniLM,
    ModelFileMismatch,
    chunks,
    model_file,
)

PASSWORD = "How do I reset my password?"
CAFE = "Café au lait? Ça coûte 3 € 🙂"

# Reference vectors from the fp32 weights (model.safetensors of sentence-transformers'
# all-MiniLM-L6-v2), computed by a separate numpy implementation of the BERT forward pass with
# the same tokenizer, mean pooling and L2 norm; stored as float16, base64. The int8 model is
# expected within cosine 0.999 of them (measured: 0.99957 and 0.99960).
FP32_REFERENCE = {
    PASSWORD: (
        "Eh8JrJysKah4qYIspSDkI/ArVCSQqdwokirHqVaqAZs0rP0vN6V+rTUgzqbkqQCkAx6jo6yZTyatrluUaSLrJCcn"
        "1CY5pIIo1albGtMqRqLdrX6lqa0iKHUtqCbvqN0qdSr9FOku7Rh5oKqlUKyMK0gr8itmK30p8SUYmOynwC5NrAem"
        "GJ+KHYsokaalrYuqDq1Zpl8klScrIHiqLyyoL8Os8KWzo8sp5C/gK/4l2ZslIi2pUSqapoiq/KPTrluiBSq1Jy2s"
        "ginWKTaophwCre0phakkL0ItXKUWJ+8lRKo1IfYrIiQgpGal1CIzJlMnNKlyI1ggU6g7qnKjQqcAgHGs6CBUqYMh"
        "9qcXrGojPqwJqkUsuifIIUOpnq0rpPwiTKZ9IDak5SB/pHMjRi3ooTckDqq/J6ioTqiAJMehrSKGIOsj9auEHVUt"
        "FqizqW0lHKZhpeIpu6yxKm+NhCc7KzAo1SBFqUSdgZNDHH0lWBwDHJ2pp61ZrOstjiclpkIbqiUIqs4sdqksGd4q"
        "fKYwIE+n7iWlrgwqSihTKjKrZyo+lxskPq1pLUCp9CD/I+otmqIyqiSrlaSzLGiv26wAACcMeqzdJcil5CvhpgMg"
        "eyk+p9+gyyoXL9wiXaUTMBQtBamwLRSwd5f8rgUrGxpYpXopRJ34JBgtlCCcnbAsWKY6ndEwZirUoB8tQyCDqheo"
        "biHMKUydlJlcqjqgMSrTqy4kkCjPpSirPS7VqwaijyQZK9+lGiALrlmnby3voeQpVKXWHwynxabgrVQrvakmL78s"
        "VSRZLjKvbKyFKDqtsaUMLt6k1azGqq+sk61JJyEqICqQoFiqz6eRIl8M6h0AgDejUqsfLZwjly33J1yqLiRdrTyu"
        "zKkBKIAoMhqBpjiobKo/ouEmZyU+qEibt6LMrCQtBi1xnXQtOCuuoVCnGSJKH1KsLrGCp9undiABpcemNiGeKo8r"
        "4yugqpcBoSFdI64mKx9KryUuviV1LNyjHiK7KWeq9q5snQQosiycGeGs"
    ),
    CAFE: (
        "zigwpLARUSHZJGgrWSo6KaEvBqXoKD2xiJ8OqXYo17DepMYrzCxapH+msaHFp2gqCZgFpJcpx6wIHiCs3qQeLT2s"
        "sKY1KwarVCtxsYgkLS2nrTIhS6K7qawqyCywplQqaafyI6iqOiwgKyKmUCTrqoIgJSlsLXMYcCkOndip4BjiKOSh"
        "Dq0MrO2oKypRqTGtPJ+5rK0lSyW0Ifepkaz4oPMnZyn+JdItMaQxqiEk0iXfKVqiRKk0KgKwiSpBq7uoMSg4oF+o"
        "CyquppktlCJDKNOp86lTIVUhWyy/ojSqX6mwrkOvLqknKDIuJ7ErKHej7CnCoEOmTqjTqKStdiwAAGKqVihsFpmo"
        "+iumqI2g8Rx2oqGjYyt4IhchJyn4ogsnGy46qBcpJae+oj8gci26LBopCqseIAcgCJ0dJcIqNZzQH/AlM62VqYgk"
        "NZb3omguZSRMo0Irg6dNm2kq7KosqFUoa6HjqIcoirB8LpEqi6jtrn0lPSauqBYrTR2WiSEYIKdWpCekSyCDLF+s"
        "36ihIQUwHhuDpWYrkKpHLZWaCSbPpZ4hritLIwcla6HPIRcoqKPAJLmtsSZULw6lkKsAgLglA6VQrB8rTqrTKcCq"
        "BxjfjRgmqaqepaItz6VRpYUtTi3PqY2E+iPwo1AcbBM5KT2sNizHLnwlQK9Ll++qmCHeIT8tCZ/tInglxiy7qu8u"
        "gqF3qjqsJiQHLZms3qaFri8qHygJMDypx6VnqXqpfCppJHmjpphvGcMuTS8+HLMgRi2+qWGtIiEdLm6Q8yPoFxwr"
        "oSmKrqwgECsMKtYsoCnbrGelkiw4oQGhb6o9oG6nlinlpM+sDSSYJIMV6ykAgPIkTqzCrPQtdiVYrzSgvKfhptQr"
        "PqorqdikIia+n8ckACOIKlanXKsAJ0Wg2SOxqMmiDiFyo8kq/KwjrbamAyn+p7KjrJ+pqsIbcyVkrM0ruKQKrnKq"
        "F6iuIZUiXymHkHMmbZmzpzcniio2K+ahcymVpsAk3qkDpreUa6WOog+r"
    ),
}
# (text, text, cosine of their fp32 reference vectors): near paraphrases, then unrelated pairs.
FP32_PAIRS = [
    (PASSWORD, "I forgot my password, how can I change it?", 0.8939),
    ("A man is playing a guitar.", "Someone plays an acoustic guitar on stage.", 0.6399),
    ("The cat sits on the mat.", "A kitten is resting on a rug.", 0.6411),
    (PASSWORD, "The weather is sunny in Lisbon today", -0.0311),
    ("Stock markets fell sharply after the announcement.", "A man is playing a guitar.", -0.0885),
    ("The cat sits on the mat.", "Quarterly revenue grew by twelve percent.", -0.0162),
]

MIXED = [
    "ok",
    "The invoice for March was sent twice to the same customer by mistake.",
    "",
    "Why does the worker restart every night at 02:00 UTC?",
    "Kubernetes " * 40,
    "日本語のテキストも埋め込めます。",
    "short one",
]


@pytest.fixture(scope="module")
def model() -> MiniLM:
    """One model for the module: loading verifies 23 MB and builds the session (~0.3 s)."""
    return MiniLM.load(threads=2)


def cosine(a: np.ndarray[Any, Any], b: np.ndarray[Any, Any]) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_vectors_are_384_float32_unit_rows(model: MiniLM) -> None:
    """Each text gives one float32 row of 384 with L2 norm 1."""
    vectors = model.embed(MIXED)
    assert vectors.shape == (len(MIXED), DIMENSIONS)
    assert vectors.dtype == np.float32
    assert np.all(np.isfinite(vectors))
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_same_text_gives_the_same_vector_every_call(model: MiniLM) -> None:
    """Embedding is deterministic across calls."""
    np.testing.assert_array_equal(model.embed(MIXED), model.embed(MIXED))


def test_batch_equals_one_by_one_across_chunks(model: MiniLM) -> None:
    """A batch larger than a chunk, of mixed lengths, matches texts embedded alone."""
    texts = [f"{i}: " + MIXED[i % len(MIXED)] + " more" * (i % 13) for i in range(150)]
    batch = model.embed(texts)
    alone = np.stack([model.embed([text])[0] for text in texts])
    np.testing.assert_allclose(batch, alone, atol=1e-5)


def test_runs_respect_the_row_and_token_limits() -> None:
    """Short rows go 64 to a run, 256-token rows 8 to a run; every row lands exactly once."""
    lengths = [12] * 100 + [MAX_TOKENS] * 20
    runs = chunks(sorted(range(len(lengths)), key=lengths.__getitem__), lengths)
    assert [len(run) for run in runs] == [CHUNK, 36, 8, 8, 4]
    assert sorted(i for run in runs for i in run) == list(range(len(lengths)))
    assert all(len(run) * max(lengths[i] for i in run) <= TOKENS_PER_RUN for run in runs)


def test_runs_hold_rows_of_similar_lengths() -> None:
    """A row joins a run only while the padding it puts into the run stays within the limit."""
    lengths = [10, 12, 40, 41, 200, 60]
    runs = chunks(sorted(range(len(lengths)), key=lengths.__getitem__), lengths)
    assert runs == [[0, 1], [2, 3], [5], [4]]


def test_no_run_holds_more_padding_than_the_limit() -> None:
    """Over mixed lengths every row lands once, in ascending runs padded within the limit."""
    rng = random.Random(7)
    lengths = [rng.randint(3, MAX_TOKENS) for _ in range(500)] + [30] * 100
    runs = chunks(sorted(range(len(lengths)), key=lengths.__getitem__), lengths)
    assert sorted(i for run in runs for i in run) == list(range(len(lengths)))
    for run in runs:
        widths = [lengths[i] for i in run]
        assert widths == sorted(widths)
        assert len(run) * widths[-1] - sum(widths) <= PADDING_PER_RUN
        assert len(run) <= CHUNK
        assert len(run) * widths[-1] <= TOKENS_PER_RUN
    assert max(len(run) for run in runs) == CHUNK  # equal lengths still fill a run


def test_long_texts_in_one_call_match_texts_embedded_alone(model: MiniLM) -> None:
    """Twenty truncated texts, split into several runs, give their one-by-one vectors."""
    texts = [
        f"document {i}: " + "the quarterly report lists every open invoice " * 40 for i in range(20)
    ]
    batch = model.embed(texts)
    np.testing.assert_allclose(batch[::7], model.embed(texts[::7]), atol=1e-5)
    np.testing.assert_allclose(batch[5], model.embed([texts[5]])[0], atol=1e-5)


def test_rows_follow_the_order_of_the_texts(model: MiniLM) -> None:
    """Sorting by length inside a call is undone: reversed input gives reversed rows."""
    forward = model.embed(MIXED)
    backward = model.embed(MIXED[::-1])
    np.testing.assert_allclose(backward[::-1], forward, atol=1e-5)
    assert cosine(forward[1], model.embed([MIXED[1]])[0]) > 0.99999


def test_paraphrases_score_higher_than_unrelated_sentences(model: MiniLM) -> None:
    """Every paraphrase pair is closer than every unrelated pair, by a clear margin."""
    related = [model.embed([a, b]) for a, b, ref in FP32_PAIRS if ref > 0.5]
    unrelated = [model.embed([a, b]) for a, b, ref in FP32_PAIRS if ref < 0.5]
    lowest_related = min(float(v[0] @ v[1]) for v in related)
    highest_unrelated = max(float(v[0] @ v[1]) for v in unrelated)
    assert lowest_related > 0.5
    assert highest_unrelated < 0.2


@pytest.mark.parametrize(("first", "second", "reference"), FP32_PAIRS)
def test_pair_cosines_match_the_fp32_model(
    model: MiniLM, first: str, second: str, reference: float
) -> None:
    """The int8 model's cosine of a fixed pair is within 0.01 of the fp32 model's."""
    a, b = model.embed([first, second])
    assert float(a @ b) == pytest.approx(reference, abs=0.01)


@pytest.mark.parametrize("text", list(FP32_REFERENCE))
def test_vector_matches_the_fp32_reference(model: MiniLM, text: str) -> None:
    """The vector is the fp32 model's vector up to int8 quantisation (cosine > 0.999)."""
    reference = np.frombuffer(base64.b64decode(FP32_REFERENCE[text]), dtype=np.float16)
    assert reference.shape == (DIMENSIONS,)
    assert cosine(model.embed([text])[0], reference.astype(np.float32)) > 0.999


def test_long_text_is_truncated_to_max_tokens(model: MiniLM) -> None:
    """A 5,000-word text embeds and counts MAX_TOKENS; words past the limit change nothing."""
    words = [f"topic{i % 97}" if i % 5 else "meeting" for i in range(5_000)]
    long_text = " ".join(words)
    assert model.count_tokens([long_text]) == [MAX_TOKENS]
    vector = model.embed([long_text])[0]
    np.testing.assert_allclose(np.linalg.norm(vector), 1.0, atol=1e-5)
    tail_changed = " ".join([*words[:-1], "unrelated"])
    np.testing.assert_allclose(model.embed([tail_changed])[0], vector, atol=1e-6)


def test_count_tokens_includes_cls_and_sep(model: MiniLM) -> None:
    """Counts are the pieces fed to the model: [CLS] em ##bed ##ding ##s [SEP] is six."""
    assert model.count_tokens([PASSWORD, "", "embeddings"]) == [9, 2, 6]


def test_empty_string_gives_a_valid_vector(model: MiniLM) -> None:
    """An empty text is [CLS][SEP] and still yields a finite unit vector."""
    (vector,) = model.embed([""])
    assert np.all(np.isfinite(vector))
    assert np.linalg.norm(vector) == pytest.approx(1.0, abs=1e-5)


def test_non_ascii_and_emoji_text_embeds(model: MiniLM) -> None:
    """Accents are folded like the uncased model expects, emoji become [UNK], no error."""
    cafe, plain, emoji = model.embed([CAFE, "cafe au lait? ca coute 3 €", "🙂🚀🔥"])
    assert cosine(cafe, plain) > 0.95
    assert np.all(np.isfinite(emoji))
    assert model.count_tokens(["🙂"]) == [3]


def test_no_texts_gives_an_empty_matrix(model: MiniLM) -> None:
    """An empty batch is a (0, 384) array and no counts, not an error."""
    assert model.embed([]).shape == (0, DIMENSIONS)
    assert model.count_tokens([]) == []


def test_a_single_string_is_refused(model: MiniLM) -> None:
    """A bare string would be embedded character by character; it is rejected instead."""
    with pytest.raises(TypeError, match="sequence of texts"):
        model.embed(PASSWORD)


async def test_concurrent_calls_from_threads_agree(model: MiniLM) -> None:
    """embed run in several threads at once (asyncio.to_thread) gives the serial results."""
    batches = [MIXED[i:] + MIXED[:i] for i in range(len(MIXED))]
    expected = [model.embed(batch) for batch in batches]
    results = await asyncio.gather(*(asyncio.to_thread(model.embed, b) for b in batches * 3))
    for got, want in zip(results, expected * 3, strict=True):
        np.testing.assert_allclose(got, want, atol=1e-5)


def test_expected_digests_are_those_of_the_installed_files() -> None:
    """The pinned digests are the shipped tokenizer's and the packaged model's."""
    import hashlib

    assert hashlib.sha256(TOKENIZER_FILE.read_bytes()).hexdigest() == TOKENIZER_SHA256
    assert hashlib.sha256(model_file().read_bytes()).hexdigest() == MODEL_SHA256


def flip_a_byte(source: Path, target: Path) -> Path:
    shutil.copyfile(source, target)
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x01
    target.write_bytes(bytes(data))
    return target


def no_session_built(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Records every InferenceSession construction (there must be none)."""
    built: list[object] = []

    def record(*args: object, **kwargs: object) -> None:
        built.append(args)
        raise AssertionError("a session was built from an unverified file")

    monkeypatch.setattr(onnxruntime, "InferenceSession", record)
    return built


def test_tampered_model_is_refused_before_a_session_exists(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One flipped byte in model.onnx raises ModelFileMismatch naming the file and digests."""
    tampered = flip_a_byte(model_file(), tmp_path / "model.onnx")
    built = no_session_built(monkeypatch)
    with pytest.raises(ModelFileMismatch) as caught:
        MiniLM.load(model_path=tampered)
    assert caught.value.path == str(tampered)
    assert caught.value.expected == MODEL_SHA256
    assert caught.value.actual not in (MODEL_SHA256, "")
    assert str(tampered) in str(caught.value)
    assert MODEL_SHA256 in str(caught.value)
    assert caught.value.actual in str(caught.value)
    assert built == []


def test_tampered_tokenizer_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A changed tokenizer.json is refused the same way, before the model is read."""
    tampered = flip_a_byte(TOKENIZER_FILE, tmp_path / "tokenizer.json")
    built = no_session_built(monkeypatch)
    with pytest.raises(ModelFileMismatch, match=r"tokenizer\.json") as caught:
        MiniLM.load(tokenizer_path=tampered)
    assert caught.value.expected == TOKENIZER_SHA256
    assert built == []


def test_untampered_copies_load_from_explicit_paths(tmp_path: Path) -> None:
    """Explicit paths to intact copies load and give the packaged model's vectors."""
    model_copy = tmp_path / "model.onnx"
    tokenizer_copy = tmp_path / "tokenizer.json"
    shutil.copyfile(model_file(), model_copy)
    shutil.copyfile(TOKENIZER_FILE, tokenizer_copy)
    copy = MiniLM.load(threads=1, model_path=model_copy, tokenizer_path=tokenizer_copy)
    packaged = MiniLM.load(threads=1)
    np.testing.assert_allclose(copy.embed(MIXED), packaged.embed(MIXED), atol=1e-5)
