"""The ML component against the same model used in process, measured in one run.

    python -m benchmarks.ml                  # ~2-3 min; prints JSON, writes results/ml.json
    python -m benchmarks.ml --rows 2000      # a smaller training set

Starts an embedded nats-server and PostgreSQL and the ML worker in its own process (uvloop,
like `aifleet worker ml`); this process is the client, on uvloop too. On a 2-core machine the
two share the cores, so the NATS figures include the client's cost.

1. Training (`classification`: a 100-tree random forest, and `logistic_regression`, on the
   same churn rows): the wall time from `train` to `completed` over NATS (queue, job, forked
   trainer, artifact upload, registration) against `workers.ml.training.train` in process (the
   same preprocessing, fit and metrics), and against a bare `Pipeline.fit` of the same pipeline.
2. `predict` of one row with each model, one request at a time: p50/p99 over NATS (msgpack),
   against the same loaded model in process: the signature check plus `predict_proba` (what the
   worker does per request), and `predict_proba` alone on a ready matrix; the three interleaved
   call by call, so a change in the machine's other load hits all of them; and, interleaved
   too, the fleet's floor: a raw nats-py echo round trip (`benchmarks.servers raw`, its own
   process) of a 200-byte msgpack body. "Beyond echo" is what predict adds to that floor.
3. `predict_batch` of 10,000 rows in one request (the random forest): rows/s over NATS against
   in process, alternated three times (medians).
4. Loading the random forest: download from the Object Store plus the checked skops load,
   against the skops load of the same file from local disk.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import msgpack
import psutil

from benchmarks.common import ECHO_BODY, ECHO_SUBJECT, TENANT, run_async
from subjects import request_subject

REPO = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results" / "ml.json"
HEADERS = {"Content-Type": "application/msgpack"}
ROW = {"usage": 5.0, "tenure": 3, "plan": "basic", "active": True}


async def serve(nats_url: str, database_url: str) -> None:
    from benchmarks.servers import ready, until_sigterm
    from workers.ml import service as ml
    from workers.runtime.config import Settings
    from workers.runtime.worker import Worker

    settings = Settings.model_validate(
        {"nats_url": nats_url, "database_url": database_url, "log_level": "WARNING"}
    )
    worker = Worker([ml.component], settings)
    await worker.start()
    ready()
    await until_sigterm()
    await worker.stop()


async def request(nc: Any, op: str, body: dict[str, Any], timeout: float = 60) -> dict[str, Any]:
    msg = await nc.request(
        request_subject(TENANT, "ml", op), msgpack.packb(body), timeout=timeout, headers=HEADERS
    )
    assert not (msg.headers or {}).get("Nats-Service-Error-Code"), msg.data[:300]
    reply: dict[str, Any] = msgpack.unpackb(msg.data)
    return reply


async def train_over_nats(nats_url: str, model_type: str, rows: list[dict[str, Any]]) -> float:
    import nats

    nc = await nats.connect(nats_url)
    body = {
        "name": f"bench-{model_type}".replace("_", "-"),
        "model_type": model_type,
        "target": "price" if model_type == "linear_regression" else "churned",
        "training_data": {"rows": rows},
    }
    started = time.perf_counter()
    queued = await request(nc, "train", body)
    while True:
        found = await request(nc, "get_training", {"training_id": queued["training_id"]})
        if found.get("status") in ("completed", "failed"):
            break
        await asyncio.sleep(0.05)
    elapsed = time.perf_counter() - started
    assert found["status"] == "completed", found
    await request(nc, "deploy", {"model_id": body["name"]})
    await nc.close()
    return elapsed


def train_in_process(model_type: str, rows: list[dict[str, Any]]) -> dict[str, float]:
    from workers.ml.data import Limits, from_rows
    from workers.ml.estimators import model_type as kind_of
    from workers.ml.training import train

    kind = kind_of(model_type)
    started = time.perf_counter()
    trained = train(
        from_rows(rows, Limits(10**7, 1000, 1 << 40)),
        kind,
        kind.check({}),
        target="churned",
        features=[],
        validation_split=0.2,
        random_state=0,
        max_categories=100,
        progress=lambda stage, share: None,
    )
    whole = time.perf_counter() - started
    table = from_rows(rows, Limits(10**7, 1000, 1 << 40))
    matrix = trained.signature.matrix(
        [{k: v for k, v in r.items() if k != "churned"} for r in rows], "x"
    )
    labels = table.columns["churned"]
    started = time.perf_counter()
    trained.pipeline.fit(matrix, labels)
    return {"train_s": whole, "fit_only_s": time.perf_counter() - started}


async def load_model(nats_url: str, name: str) -> tuple[Any, dict[str, float]]:
    """The deployed model's artifact, from the Object Store as the worker loads it."""
    import nats

    from workers.ml import artifacts
    from workers.ml.models import load_file
    from workers.ml.signature import Signature
    from workers.runtime.files import FileStore

    nc = await nats.connect(nats_url)
    model = await request(nc, "get_model", {"model_id": f"{name}@production"})
    version = model["versions"][0]
    files = await FileStore.open(nc.jetstream())
    signature = Signature.from_json(
        {
            "features": [
                {"name": f["name"], "type": f["type"], "categories": f.get("categories", [])}
                for f in version["signature"]["features"]
            ],
            "task": version["signature"]["task"],
            "classes": version["signature"].get("classes", []),
        }
    )
    store_times, disk_times = [], []
    loaded = None
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.skops"
        for _ in range(5):
            started = time.perf_counter()
            with path.open("wb") as f:
                await files.get(TENANT, f"ml/models/{name}/{version['training_id']}.skops", into=f)
            loaded = load_file(path, version["artifact_sha256"], signature, 1 << 32)
            store_times.append(time.perf_counter() - started)
            started = time.perf_counter()
            artifacts.load(path, sha256=version["artifact_sha256"], max_bytes=1 << 32)
            disk_times.append(time.perf_counter() - started)
    await nc.close()
    return loaded, {
        "artifact_bytes": version["artifact_bytes"],
        "object_store_load_ms": round(statistics.median(store_times) * 1000, 1),
        "local_disk_load_ms": round(statistics.median(disk_times) * 1000, 1),
    }


