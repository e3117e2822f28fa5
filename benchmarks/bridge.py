"""REST echo through the HTTP bridge (bridge -> NATS -> worker) versus the same echo served
directly by a FastAPI app under uvicorn: throughput and latency, same run, same load generator.

    python -m benchmarks.bridge [--duration 10] [--rounds 3] [--connections 64] [--auth]
                                  [--middleware-cost] [--out benchmarks/results/bridge.json]

Load: wrk (Debian package `wrk`), one thread, keep-alive connections, the same ~230-byte JSON
POST to both. Each round runs both contenders at `--connections` in flight (throughput, p50,
p99) and with one connection (the latency a single caller sees: the extra hop's cost shows in
its p50). Results are the median over rounds. Every process runs on uvloop with httptools and
no access log; the bridge runs in dev mode with rate limiting off (or, with --auth, verifying
an HS256 JWT on every request), the worker is the echo test component on the worker runtime.
One machine runs everything: wrk, nats-server, bridge and worker share its cores, while the
direct FastAPI app shares them only with wrk.

`--middleware-cost` adds a third contender to the same rounds: the same bridge with its rpc
routes dispatched ahead of Starlette's middleware stack (the bridge's shape until every route
took the same ASGI path), to price that path: throughput and the bridge process's own CPU per
request, uniform / rpc-first.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from pydantic import Base64Bytes, BaseModel

from aifleet.embedded import EmbeddedNats, free_port

BODY: dict[str, Any] = {
    "text": "The quick brown fox jumps over the lazy dog; " * 2,
    "blob": "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
    "number": "1234567890123",
    "items": ["alpha", "beta", "gamma", "delta"],
    "counts": {"tokens": "128", "chunks": "4"},
}
RATE = 500  # per tenant, for the isolation run: above the calm caller's ~150 req/s
SECRET = "benchmark-secret-benchmark-secret-0123456789"
ISSUER, AUDIENCE = "bench-issuer", "bench-api"


# -- the contenders (each in its own process) -------------------------------------------------


class EchoRequest(BaseModel):
    """The direct app's request: the fields the bridge's EchoRequest JSON carries."""

    text: str = ""
    blob: Base64Bytes = b""
    number: int = 0
    items: list[str] = []
    counts: dict[str, int] = {}


class EchoReply(EchoRequest):
    tenant: str = ""


def serve_worker(nats_url: str) -> None:
    from tests.support import echo
    from tests.support.fleet import worker_settings
    from workers.runtime.logs import configure
    from workers.runtime.worker import Worker

    configure("WARNING")
    settings = worker_settings(nats_url, concurrency=256)
    _uvloop_run(Worker([echo.component], settings).run())


class RpcFirst:
    """The baseline of `--middleware-cost`: a request matching an rpc route with its method is
    handled by that route directly, skipping the app's middleware and router; anything else
    goes to the app."""

    def __init__(self, app: Any) -> None:
        from bridge.routes import RpcRoutes

        self.app = app
        (self.rpc,) = (r for r in app.routes if isinstance(r, RpcRoutes))

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        from starlette.routing import Match

        if scope["type"] == "http":
            match, child = self.rpc.matches(scope)
            if match is Match.FULL:
                scope.update(child)
                await self.rpc.handle(scope, receive, send)
                return
        await self.app(scope, receive, send)


def dispatch_cost(requests: int = 20_000, rounds: int = 5) -> dict[str, float]:
    """CPU µs per request of both shapes in this process, no network: a POST /api/v1/echo
    that the forwarder refuses before NATS (an invalid X-Tenant-ID: 400), so the whole ASGI
    path runs (middleware, router, route, forwarder, error reply) and nothing else. CPU time
    of this process, not wall time, so other jobs on the machine do not count; rounds
    alternate the shapes; medians."""
    import asyncio

    from bridge.app import create_app
    from bridge.config import BridgeSettings
    from tests.support import echo  # noqa: F401  (registers the echo service: its routes)
    from workers.runtime.logs import configure

    configure("CRITICAL")
    settings = BridgeSettings.model_validate(
        {"nats_url": "nats://127.0.0.1:1", "auth": "off", "components": ["echo"]}
    )
    uniform = create_app(settings)
    shapes: dict[str, Any] = {"uniform": uniform, "rpc-first": RpcFirst(uniform)}
    body = json.dumps(BODY).encode()
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/api/v1/echo",
        "raw_path": b"/api/v1/echo",
        "query_string": b"",
        "root_path": "",
        "server": ("127.0.0.1", 8080),
        "client": ("127.0.0.1", 50000),
        "headers": [
            (b"host", b"127.0.0.1:8080"),
            (b"content-type", b"application/json"),
            (b"content-length", b"%d" % len(body)),
            (b"x-tenant-id", b"Not A Tenant"),
        ],
    }
    statuses: list[int] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    async def measure() -> dict[str, list[float]]:
        times: dict[str, list[float]] = {name: [] for name in shapes}
        for app in shapes.values():  # warm-up, and the middleware stack gets built
            for _ in range(500):
                await app(dict(scope), receive, send)
        if set(statuses) != {400}:
            raise RuntimeError(f"unexpected statuses {set(statuses)}")
        for i in range(rounds):
            order = list(shapes.items())
            for name, app in order if i % 2 == 0 else reversed(order):
                began = time.process_time()
                for _ in range(requests):
                    await app(dict(scope), receive, send)
                times[name].append((time.process_time() - began) / requests * 1e6)
        return times

    times = asyncio.run(measure())
    out = {f"{name}_us": statistics.median(t) for name, t in times.items()}
    out["added_us"] = out["uniform_us"] - out["rpc-first_us"]
    return out


def serve_bridge(
    nats_url: str, port: int, auth: bool, rate: float = 0, rpc_first: bool = False
) -> None:
    import uvicorn

    from bridge.app import create_app
    from bridge.config import BridgeSettings
    from bridge.server import protocol
    from tests.support import echo  # noqa: F401  (registers the echo service: its routes)
    from workers.runtime.logs import configure

    configure("WARNING")
    values: dict[str, Any] = {
        "nats_url": nats_url,
        "port": port,
        "rate_per_second": rate,
        "components": ["echo"],
    }
    if auth:
        values.update(auth="jwt", jwt_secret=SECRET, jwt_issuer=ISSUER, jwt_audience=AUDIENCE)
    else:
        values["auth"] = "off"
    settings = BridgeSettings.model_validate(values)
    app = create_app(settings)
    uvicorn.run(
        RpcFirst(app) if rpc_first else app,
        host="127.0.0.1",
        port=port,
        loop="uvloop",
        http=protocol(settings.header_timeout),
        access_log=False,
        log_level="warning",
        server_header=False,
    )


def serve_fastapi(port: int) -> None:
    import uvicorn
    from fastapi import FastAPI

    app = FastAPI()

    @app.post("/api/v1/echo")
    async def echo(request: EchoRequest) -> EchoReply:
        return EchoReply(**request.model_dump(), tenant="bench")

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
        server_header=False,
    )


def _uvloop_run(coro: Any) -> None:
    import uvloop

    uvloop.run(coro)


# -- the load ---------------------------------------------------------------------------------

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def _ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text.strip()).groups()  # type: ignore[union-attr]
    return float(number) * _UNITS[unit]


def _cpu(pids: list[int]) -> float:
    """CPU seconds (user + system) the processes have used so far."""
    import psutil

    total = 0.0
    for pid in pids:
        times = psutil.Process(pid).cpu_times()
        total += times.user + times.system
    return total


def wrk(
    url: str,
    script: Path,
    connections: int,
    duration: int,
    pids: list[int] | None = None,
    refused_ok: bool = False,
) -> dict[str, float]:
    """One wrk run; with `pids`, also the server-side CPU time per request (µs), all of them
    (`cpu_us`) and the first alone (`front_cpu_us`: the bridge, or the FastAPI process)."""
    cpu_before = _cpu(pids or [])
    front_before = _cpu((pids or [])[:1])
    out = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{duration}s",
            "--latency",
            "-s",
            str(script),
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    found = dict(re.findall(r"^\s+(50|99)%\s+(\S+)\s*$", out, re.MULTILINE))
    if set(found) != {"50", "99"}:
        raise RuntimeError(f"{url}: no latency distribution in wrk's output\n{out}")
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    refused = int(errors.group(1)) if errors else 0
    if refused and not refused_ok:
        raise RuntimeError(f"{url}: {refused} non-2xx responses\n{out}")
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    cpu_us = (_cpu(pids or []) - cpu_before) / max(requests, 1) * 1e6
    front_us = (_cpu((pids or [])[:1]) - front_before) / max(requests, 1) * 1e6
    return {
        "rps": rps,
        "p50_ms": _ms(found["50"]),
        "p99_ms": _ms(found["99"]),
        "cpu_us": cpu_us,
        "front_cpu_us": front_us,
        "refused_share": refused / max(requests, 1),
    }


def _script(work: Path, token: str | None, tenant: str = "bench", pause_ms: int = 0) -> Path:
    headers = {"Content-Type": "application/json", "X-Tenant-ID": tenant}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    lines = ['wrk.method = "POST"', f"wrk.body = {json.dumps(json.dumps(BODY))}"]
    lines += [f'wrk.headers["{k}"] = "{v}"' for k, v in headers.items()]
    if pause_ms:  # a caller that waits between requests, instead of a closed loop
        lines.append(f"function delay() return {pause_ms} end")
    path = work / f"post-{tenant}.lua"
    path.write_text("\n".join(lines) + "\n")
    return path


def _token() -> str:
    import jwt

    now = int(time.time())
    claims: dict[str, Any] = {"iss": ISSUER, "aud": AUDIENCE, "sub": "bench", "tenant": "bench"}
    claims |= {"nbf": now - 5, "exp": now + 3600}
    return jwt.encode(claims, SECRET, algorithm="HS256")


def _spawn(*args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "benchmarks.bridge", *args])


def _wait_http(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"{url} not ready")


def run(
    duration: int, rounds: int, connections: int, auth: bool, middleware_cost: bool = False
) -> dict[str, Any]:
    if shutil.which("wrk") is None:
        raise SystemExit("wrk not found: apt-get install wrk")
    # In process, before any server competes for the cores.
    dispatch = dispatch_cost() if middleware_cost else None
    work = Path(tempfile.mkdtemp(prefix="bench-bridge-"))
    nats = EmbeddedNats(work / "nats")
    nats.start()
    bridge_port, fastapi_port, limited_port = free_port(), free_port(), free_port()
    procs = [
        _spawn("worker", "--nats", nats.url),
        _spawn("bridge", "--nats", nats.url, "--port", str(bridge_port), *(["--auth"] * auth)),
        _spawn("fastapi", "--port", str(fastapi_port)),
        # Tenant isolation: per-tenant limit above what one caller (c=1) asks, far below a flood.
        _spawn("bridge", "--nats", nats.url, "--port", str(limited_port), "--rate", str(RATE)),
    ]
    assert nats.pid is not None
    # Server-side processes of each path: the bridge path's CPU includes the worker and NATS.
    pids = {"bridge": [procs[1].pid, procs[0].pid, nats.pid], "fastapi": [procs[2].pid]}
    targets = {
        "fastapi": f"http://127.0.0.1:{fastapi_port}/api/v1/echo",
        "bridge": f"http://127.0.0.1:{bridge_port}/api/v1/echo",
    }
    if middleware_cost:
        first_port = free_port()
        flags = ["--rpc-first", *(["--auth"] * auth)]
        procs.append(_spawn("bridge", "--nats", nats.url, "--port", str(first_port), *flags))
        pids["bridge-rpc-first"] = [procs[-1].pid, procs[0].pid, nats.pid]
        targets["bridge-rpc-first"] = f"http://127.0.0.1:{first_port}/api/v1/echo"
    try:
        _wait_http(f"http://127.0.0.1:{fastapi_port}/healthz")
        for url in targets.values():
            _wait_http(url.replace("/api/v1/echo", "/healthz"))
        _wait_http(f"http://127.0.0.1:{bridge_port}/readyz")
        _wait_http(f"http://127.0.0.1:{limited_port}/readyz")
        script = _script(work, _token() if auth else None)
        for url in targets.values():  # warm-up
            wrk(url, script, connections, 2)
        samples: dict[str, list[dict[str, float]]] = {
            f"{name}/{c}": [] for name in targets for c in (connections, 1)
        }
        for i in range(rounds):
            # The order reverses every other round: neither contender always runs first.
            order = list(targets.items())
            for name, url in order if i % 2 == 0 else reversed(order):
                for c in (connections, 1):
                    samples[f"{name}/{c}"].append(wrk(url, script, c, duration, pids[name]))
        isolation = _isolation(
            f"http://127.0.0.1:{limited_port}/api/v1/echo", work, connections, duration, rounds
        )
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(10)
        nats.stop()
        shutil.rmtree(work, ignore_errors=True)
    metrics = ("rps", "p50_ms", "p99_ms", "cpu_us", "front_cpu_us")
    result = {
        key: {m: statistics.median(s[m] for s in runs) for m in metrics}
        for key, runs in samples.items()
    }
    report: dict[str, Any] = {
        "duration_s": duration,
        "rounds": rounds,
        "connections": connections,
        "auth": auth,
        "cpus": os.cpu_count(),
        "results": result,
        "isolation": isolation,
    }
    if dispatch is not None:
        report["middleware_cost"] = {**_ratios(samples, connections), "dispatch": dispatch}
    return report


def _ratios(samples: dict[str, list[dict[str, float]]], connections: int) -> dict[str, float]:
    """Uniform bridge / rpc-first bridge, each ratio taken within a round, then the median."""
    out = {}
    for c in (connections, 1):
        uniform, first = samples[f"bridge/{c}"], samples[f"bridge-rpc-first/{c}"]
        for metric in ("rps", "p50_ms", "front_cpu_us"):
            out[f"{metric}/{c}"] = statistics.median(
                u[metric] / f[metric] for u, f in zip(uniform, first, strict=True)
            )
    return out


def _isolation(
    url: str, work: Path, connections: int, duration: int, rounds: int
) -> dict[str, float]:
    """A calm tenant's latency (one connection, a request every ~5 ms) alone, then while
    another tenant floods the bridge with `connections` connections far over its rate."""
    calm, flood = _script(work, None, "calm", pause_ms=5), _script(work, None, "flood")
    alone: list[dict[str, float]] = []
    during: list[dict[str, float]] = []
    flooding: list[dict[str, float]] = []
    for _ in range(rounds):
        alone.append(wrk(url, calm, 1, duration))
        with ThreadPoolExecutor(1) as pool:
            flood_run = pool.submit(wrk, url, flood, connections, duration + 2, None, True)
            time.sleep(1)
            during.append(wrk(url, calm, 1, duration))
            flooding.append(flood_run.result())

    def med(runs: list[dict[str, float]], key: str) -> float:
        return statistics.median(r[key] for r in runs)

    return {
        "rate_per_tenant": RATE,
        "calm_alone_p50_ms": med(alone, "p50_ms"),
        "calm_alone_p99_ms": med(alone, "p99_ms"),
        "calm_flooded_p50_ms": med(during, "p50_ms"),
        "calm_flooded_p99_ms": med(during, "p99_ms"),
        "flood_rps": med(flooding, "rps"),
        "flood_refused_share": med(flooding, "refused_share"),
    }


def markdown(report: dict[str, Any]) -> str:
    r, c = report["results"], report["connections"]
    fa, br = r[f"fastapi/{c}"], r[f"bridge/{c}"]
    fa1, br1 = r["fastapi/1"], r["bridge/1"]
    rows = [
        f"| path | req/s (c={c}) | p50 | p99 | server CPU/req | req/s (c=1) | p50 (c=1) "
        "| p99 (c=1) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, big, one in (("direct FastAPI", fa, fa1), ("bridge → NATS → worker", br, br1)):
        rows.append(
            f"| {name} | {big['rps']:,.0f} | {big['p50_ms']:.2f} ms | {big['p99_ms']:.2f} ms "
            f"| {big['cpu_us']:.0f} µs | {one['rps']:,.0f} | {one['p50_ms']:.2f} ms "
            f"| {one['p99_ms']:.2f} ms |"
        )
    iso = report["isolation"]
    ratio = br["rps"] / fa["rps"]
    added = br1["p50_ms"] - fa1["p50_ms"]
    rows.append("")
    rows.append(
        f"Throughput ratio bridge/direct: **{ratio:.2f}x** (goal >= 0.75x). p50 added by the "
        f"extra hop, one caller: **{added:+.2f} ms** (goal <= 1 ms). Server-side CPU per "
        f"request, bridge path (bridge + worker + nats-server) / direct: "
        f"**{br['cpu_us'] / fa['cpu_us']:.2f}x**."
    )
    rows.append("")
    rows.append(
        f"Tenant isolation (limit {iso['rate_per_tenant']} req/s per tenant): a calm tenant "
        f"(one connection, a request every 5 ms) sees p50 {iso['calm_alone_p50_ms']:.2f} ms / p99 "
        f"{iso['calm_alone_p99_ms']:.2f} ms alone, and p50 {iso['calm_flooded_p50_ms']:.2f} ms "
        f"/ p99 {iso['calm_flooded_p99_ms']:.2f} ms while another tenant floods with {c} "
        f"connections ({iso['flood_rps']:,.0f} req/s attempted, "
        f"{iso['flood_refused_share'] * 100:.0f}% answered 429)."
    )
    cost = report.get("middleware_cost")
    if cost:
        first, first1 = r[f"bridge-rpc-first/{c}"], r["bridge-rpc-first/1"]
        rows.append("")
        rows.append(
            f"Every route through the middleware stack (uniform) / rpc routes ahead of it "
            f"(rpc-first), ratios within each round, median: req/s (c={c}) "
            f"**{cost[f'rps/{c}']:.3f}x** ({br['rps']:,.0f} vs {first['rps']:,.0f}), "
            f"bridge process CPU/req (c={c}) **{cost[f'front_cpu_us/{c}']:.3f}x** "
            f"({br['front_cpu_us']:.1f} vs {first['front_cpu_us']:.1f} µs), p50 (c=1) "
            f"**{cost['p50_ms/1']:.3f}x** ({br1['p50_ms']:.3f} vs {first1['p50_ms']:.3f} ms), "
            f"bridge process CPU/req (c=1) **{cost['front_cpu_us/1']:.3f}x** "
            f"({br1['front_cpu_us']:.1f} vs {first1['front_cpu_us']:.1f} µs)."
        )
        d = cost["dispatch"]
        rows.append("")
        rows.append(
            f"In process, no network (a request refused before NATS), CPU: uniform "
            f"{d['uniform_us']:.1f} µs, rpc-first {d['rpc-first_us']:.1f} µs per request: the "
            f"middleware stack and router add **{d['added_us']:.1f} µs**, "
            f"{d['added_us'] / br['front_cpu_us'] * 100:.1f} % of the bridge process's CPU per "
            f"forwarded request (c={c}) in this run."
        )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command")
    for name in ("worker", "bridge", "fastapi"):
        p = sub.add_parser(name)
        if name == "bridge":
            p.add_argument("--rate", type=float, default=0)
        if name != "fastapi":
            p.add_argument("--nats", required=True)
        if name != "worker":
            p.add_argument("--port", type=int, required=True)
        if name == "bridge":
            p.add_argument("--auth", action="store_true")
            p.add_argument("--rpc-first", action="store_true")
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--auth", action="store_true", help="the bridge verifies an HS256 JWT")
    parser.add_argument(
        "--middleware-cost",
        action="store_true",
        help="also run the bridge with rpc routes ahead of the middleware stack",
    )
    parser.add_argument(
        "--out", type=Path, default=Path("benchmarks/results/bridge.json"), help="JSON report"
    )
    args = parser.parse_args(argv)
    if args.command == "worker":
        serve_worker(args.nats)
    elif args.command == "bridge":
        serve_bridge(args.nats, args.port, args.auth, args.rate, args.rpc_first)
    elif args.command == "fastapi":
        serve_fastapi(args.port)
    else:
        report = run(args.duration, args.rounds, args.connections, args.auth, args.middleware_cost)
        report["load_average"] = os.getloadavg()
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
        print(markdown(report))


if __name__ == "__main__":
    main()
