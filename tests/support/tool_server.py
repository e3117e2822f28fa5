"""A real HTTP server for agent HTTP tools in tests: counts every call and records it.

Routes: `/echo/<anything>` answers JSON with the path, query, body and the headers an agent
sends (Idempotency-Key, secrets); `/big?bytes=N` a body of N bytes; `/slow?seconds=S` after S
seconds; `/redirect?to=URL` a 302 to URL. Served by the standard library's threading server
in a background thread, so it answers while the test's event loop waits.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass(frozen=True)
class Received:
    method: str
    path: str
    query: dict[str, list[str]]
    body: Any
    headers: dict[str, str]


class ToolServer:
    def __init__(self) -> None:
        self.calls: list[Received] = []
        self._lock = threading.Lock()
        server = self
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(server))
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def record(self, received: Received) -> None:
        with self._lock:
            self.calls.append(received)

    def count(self, path_prefix: str = "/") -> int:
        with self._lock:
            return sum(1 for c in self.calls if c.path.startswith(path_prefix))

    def __enter__(self) -> ToolServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


def _handler(server: ToolServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            return

        def _serve(self) -> None:
            parts = urlsplit(self.path)
            query = parse_qs(parts.query)
            length = int(self.headers.get("content-length") or 0)
            raw = self.rfile.read(length) if length else b""
            body = json.loads(raw) if raw else None
            server.record(Received(self.command, parts.path, query, body, dict(self.headers)))
            if parts.path == "/redirect":
                self.send_response(302)
                self.send_header("Location", query["to"][0])
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if parts.path == "/slow":
                time.sleep(float(query["seconds"][0]))
            if parts.path == "/big":
                data = b"x" * int(query["bytes"][0])
                content_type = "text/plain"
            else:
                reply = {
                    "method": self.command,
                    "path": parts.path,
                    "query": query,
                    "body": body,
                    "idempotency_key": self.headers.get("Idempotency-Key"),
                    "authorization": self.headers.get("Authorization"),
                }
                data, content_type = json.dumps(reply).encode(), "application/json"
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

    return Handler