async def predict_both(
    nats_url: str, name: str, model: Any, repeats: int, worker: psutil.Process
) -> tuple[list[float], list[float], list[float], dict[str, float]]:
    """One row, interleaved request by request so all see the same machine: over NATS, the
    same loaded model in process (signature check + predict, what the worker does),
    `predict_proba` alone on a ready matrix, and a raw echo round trip."""
    import nats

    from workers.ml import predictions

    nc = await nats.connect(nats_url)
    subject = request_subject(TENANT, "ml", "predict")
    body = msgpack.packb({"model_id": name, "features": ROW})
    matrix = model.signature.matrix([ROW], "features")
    over_nats, checked, bare, echo = [], [], [], []
    worker_cpu, local_cpu = 0.0, 0.0
    for i in range(repeats + 200):
        if i == 200:
            worker_started = sum(worker.cpu_times()[:2])
        started = time.perf_counter()
        msg = await nc.request(subject, body, timeout=10, headers=HEADERS)
        elapsed = time.perf_counter() - started
        assert not (msg.headers or {}).get("Nats-Service-Error-Code"), msg.data
        if i < 200:  # the first ones load the model and warm the pool
            continue
        over_nats.append(elapsed)
        started = time.perf_counter()
        await nc.request(ECHO_SUBJECT, ECHO_BODY, timeout=10, headers=HEADERS)
        echo.append(time.perf_counter() - started)
        if i == repeats + 199:
            worker_cpu = sum(worker.cpu_times()[:2]) - worker_started
        started, cpu = time.perf_counter(), time.process_time()
        predictions.predict(model, model.signature.matrix([ROW], "features"))
        checked.append(time.perf_counter() - started)
        local_cpu += time.process_time() - cpu
        started = time.perf_counter()
        model.pipeline.predict_proba(matrix)
        bare.append(time.perf_counter() - started)
    await nc.close()
    cpu_ms = {
        "echo_p50_ms": ms(echo, 0.5),
        "worker_cpu_ms_per_request": round(worker_cpu / repeats * 1000, 3),
        "in_process_cpu_ms_per_call": round(local_cpu / repeats * 1000, 3),
    }
    return over_nats, checked, bare, cpu_ms


async def batch_over_nats(nats_url: str, name: str, rows: list[dict[str, Any]]) -> float:
    import nats

    nc = await nats.connect(nats_url, max_reconnect_attempts=0)
    await request(nc, "predict_batch", {"model_id": name, "features_list": rows[:100]})
    started = time.perf_counter()
    reply = await request(nc, "predict_batch", {"model_id": name, "features_list": rows})
    elapsed = time.perf_counter() - started
    assert len(reply["predictions"]) == len(rows)
    await nc.close()
    return elapsed


def batch_in_process(model: Any, rows: list[dict[str, Any]]) -> float:
    from workers.ml import predictions

    started = time.perf_counter()
    predictions.predict(model, model.signature.matrix(rows, "features_list"))
    return time.perf_counter() - started


def ms(values: list[float], q: float) -> float:
    values = sorted(values)
    return round(values[min(len(values) - 1, int(len(values) * q))] * 1000, 3)


