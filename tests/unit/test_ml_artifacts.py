"""Artifacts: skops files loaded only with our allowlist and the registry's sha256; hostile
files are refused and nothing in them runs."""

from __future__ import annotations

import io
import json
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import skops.io as sio
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer

from tests.support.ml import churn_rows, price_rows
from workers.ml import artifacts
from workers.ml.artifacts import ArtifactRefused
from workers.ml.data import Limits, from_rows
from workers.ml.estimators import MODEL_TYPES, model_type
from workers.ml.training import train

LIMITS = Limits(100_000, 100, 1 << 30)
MAX = 1 << 30


def trained_pipeline(name: str) -> Any:
    kind = model_type(name)
    if kind.task == "classification":
        rows, target = churn_rows(120), "churned"
    elif kind.task == "regression":
        rows, target = price_rows(120), "price"
    else:
        rows, target = [{k: v for k, v in r.items() if k != "churned"} for r in churn_rows(120)], ""
    return train(
        from_rows(rows, LIMITS),
        kind,
        kind.check({"n_estimators": 5} if "n_estimators" in kind.parameters() else {}),
        target=target,
        features=[],
        validation_split=0.2,
        random_state=0,
        max_categories=50,
        progress=lambda stage, share: None,
    )


@pytest.mark.parametrize("name", sorted(MODEL_TYPES))
def test_every_model_type_round_trips_through_the_allowlist(name: str, tmp_path: Path) -> None:
    """The allowlist holds exactly what our pipelines need: each loads and predicts the same."""
    trained = trained_pipeline(name)
    path = tmp_path / "model.skops"
    sha = artifacts.dump(trained.pipeline, path)
    loaded = artifacts.load(path, sha256=sha, max_bytes=MAX)
    rows = churn_rows(5, seed=9) if trained.signature.task != "regression" else price_rows(5)
    matrix = trained.signature.matrix(
        [{f: r[f] for f in trained.signature.names} for r in rows], "x"
    )
    assert np.array_equal(loaded.predict(matrix), trained.pipeline.predict(matrix))


def test_a_changed_artifact_is_refused_by_its_sha256(tmp_path: Path) -> None:
    """One flipped byte and the registry's digest no longer matches."""
    path = tmp_path / "model.skops"
    sha = artifacts.dump(trained_pipeline("logistic_regression").pipeline, path)
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ArtifactRefused, match="sha256"):
        artifacts.load(path, sha256=sha, max_bytes=MAX)


def write_schema(path: Path, schema: dict[str, Any]) -> str:
    """A skops-shaped zip holding `schema`; returns its sha256 (so only the types refuse it)."""
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("schema.json", json.dumps(schema))
    return artifacts.sha256_file(path)


def assert_refused_without_running(path: Path, sha: str, marker: Path) -> None:
    with pytest.raises(ArtifactRefused):
        artifacts.load(path, sha256=sha, max_bytes=MAX)
    # skops on its own, with our allowlist as `trusted`, refuses it as well.
    with pytest.raises(sio.exceptions.UntrustedTypesFoundException):
        sio.load(path, trusted=sorted(artifacts.TRUSTED_TYPES))
    assert not marker.exists()


def test_a_malicious_reduce_is_refused_and_nothing_runs(tmp_path: Path) -> None:
    """A file asking to rebuild an object as os.system("touch marker") is refused unread."""
    marker = tmp_path / "pwned"
    schema = {
        "__class__": "system",
        "__module__": "posix",
        "__loader__": "ConstructorFromReduceNode",
        "content": {
            "__class__": "tuple",
            "__module__": "builtins",
            "__loader__": "TupleNode",
            "content": [
                {
                    "__class__": "str",
                    "__module__": "builtins",
                    "__loader__": "JsonNode",
                    "content": json.dumps(f"touch {marker}"),
                    "is_json": True,
                }
            ],
        },
        "protocol": sio._protocol.PROTOCOL,
        "_skops_version": "0.16.0",
    }
    path = tmp_path / "reduce.skops"
    assert_refused_without_running(path, write_schema(path, schema), marker)


class Evil:
    """An object whose unpickling would run a shell command."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


def test_an_object_with_a_malicious_reduce_dumped_by_skops_is_refused(tmp_path: Path) -> None:
    """skops writes the object by its state; loading it would need its class: refused."""
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.skops"
    sio.dump(Pipeline([("x", FunctionTransformer()), ("evil", Evil(marker))]), path)
    assert_refused_without_running(path, artifacts.sha256_file(path), marker)


def test_a_function_transformer_calling_os_system_is_refused(tmp_path: Path) -> None:
    """FunctionTransformer(os.system): the function shows as posix.system and is refused."""
    marker = tmp_path / "pwned"
    path = tmp_path / "system.skops"
    sio.dump(Pipeline([("run", FunctionTransformer(os.system))]), path)
    sha = artifacts.sha256_file(path)
    with pytest.raises(ArtifactRefused, match=r"posix\.system|FunctionNode"):
        artifacts.load(path, sha256=sha, max_bytes=MAX)
    assert_refused_without_running(path, sha, marker)


def test_builtins_eval_is_refused(tmp_path: Path) -> None:
    """A transformer whose function is builtins.eval never loads."""
    marker = tmp_path / "pwned"
    path = tmp_path / "eval.skops"
    sio.dump(Pipeline([("run", FunctionTransformer(eval))]), path)
    sha = artifacts.sha256_file(path)
    with pytest.raises(ArtifactRefused, match=r"eval|FunctionNode"):
        artifacts.load(path, sha256=sha, max_bytes=MAX)
    assert_refused_without_running(path, sha, marker)


def test_an_estimator_we_never_train_is_refused_even_if_skops_trusts_it(tmp_path: Path) -> None:
    """skops trusts every scikit-learn estimator; our allowlist only what we build."""
    path = tmp_path / "ft.skops"
    sio.dump(FunctionTransformer(), path)
    with pytest.raises(ArtifactRefused, match="FunctionTransformer"):
        artifacts.load(path, sha256=artifacts.sha256_file(path), max_bytes=MAX)


def test_an_artifact_unpacking_beyond_the_limit_is_refused(tmp_path: Path) -> None:
    """The zip's declared uncompressed size is bounded (no zip bomb)."""
    path = tmp_path / "bomb.skops"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("schema.json", "{}")
        archive.writestr("big.npy", b"\0" * (4 << 20))
    with pytest.raises(ArtifactRefused, match="unpacks"):
        artifacts.load(path, sha256=artifacts.sha256_file(path), max_bytes=1 << 20)


def test_a_file_that_is_not_a_zip_is_refused(tmp_path: Path) -> None:
    """Random bytes are not an artifact."""
    path = tmp_path / "junk.skops"
    path.write_bytes(io.BytesIO(b"junk" * 100).getvalue())
    with pytest.raises(ArtifactRefused, match="not a skops file"):
        artifacts.load(path, sha256=artifacts.sha256_file(path), max_bytes=MAX)
