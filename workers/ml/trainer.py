"""One training in a child process, forked from a server that has scikit-learn, skops and
pyarrow imported already (multiprocessing's forkserver with this module preloaded), so a
training starts in milliseconds instead of paying the imports (seconds) each time.

A separate process because a fit cannot be interrupted from a thread: the worker kills it at the
time limit. The child caps its own address space (`memory_bytes`) and BLAS/OpenMP threads, and
dies with its parent. It sends JSON messages through its pipe: `{"progress": {"stage",
"progress"}}` while it works, then `{"done": {...result}}` or `{"error": {"message", "field"}}`.
Its spec arrives as JSON text; nothing it reads is executed (the data is parsed by pyarrow or is
JSON rows, and the model is written with skops).
"""

from __future__ import annotations

import json
import sys
import warnings
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from sklearn.exceptions import ConvergenceWarning
from threadpoolctl import threadpool_limits

from workers.ml import artifacts, data
from workers.ml.estimators import model_type
from workers.ml.training import TrainingError, train


def die_with_parent() -> None:
    """Linux: be killed when the forkserver dies (it exits when the worker does, kill -9
    included), so no orphaned fit runs on."""
    if sys.platform != "linux":
        return
    import ctypes
    import signal

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)


def limit_memory(memory_bytes: int) -> None:
    if memory_bytes > 0:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))


def run(spec: dict[str, Any], send: Any) -> dict[str, Any]:
    warnings.simplefilter("ignore", ConvergenceWarning)
    limits = data.Limits(**spec["limits"])
    send("progress", {"stage": "loading", "progress": 0.05})
    source = spec["data"]
    if "rows" in source:
        table = data.from_rows(source["rows"], limits, "training_data.rows")
    else:
        table = data.from_file(Path(source["path"]), source["format"], limits)
    trained = train(
        table,
        model_type(spec["model_type"]),
        spec["params"],
        target=spec["target"],
        features=spec["features"],
        validation_split=spec["validation_split"],
        random_state=spec["random_state"],
        max_categories=spec["max_categories"],
        progress=lambda stage, share: send("progress", {"stage": stage, "progress": share}),
    )
    send("progress", {"stage": "saving", "progress": 0.9})
    path = Path(spec["artifact"])
    sha256 = artifacts.dump(trained.pipeline, path)
    return {
        "signature": trained.signature.to_json(),
        "metrics": trained.metrics,
        "params": trained.params,
        "profile": trained.profile,
        "rows": table.rows,
        "training_rows": trained.rows,
        "artifact_sha256": sha256,
        "artifact_bytes": path.stat().st_size,
    }


def main(spec_json: str, conn: Connection) -> None:
    """The child's entry point (multiprocessing target)."""
    die_with_parent()
    spec = json.loads(spec_json)

    def send(kind: str, value: dict[str, Any]) -> None:
        conn.send_bytes(json.dumps({kind: value}).encode())

    limit_memory(int(spec.get("memory_bytes", 0)))
    try:
        with threadpool_limits(int(spec.get("threads", 1))):
            send("done", run(spec, send))
    except data.DataError as exc:
        send("error", {"message": str(exc), "field": exc.field})
    except TrainingError as exc:
        send("error", {"message": str(exc), "field": ""})
    except MemoryError:
        send("error", {"message": "the training ran out of its memory limit", "field": ""})
    finally:
        conn.close()
        sys.stdout.flush()
        sys.stderr.flush()
