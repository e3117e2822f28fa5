"""A local OpenAI-compatible HTTP server: the one thing faked in the tests.

litellm and the openai client reach it over real HTTP. Answers are pure functions of the request
and faults are scripted per `model`, so one server stands in for several deployments ("primary"
fails while "secondary" answers).

Usage is counted by a fixed rule, not a tokenizer: prompt_tokens = whitespace-separated words of
every message's text + 4 per message; completion_tokens = words of each choice's content (or of
its tool-call arguments); embeddings count the words of each input (a token array: its length).

In-process, uvicorn runs in a background thread on its own event loop: the fake keeps answering
while the test's loop is busy or blocked (a synchronous client call, CPU-bound work), scripted
delays are timed on a loop the client's load cannot stall, and sync code (benchmarks) uses it
the same way. A fault is set before the request it concerns is sent, and a request is logged
before it is answered, so tests never wait for the fake. A "close" stream break makes uvicorn log
"Exception in ASGI application" (StreamBroken): that is the intended drop.

As a process: `python -m tests.support.fake_openai --port N` prints `ready <port>`, and is
scripted over HTTP (`POST /_control/faults`, `POST /_control/reset`, `GET /_control/requests`),
which `FakeOpenAIProcess` wraps in the same methods as `FakeOpenAI`. Benchmarks use the process:
an in-process fake would share the GIL with what is being measured.
"""

from __future__ import annotations

import abc
import argparse
import asyncio
import base64
import dataclasses
import hashlib
import json
import math
import re
import socket
import struct
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any, Literal, Self

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

MODELS = ("primary", "secondary")
# OpenAI's error `type` and `code` by status; anything else is a server_error.
ERRORS: dict[int, tuple[str, str | None]] = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    404: ("invalid_request_error", "model_not_found"),
    429: ("requests", "rate_limit_exceeded"),
}


@dataclasses.dataclass
class Fault:
    """What the next `times` requests for a model meet (`times=None`: every one until reset)."""

    status: int | None = None  # answer with this HTTP error and OpenAI's error body
    delay: float = 0.0  # seconds before answering: client timeouts
    chunk_delay: float = 0.0  # seconds between stream chunks: time to first token vs total
    break_after: int | None = None  # a stream fails after this many chunks...
    break_with: Literal["close", "error"] = "close"  # ...by a dropped connection or an error
    retry_after: int = 1  # Retry-After header of a 429
    times: int | None = 1
    # Answer with this assistant message instead of the default one: {"content": ...} and/or
    # {"tool_calls": [{"id", "type": "function", "function": {"name", "arguments"}}]} (a model
    # scripted turn by turn, e.g. as an attacker).
    reply: dict[str, Any] | None = None


@dataclasses.dataclass(frozen=True)
class Seen:
    """One request as the fake received it."""

    path: str
    model: str
    body: dict[str, Any]
    authorization: str | None


class Script:
    """Faults by model ("*": any model) and the request log, shared by server and test threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: dict[str, list[Fault]] = {}
        self._seen: list[Seen] = []

    def add(self, model: str, fault: Fault) -> None:
        with self._lock:
            self._faults.setdefault(model, []).append(dataclasses.replace(fault))

    def reset(self) -> None:
        with self._lock:
            self._faults.clear()
            self._seen.clear()

    def requests(self, model: str | None = None, *, path: str | None = None) -> list[Seen]:
        with self._lock:
            return [s for s in self._seen if model in (None, s.model) and path in (None, s.path)]

    def take(self, seen: Seen) -> Fault | None:
        """Log a request and use up the first fault scripted for its model (else for "*")."""
        with self._lock:
            self._seen.append(seen)
            for queue in (self._faults.get(seen.model), self._faults.get("*")):
                if queue:
                    fault = queue[0]
                    if fault.times is not None:
                        fault.times -= 1
                        if fault.times <= 0:
                            queue.pop(0)
                    return fault
            return None


class StreamBroken(Exception):
    """Raised inside a stream so uvicorn drops the connection mid-body, as a crashed peer would."""


def unit_vector(text: str, dimensions: int) -> list[float]:
    """The embedding of `text`: a hash spread over `dimensions` floats, scaled to length 1."""
    digest = hashlib.shake_256(text.encode()).digest(4 * dimensions)
    raw = [n / 2**31 - 1 for n in struct.unpack(f"<{dimensions}I", digest)]
    norm = math.sqrt(sum(x * x for x in raw)) or 1.0
    return [x / norm for x in raw]


def words(text: str) -> list[str]:
    """Stream pieces: each word with the whitespace before it; they concatenate back to `text`."""
    return re.findall(r"\s*\S+\s*$|\s*\S+", text)


def example(schema: dict[str, Any], name: str = "value") -> Any:
    """A deterministic value of the schema's type; objects get their required properties only."""
    if schema.get("enum"):
        return schema["enum"][0]
    kind = schema.get("type", "object")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object":
        properties = schema.get("properties", {})
        return {key: example(properties.get(key, {}), key) for key in schema.get("required", [])}
    if kind == "array":
        return [example(schema.get("items", {}), name)]
    return {"string": name, "integer": 1, "number": 1.5, "boolean": True}.get(kind)