def measure(nats_url: str, rows: int, repeats: int, worker: psutil.Process) -> dict[str, Any]:
    from tests.support.ml import churn_rows, price_rows

    training_rows = churn_rows(rows)
    # The worker's first training also waits for its trainer server's imports: not measured.
    run_async(train_over_nats(nats_url, "linear_regression", price_rows(50)))
    trainings = {}
    for model_type in ("classification", "logistic_regression"):
        job_s = run_async(train_over_nats(nats_url, model_type, training_rows))
        local = train_in_process(model_type, training_rows)
        trainings[model_type] = {
            "rows": rows,
            "nats_job_s": round(job_s, 2),
            "in_process_train_s": round(local["train_s"], 2),
            "pipeline_fit_only_s": round(local["fit_only_s"], 2),
            "job_overhead_s": round(job_s - local["train_s"], 2),
        }
    single = {}
    for model_type in ("classification", "logistic_regression"):
        name = f"bench-{model_type}".replace("_", "-")
        model, loading = run_async(load_model(nats_url, name))
        over_nats, checked, bare, cpu = run_async(
            predict_both(nats_url, name, model, repeats, worker)
        )
        single[model_type] = {
            "nats_p50_ms": ms(over_nats, 0.5),
            "nats_p99_ms": ms(over_nats, 0.99),
            "in_process_checked_p50_ms": ms(checked, 0.5),
            "in_process_predict_proba_p50_ms": ms(bare, 0.5),
            "overhead_p50_ms": round(ms(over_nats, 0.5) - ms(checked, 0.5), 3),
            **cpu,
            "overhead_beyond_echo_p50_ms": round(
                ms(over_nats, 0.5) - ms(checked, 0.5) - cpu["echo_p50_ms"], 3
            ),
            "worker_cpu_overhead_ms": round(
                cpu["worker_cpu_ms_per_request"] - cpu["in_process_cpu_ms_per_call"], 3
            ),
        }
    name = "bench-classification"
    model, loading = run_async(load_model(nats_url, name))
    batch_rows = [
        {k: v for k, v in r.items() if k != "churned"} for r in churn_rows(10_000, seed=5)
    ]
    # Alternated three times, medians: one 10,000-row call is long enough for the machine's
    # other load to change under it.
    nats_times, local_times = [], []
    for _ in range(3):
        nats_times.append(run_async(batch_over_nats(nats_url, name, batch_rows)))
        local_times.append(batch_in_process(model, batch_rows))
    batch_nats, batch_local = statistics.median(nats_times), statistics.median(local_times)
    return {
        "training": trainings,
        "predict_one_row": single,
        "predict_batch_10k_rows": {
            "nats_rows_per_s": round(len(batch_rows) / batch_nats),
            "in_process_rows_per_s": round(len(batch_rows) / batch_local),
            "nats_share_of_in_process": round(batch_local / batch_nats, 2),
        },
        "model_load": loading,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("mode", nargs="?", default="bench", choices=["bench", "serve"])
    parser.add_argument("--nats-url")
    parser.add_argument("--database-url")
    parser.add_argument("--rows", type=int, default=5000, help="training rows")
    parser.add_argument("--repeats", type=int, default=1000, help="single-row predictions")
    args = parser.parse_args(argv)
    if args.mode == "serve":
        run_async(serve(args.nats_url, args.database_url))
        return

    from aifleet.embedded import EmbeddedNats, EmbeddedPostgres

    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="aifleet-bench-ml-") as tmp:
        nats_server = EmbeddedNats(Path(tmp) / "nats", config=REPO / "nats-server.conf")
        postgres = EmbeddedPostgres(Path(tmp) / "pg")
        nats_server.start()
        postgres.start()
        worker = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "benchmarks.ml",
                "serve",
                "--nats-url",
                nats_server.url,
                "--database-url",
                postgres.dsn,
            ],
            cwd=REPO,
            stdout=subprocess.PIPE,
            text=True,
        )
        echo = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.servers", "raw", "--nats-url", nats_server.url],
            cwd=REPO,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            for process, what in ((worker, "the ML worker"), (echo, "the echo server")):
                assert process.stdout is not None
                for line in process.stdout:
                    if line.strip() == "ready":
                        break
                else:
                    raise RuntimeError(f"{what} exited before it was ready")
            results = measure(nats_server.url, args.rows, args.repeats, psutil.Process(worker.pid))
        finally:
            for process in (worker, echo):
                process.terminate()
                process.wait(30)
            postgres.stop()
            nats_server.stop()
    report = {
        "command": "python -m benchmarks.ml " + " ".join(sys.argv[1:]),
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "load_average_before": [round(x, 2) for x in load_before],
            "load_average_after": [round(x, 2) for x in os.getloadavg()],
        },
        **results,
    }
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
