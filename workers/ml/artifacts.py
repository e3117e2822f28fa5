"""Model artifacts: skops files (a zip of JSON and .npy, never pickle), loaded only when every
type they name is on our allowlist and their sha256 is the one the registry recorded.

skops trusts every scikit-learn estimator by default and checks only that types are trusted;
we check more, before skops parses anything:
- the file's sha256 against the registry (an object changed in the store is refused);
- the zip's member count and uncompressed size (no zip bomb);
- every `__module__.__class__` and every node loader named anywhere in its schema against
  `TRUSTED_TYPES` and `LOADERS`, the exact set our own pipelines produce (so no function,
  method or operator nodes at all, and no estimator we do not train, FunctionTransformer
  included);
then skops loads with `trusted=TRUSTED_TYPES` and runs its own audit too. Nothing in a refused
file is imported or called. `get_untrusted_types()` output is never passed back as trusted.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path
from typing import Any, BinaryIO

import skops.io as sio

SCHEMA_FILE = "schema.json"
MAX_MEMBERS = 100_000

# What our pipelines (workers/ml/pipeline.py + estimators.py) contain, and nothing else.
TRUSTED_TYPES: frozenset[str] = frozenset(
    {
        "builtins.bool",
        "builtins.dict",
        "builtins.float",
        "builtins.int",
        "builtins.list",
        "builtins.slice",
        "builtins.str",
        "builtins.tuple",
        "numpy.bool",
        "numpy.dtype",
        "numpy.float64",
        "numpy.int64",
        "numpy.intp",
        "numpy.ndarray",
        "numpy.random.mtrand.RandomState",
        "numpy.random._mt19937.MT19937",
        "sklearn._loss.link.IdentityLink",
        "sklearn._loss.link.Interval",
        "sklearn._loss.link.LogitLink",
        "sklearn._loss.link.MultinomialLogit",
        "sklearn._loss.loss.HalfBinomialLoss",
        "sklearn._loss.loss.HalfMultinomialLoss",
        "sklearn._loss.loss.HalfSquaredError",
        "sklearn._loss.loss.AbsoluteError",
        "sklearn._loss.loss.HuberLoss",
        "sklearn._loss.loss.PinballLoss",
        "sklearn._loss.loss.ExponentialLoss",
        "sklearn._loss._loss.CyHalfBinomialLoss",
        "sklearn._loss._loss.CyHalfMultinomialLoss",
        "sklearn._loss._loss.CyHalfSquaredError",
        "sklearn._loss._loss.CyAbsoluteError",
        "sklearn._loss._loss.CyHuberLoss",
        "sklearn._loss._loss.CyPinballLoss",
        "sklearn._loss._loss.CyExponentialLoss",
        "sklearn.calibration.CalibratedClassifierCV",
        "sklearn.calibration._CalibratedClassifier",
        "sklearn.calibration._SigmoidCalibration",
        "sklearn.cluster._kmeans.KMeans",
        "sklearn.compose._column_transformer.ColumnTransformer",
        "sklearn.dummy.DummyClassifier",
        "sklearn.dummy.DummyRegressor",
        "sklearn.ensemble._forest.RandomForestClassifier",
        "sklearn.ensemble._forest.RandomForestRegressor",
        "sklearn.ensemble._gb.GradientBoostingClassifier",
        "sklearn.ensemble._gb.GradientBoostingRegressor",
        "sklearn.impute._base.SimpleImputer",
        "sklearn.linear_model._base.LinearRegression",
        "sklearn.linear_model._logistic.LogisticRegression",
        "sklearn.pipeline.Pipeline",
        "sklearn.preprocessing._data.StandardScaler",
        "sklearn.preprocessing._encoders.OneHotEncoder",
        "sklearn.svm._classes.SVC",
        "sklearn.svm._classes.SVR",
        "sklearn.tree._classes.DecisionTreeClassifier",
        "sklearn.tree._classes.DecisionTreeRegressor",
        "sklearn.tree._tree.Tree",
    }
)
LOADERS: frozenset[str] = frozenset(
    {
        "DTypeNode",
        "DictNode",
        "JsonNode",
        "ListNode",
        "LossNode",
        "NdArrayNode",
        "ObjectNode",
        "RandomStateNode",
        "SliceNode",
        "TreeNode",
        "TupleNode",
        "TypeNode",
    }
)


class ArtifactRefused(ValueError):
    """The artifact is not one we wrote, or names something we do not load."""


def dump(pipeline: Any, path: Path) -> str:
    """Write the artifact and return its sha256 (hex)."""
    sio.dump(pipeline, path, compression=zipfile.ZIP_DEFLATED)
    return sha256_file(path)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def unpacked_bytes(path: Path) -> int:
    """What the artifact's members add up to, unpacked (about its size in memory)."""
    with zipfile.ZipFile(path) as archive:
        return sum(i.file_size for i in archive.infolist())


def load(path: Path, *, sha256: str, max_bytes: int) -> Any:
    """The pipeline in `path`, if it is the artifact the registry knows and names only
    trusted types; `max_bytes` bounds its uncompressed size."""
    if sha256_file(path) != sha256:
        raise ArtifactRefused("the artifact's sha256 differs from the registry's")
    with path.open("rb") as f:
        audit(f, max_bytes=max_bytes)
        f.seek(0)
        try:
            return sio.load(f, trusted=sorted(TRUSTED_TYPES))
        except sio.exceptions.UntrustedTypesFoundException as exc:
            raise ArtifactRefused(f"untrusted types: {exc}") from None


def audit(f: BinaryIO, *, max_bytes: int) -> None:
    """Refuse a file whose zip or schema holds anything our pipelines do not (see above)."""
    try:
        with zipfile.ZipFile(f) as archive:
            infos = archive.infolist()
            if len(infos) > MAX_MEMBERS:
                raise ArtifactRefused("the artifact has too many members")
            if sum(i.file_size for i in infos) > max_bytes:
                raise ArtifactRefused(f"the artifact unpacks to more than {max_bytes} bytes")
            schema = json.loads(archive.read(SCHEMA_FILE))
    except (zipfile.BadZipFile, KeyError, json.JSONDecodeError, UnicodeDecodeError):
        raise ArtifactRefused("the artifact is not a skops file") from None
    types, loaders = set(), set()
    stack: list[Any] = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if "__loader__" in node:
                loaders.add(str(node["__loader__"]))
            if "__module__" in node or "__class__" in node:
                types.add(f"{node.get('__module__')}.{node.get('__class__')}")
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    if loaders - LOADERS:
        raise ArtifactRefused(f"untrusted loaders: {', '.join(sorted(loaders - LOADERS))}")
    if types - TRUSTED_TYPES:
        raise ArtifactRefused(f"untrusted types: {', '.join(sorted(types - TRUSTED_TYPES))}")