def _text(message: dict[str, Any]) -> str:
    content = message.get("content") or ""
    if isinstance(content, list):
        return " ".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return str(content)


def _answer(body: dict[str, Any]) -> tuple[dict[str, Any], str, str]:
    """The assistant message, its finish_reason, and the text its completion tokens count."""
    user = next((_text(m) for m in reversed(body["messages"]) if m.get("role") == "user"), "")
    tools, choice = body.get("tools") or [], body.get("tool_choice")
    if tools and choice != "none":
        wanted = choice["function"]["name"] if isinstance(choice, dict) else None
        tool = next(t["function"] for t in tools if wanted in (None, t["function"]["name"]))
        arguments = json.dumps(example(tool.get("parameters", {})))
        function = {"name": tool["name"], "arguments": arguments}
        call = {"id": "call_0", "type": "function", "function": function}
        return {"role": "assistant", "content": None, "tool_calls": [call]}, "tool_calls", arguments
    fmt = body.get("response_format") or {}
    if fmt.get("type") == "json_object":
        content = json.dumps({"echo": user})
    elif fmt.get("type") == "json_schema":
        content = json.dumps(example(fmt["json_schema"].get("schema", {})))
    else:
        content = f"echo: {user}"
    stops = body.get("stop") or []
    for stop in [stops] if isinstance(stops, str) else stops:
        content = content.split(stop, 1)[0]
    finish, limit = "stop", body.get("max_completion_tokens") or body.get("max_tokens")
    if limit is not None and len(words(content)) > limit:
        content, finish = "".join(words(content)[:limit]), "length"
    return {"role": "assistant", "content": content, "refusal": None}, finish, content


def _scripted(reply: dict[str, Any]) -> tuple[dict[str, Any], str, str]:
    """A scripted assistant message, its finish_reason and the text its tokens count."""
    calls = reply.get("tool_calls") or []
    message = {
        "role": "assistant",
        "content": reply.get("content"),
        **({"tool_calls": calls} if calls else {}),
    }
    counted = (reply.get("content") or "") + "".join(c["function"]["arguments"] for c in calls)
    return message, "tool_calls" if calls else "stop", counted


def _error(status: int, retry_after: int) -> JSONResponse:
    kind, code = ERRORS.get(status, ("server_error", None))
    error = {"message": f"scripted {status}", "type": kind, "param": None, "code": code}
    headers = {"retry-after": str(retry_after)} if status == 429 else None
    return JSONResponse({"error": error}, status, headers=headers)


async def _arrive(request: Request, body: dict[str, Any]) -> tuple[Fault | None, Response | None]:
    """Log the request, then play its fault: a delay, and an error response to return instead."""
    script: Script = request.app.state.script
    seen = Seen(
        request.url.path, str(body.get("model", "")), body, request.headers.get("authorization")
    )
    fault = script.take(seen)
    if fault and fault.delay:
        await asyncio.sleep(fault.delay)
    return fault, _error(fault.status, fault.retry_after) if fault and fault.status else None


