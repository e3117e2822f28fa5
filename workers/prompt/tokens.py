"""Token counts for a model: exact for OpenAI models, a documented approximation elsewhere.

Exact counts use OpenAI's own BPE encodings, `o200k_base` (gpt-4o, gpt-4.1, gpt-4.5, gpt-5,
o1/o3/o4, gpt-oss) and `cl100k_base` (gpt-4, gpt-3.5-turbo, the text-embedding-3 and ada-002
models), through `bpe-openai`: a Rust BPE (GitHub's `bpe-openai` crate) whose wheel carries
both encodings, so nothing is downloaded at run time (tiktoken itself fetches its rank files
from the internet on first use). The counts are tiktoken's: tests/unit/test_prompt_tokens.py
compares them token for token with tiktoken built from the same rank files, after checking
those files' SHA-256 against the hashes tiktoken pins.

Every other model (Claude, Llama, Mistral, Gemini, legacy GPT-3 models...) is counted
approximately: the o200k_base count times `approx_factor` (default 1.3), rounded up. Measured
here, Llama 3 and Qwen 3 tokenizers give 0.77-1.28 times the o200k_base count on English prose,
Python, German and Chinese; 32k-vocabulary tokenizers give more on non-English text. The factor
leans towards over-counting; it is an estimate, not a bound, and responses say so (`exact`).

Chat messages are counted as OpenAI documents it for its chat models: 3 tokens per message,
plus the tokens of the role, the content and the name (+1 when there is a name), plus 3 tokens
that prime the reply. The harmony format of gpt-oss frames a message the same way
(`<|start|>role<|message|>content<|end|>`).

Counting holds the GIL (the Rust code does not release it), about 50 ms per million characters.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, cast

O200K = "o200k_base"
CL100K = "cl100k_base"
ENCODINGS = (O200K, CL100K)

# Per message: <|start|>{role}<|message|>{content}<|end|> costs 3 tokens besides role/content.
TOKENS_PER_MESSAGE = 3
TOKENS_PER_NAME = 1
# Every reply is primed with <|start|>assistant<|message|>.
REPLY_PRIMING = 3

# tiktoken's model table (tiktoken/model.py), for the two encodings counted exactly.
_EXACT_MODELS = {
    "o1": O200K,
    "o3": O200K,
    "o4-mini": O200K,
    "gpt-5": O200K,
    "gpt-4.1": O200K,
    "gpt-4o": O200K,
    "gpt-4": CL100K,
    "gpt-3.5-turbo": CL100K,
    "gpt-3.5": CL100K,
    "gpt-35-turbo": CL100K,
    "davinci-002": CL100K,
    "babbage-002": CL100K,
    "text-embedding-ada-002": CL100K,
    "text-embedding-3-small": CL100K,
    "text-embedding-3-large": CL100K,
}
# Longest prefix first: "gpt-4o-" must win over "gpt-4-".
_EXACT_PREFIXES = sorted(
    {
        "o1-": O200K,
        "o3-": O200K,
        "o4-mini-": O200K,
        "gpt-5": O200K,
        "gpt-4.5-": O200K,
        "gpt-4.1-": O200K,
        "chatgpt-4o-": O200K,
        "gpt-4o-": O200K,
        # gpt-oss uses o200k_harmony: o200k_base plus special tokens, the same for plain text.
        "gpt-oss-": O200K,
        "gpt-4-": CL100K,
        "gpt-3.5-turbo-": CL100K,
        "gpt-35-turbo-": CL100K,
        "ft:gpt-4o": O200K,
        "ft:gpt-4": CL100K,
        "ft:gpt-3.5-turbo": CL100K,
        "ft:davinci-002": CL100K,
        "ft:babbage-002": CL100K,
    }.items(),
    key=lambda item: -len(item[0]),
)
# Provider prefixes (as in litellm model names) that still mean an OpenAI model.
_OPENAI_PROVIDERS = ("openai/", "azure/")


class _Tokenizer(Protocol):
    def count(self, text: str) -> int: ...


_loaded: dict[str, _Tokenizer] = {}
_load_lock = threading.Lock()
_BINDINGS = "bpe_openai._bindings"


def _bindings() -> Any:
    """bpe-openai's compiled module, loaded without running the package's `__init__`: that
    parses every bundled rank file into Python dicts at import (about 2 s and 150 MB), while
    the compiled module carries its own tables (o200k_base loads in about 0.1 s)."""
    loaded = sys.modules.get(_BINDINGS)
    if loaded is not None:
        return loaded
    package = importlib.util.find_spec("bpe_openai")
    if package is None or not package.submodule_search_locations:
        raise ModuleNotFoundError("bpe-openai is not installed: pip install 'aifleet[prompt]'")
    for directory in package.submodule_search_locations:
        for suffix in importlib.machinery.EXTENSION_SUFFIXES:
            path = Path(directory) / f"_bindings{suffix}"
            if path.is_file():
                loader = importlib.machinery.ExtensionFileLoader(_BINDINGS, str(path))
                spec = importlib.util.spec_from_file_location(_BINDINGS, path, loader=loader)
                assert spec is not None
                module = importlib.util.module_from_spec(spec)
                loader.exec_module(module)
                sys.modules[_BINDINGS] = module  # a PyO3 module initializes once per process
                return module
    raise ModuleNotFoundError(f"bpe-openai is installed without its compiled module {_BINDINGS}")


def tokenizer(encoding: str) -> _Tokenizer:
    """The process-wide tokenizer of an encoding, loaded on first use (0.03-0.1 s)."""
    found = _loaded.get(encoding)
    if found is None:
        if encoding not in ENCODINGS:
            raise ValueError(f"unknown encoding {encoding!r}")
        with _load_lock:
            found = _loaded.get(encoding)
            if found is None:
                # The compiled module directly: the package's tiktoken-style wrapper also refuses
                # texts over 1M characters or 200k tokens.
                found = cast(_Tokenizer, _bindings().tokenizer_for_encoding(encoding))
                _loaded[encoding] = found
    return found


def preload(encodings: Iterable[str]) -> None:
    for name in encodings:
        tokenizer(name)


def exact_encoding(model: str) -> str | None:
    """The OpenAI encoding of a model name, or None when the model is not an OpenAI one."""
    name = model.strip().lower()
    for provider in _OPENAI_PROVIDERS:
        name = name.removeprefix(provider)
    if name in _EXACT_MODELS:
        return _EXACT_MODELS[name]
    for prefix, encoding in _EXACT_PREFIXES:
        if name.startswith(prefix):
            return encoding
    return None


def count(text: str, encoding: str) -> int:
    """Exact token count of plain text (special-token text counts as ordinary text)."""
    return tokenizer(encoding).count(text) if text else 0


@dataclass(frozen=True)
class ModelCounter:
    """How one model's prompts are counted."""

    model: str
    encoding: str
    exact: bool
    factor: float = 1.0

    @property
    def description(self) -> str:
        return self.encoding if self.exact else f"approximate:{self.encoding}*{self.factor:g}"

    @property
    def priming(self) -> int:
        return self._scale(REPLY_PRIMING)

    def text(self, text: str) -> int:
        """Tokens of a piece of text."""
        return self._scale(count(text, self.encoding))

    def message(self, role: str, content: str, name: str = "") -> int:
        """Tokens one chat message takes, framing included."""
        tokens = TOKENS_PER_MESSAGE + count(role, self.encoding) + count(content, self.encoding)
        if name:
            tokens += TOKENS_PER_NAME + count(name, self.encoding)
        return self._scale(tokens)

    def _scale(self, tokens: int) -> int:
        if self.exact:
            return tokens
        # Integer arithmetic: 10 tokens * 1.3 is 13, not ceil(13.000000000000002) = 14.
        permille = round(self.factor * 1000)
        return -(-tokens * permille // 1000)


def counter_for(model: str, *, approx_factor: float) -> ModelCounter:
    encoding = exact_encoding(model)
    if encoding is not None:
        return ModelCounter(model, encoding, exact=True)
    return ModelCounter(model, O200K, exact=False, factor=approx_factor)