async def chat_completions(request: Request) -> Response:
    body = await request.json()
    fault, failed = await _arrive(request, body)
    if failed:
        return failed
    message, finish, counted = _scripted(fault.reply) if fault and fault.reply else _answer(body)
    n = body.get("n") or 1
    prompt = sum(len(_text(m).split()) + 4 for m in body["messages"])
    completion = n * len(words(counted))
    usage = {"prompt_tokens": prompt, "completion_tokens": completion}
    usage["total_tokens"] = prompt + completion
    head = {"id": f"chatcmpl-{uuid.uuid4().hex}", "created": int(time.time())}
    head |= {"model": body["model"], "system_fingerprint": "fp_fake"}
    if body.get("stream"):
        with_usage = (body.get("stream_options") or {}).get("include_usage")
        chunks = _chunks(head, message, finish, n, usage if with_usage else None)
        return StreamingResponse(_sse(chunks, fault), media_type="text/event-stream")
    choice = {"message": message, "logprobs": None, "finish_reason": finish}
    choices = [{"index": i, **choice} for i in range(n)]
    return JSONResponse({**head, "object": "chat.completion", "choices": choices, "usage": usage})


def _chunks(
    head: dict[str, Any], message: dict[str, Any], finish: str, n: int, usage: Any
) -> list[dict[str, Any]]:
    """OpenAI's chunks: per choice the role, one word (or the whole tool call) per chunk, the
    finish_reason; with `usage`, a last chunk without choices carries it."""
    head = {**head, "object": "chat.completion.chunk", **({"usage": None} if usage else {})}
    deltas: list[dict[str, Any]] = [{"role": "assistant", "content": "", "refusal": None}]
    if message.get("tool_calls"):
        deltas += [{"tool_calls": [{"index": i, **c}]} for i, c in enumerate(message["tool_calls"])]
    else:
        deltas += [{"content": piece} for piece in words(message["content"])]
    steps: list[tuple[dict[str, Any], str | None]] = [(delta, None) for delta in deltas] + [
        ({}, finish)
    ]
    chunks = [
        {**head, "choices": [{"index": i, "delta": d, "logprobs": None, "finish_reason": f}]}
        for i in range(n)
        for d, f in steps
    ]
    return chunks + ([{**head, "choices": [], "usage": usage}] if usage else [])


async def _sse(chunks: list[dict[str, Any]], fault: Fault | None) -> AsyncIterator[str]:
    for sent, data in enumerate(chunks):
        if fault and sent == fault.break_after:
            if fault.break_with == "close":
                raise StreamBroken(f"scripted break after {sent} chunks")
            error = {"message": "scripted stream error", "type": "server_error", "code": None}
            yield f"data: {json.dumps({'error': error})}\n\n"
            return
        if sent and fault and fault.chunk_delay:
            await asyncio.sleep(fault.chunk_delay)
        yield f"data: {json.dumps(data)}\n\n"
    yield "data: [DONE]\n\n"


async def embeddings(request: Request) -> Response:
    body = await request.json()
    _, failed = await _arrive(request, body)
    if failed:
        return failed
    inputs = body["input"]
    if isinstance(inputs, str) or (inputs and isinstance(inputs[0], int)):
        inputs = [inputs]
    texts = [item if isinstance(item, str) else " ".join(map(str, item)) for item in inputs]
    dimensions = body.get("dimensions") or request.app.state.dimensions
    data = []
    for i, text in enumerate(texts):
        vector: Any = unit_vector(text, dimensions)
        if body.get("encoding_format") == "base64":  # the openai client's default
            vector = base64.b64encode(struct.pack(f"<{dimensions}f", *vector)).decode()
        data.append({"object": "embedding", "index": i, "embedding": vector})
    tokens = sum(len(text.split()) for text in texts)
    usage = {"prompt_tokens": tokens, "total_tokens": tokens}
    return JSONResponse({"object": "list", "data": data, "model": body["model"], "usage": usage})


async def models(request: Request) -> Response:
    _, failed = await _arrive(request, {})
    listed = [{"id": m, "object": "model", "created": 0, "owned_by": "fake"} for m in MODELS]
    return failed or JSONResponse({"object": "list", "data": listed})


async def control(request: Request) -> Response:
    """`POST faults` {"model", **Fault}, `POST reset`, `GET requests?model=&path=`."""
    script: Script = request.app.state.script
    if request.path_params["action"] == "requests":
        query = request.query_params
        seen = script.requests(query.get("model"), path=query.get("path"))
        return JSONResponse([dataclasses.asdict(s) for s in seen])
    if request.path_params["action"] == "faults":
        fields = await request.json()
        script.add(fields.pop("model"), Fault(**fields))
    else:
        script.reset()
    return Response(status_code=204)


def app(script: Script, *, dimensions: int = 8) -> Starlette:
    routes = [
        Route("/v1/chat/completions", chat_completions, methods=["POST"]),
        Route("/v1/embeddings", embeddings, methods=["POST"]),
        Route("/v1/models", models),
        Route("/_control/{action:str}", control, methods=["GET", "POST"]),
    ]
    served = Starlette(routes=routes)
    served.state.script, served.state.dimensions = script, dimensions
    return served


def listening(port: int) -> socket.socket:
    """A loopback socket already accepting: clients may connect before uvicorn takes it over."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(1024)
    return sock


class Served(abc.ABC):
    """`async with` starts and stops the fake without blocking the loop; sync code calls
    start() and stop()."""

    port: int = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @abc.abstractmethod
    def start(self) -> None: ...

    @abc.abstractmethod
    def stop(self) -> None: ...

    async def __aenter__(self) -> Self:
        await asyncio.to_thread(self.start)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.to_thread(self.stop)


class FakeOpenAI(Served):
    """The fake in this process, served by uvicorn from a background thread."""

    def __init__(self, *, port: int = 0, dimensions: int = 8) -> None:
        self._script = Script()
        self._wanted, self._dimensions = port, dimensions
        self._thread: threading.Thread | None = None
        self._server: uvicorn.Server | None = None

    def fault(self, model: str, fault: Fault) -> None:
        self._script.add(model, fault)

    def reset(self) -> None:
        self._script.reset()

    def requests(self, model: str | None = None, *, path: str | None = None) -> list[Seen]:
        return self._script.requests(model, path=path)

    def start(self) -> None:
        sock = listening(self._wanted)
        self.port = sock.getsockname()[1]
        asgi = app(self._script, dimensions=self._dimensions)
        config = uvicorn.Config(asgi, log_config=None, access_log=False, lifespan="off")
        server = self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name="fake-openai", daemon=True
        )
        self._thread.start()
        while not server.started:
            if not self._thread.is_alive():
                raise RuntimeError("the fake OpenAI server failed to start")
            time.sleep(0.002)

    def stop(self) -> None:
        """Stop at once: requests still sleeping on a scripted delay are cancelled."""
        if self._server and self._thread:
            self._server.should_exit = self._server.force_exit = True
            self._thread.join()


class FakeOpenAIProcess(Served):
    """The fake as a child process (benchmarks, several gateway processes), scripted over HTTP."""

    def __init__(self, *, port: int = 0, dimensions: int = 8) -> None:
        self._args = ["--port", str(port), "--dimensions", str(dimensions)]
        self._process: subprocess.Popen[str] | None = None
        self._control: httpx.Client | None = None

    def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        assert self._control is not None, "start the fake first"
        return self._control.request(method, path, **kwargs).raise_for_status()

    def fault(self, model: str, fault: Fault) -> None:
        self._call("POST", "/faults", json={"model": model, **dataclasses.asdict(fault)})

    def reset(self) -> None:
        self._call("POST", "/reset")

    def requests(self, model: str | None = None, *, path: str | None = None) -> list[Seen]:
        query = {k: v for k, v in (("model", model), ("path", path)) if v is not None}
        return [Seen(**s) for s in self._call("GET", "/requests", params=query).json()]

    def start(self) -> None:
        command = [sys.executable, "-m", "tests.support.fake_openai", *self._args]
        root = Path(__file__).resolve().parents[2]
        self._process = subprocess.Popen(command, cwd=root, stdout=subprocess.PIPE, text=True)
        assert self._process.stdout is not None
        line = self._process.stdout.readline()
        if not line.startswith("ready "):
            self.stop()
            raise RuntimeError(f"the fake OpenAI process did not start: {line!r}")
        self.port = int(line.split()[1])
        self._control = httpx.Client(base_url=f"http://127.0.0.1:{self.port}/_control")

    def stop(self) -> None:
        if self._control:
            self._control.close()
        if self._process:
            self._process.terminate()
            self._process.wait(timeout=10)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="A local OpenAI-compatible server for tests.")
    parser.add_argument("--port", type=int, default=0, help="0: a free port")
    parser.add_argument("--dimensions", type=int, default=8, help="embedding dimensions")
    args = parser.parse_args(argv)
    sock = listening(args.port)
    asgi = app(Script(), dimensions=args.dimensions)
    config = uvicorn.Config(
        asgi, log_level="warning", access_log=False, lifespan="off", timeout_graceful_shutdown=1
    )
    print(f"ready {sock.getsockname()[1]}", flush=True)
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    main()
