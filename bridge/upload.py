"""`POST /api/v1/ingestion/upload` with a multipart form: the file streamed into the Object Store.

The seed's upload takes `multipart/form-data` with a `file` part and the fields `title`,
`metadata` (a JSON object) and `auto_ingest` (`true`/`false`); `options` (a JSON object of
ProcessingOptions) may be added. The body is parsed as it arrives (python-multipart, a push
parser): the file's bytes go to the tenant's part of the files bucket as `uploads/<uuid>` in
1 MiB chunks while the client is still sending, so a whole file is never in memory, and past
`AIFLEET_INGESTION_MAX_FILE_BYTES` the upload stops with 413 and nothing stored. Then
`ingestion.upload` registers the object (type detection, dedupe, processing) and the answer is
201 with its reply. A request with any other Content-Type takes the ordinary rpc route (a JSON
`UploadRequest` naming an object or a chunked upload).

The caller is authenticated and rate limited before a byte of the body is read, like every
route (bridge/forward.py). The body must keep arriving: each piece within the bridge's
`body_timeout`, the whole within `AIFLEET_INGESTION_UPLOAD_TIMEOUT_SECONDS`.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from bridge.errors import JSON, RequestTimeout
from bridge.forward import Exchange, Forwarder
from bridge.limits import ClientGone
from bridge.routes import Binding
from schemas.errors import BadRequest, PayloadTooLarge, RateLimited, ServiceError
from workers.runtime.client import Client
from workers.runtime.files import FileStore

FORM_FIELDS = ("title", "metadata", "auto_ingest", "options", "content_type")
# The form as the OpenAPI document shows it (bridge/openapi.py); every name is in FORM_FIELDS
# or is the file part. JSON-valued fields are parts holding JSON text.
FORM_PROPERTIES: dict[str, dict[str, Any]] = {
    "file": {
        "type": "string",
        "format": "binary",
        "contentMediaType": "application/octet-stream",
        "description": "The file's bytes; its type is detected from them (the part's file name "
        "and Content-Type only break ties between text formats).",
    },
    "title": {"type": "string", "description": "RAG document title; default: the file name."},
    "metadata": {
        "type": "object",
        "additionalProperties": True,
        "description": "A JSON object, passed on to the RAG document's metadata.",
    },
    "auto_ingest": {
        "type": "boolean",
        "default": True,
        "description": "Process and ingest into RAG right away (true or false).",
    },
    "content_type": {
        "type": "string",
        "description": "The Content-Type to declare when the file part carries none.",
    },
}
JSON_FORM_FIELDS = ("metadata", "options")


def is_upload(binding: Binding) -> bool:
    """The one rpc whose route takes a multipart form (this module) besides its JSON body."""
    return binding.rpc.component == "ingestion" and binding.rpc.op == "upload"


MAX_FIELD_BYTES = 64 * 1024
_FORM_SLACK = 1024 * 1024  # headers and fields a form carries besides the file


class UploadSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="AIFLEET_INGESTION_", extra="ignore", frozen=True)

    max_file_bytes: int = Field(100 * 1024 * 1024, ge=1, description="the largest file (413)")
    upload_timeout_seconds: float = Field(600.0, gt=0, description="a whole upload body")


class _Form:
    """What the parser found so far: small fields, the file part's headers, file data."""

    def __init__(self) -> None:
        self.fields: dict[str, bytearray] = {}
        self.file_name: str | None = None
        self.file_type = ""
        self.file_started = False
        self.file_ended = False
        self.pending = bytearray()
        self._part: str | None = None
        self._header_name = b""
        self._headers: dict[bytes, bytes] = {}
        self._is_file = False

    def callbacks(self) -> dict[str, Callable[..., None]]:
        return {
            "on_part_begin": self._begin,
            "on_header_field": self._header_field,
            "on_header_value": self._header_value,
            "on_headers_finished": self._headers_done,
            "on_part_data": self._data,
            "on_part_end": self._end,
        }

    def _begin(self) -> None:
        self._headers, self._header_name, self._part, self._is_file = {}, b"", None, False

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name = data[start:end].lower()

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._headers[self._header_name] = (
            self._headers.get(self._header_name, b"") + data[start:end]
        )

    def _headers_done(self) -> None:
        _, params = parse_options_header(self._headers.get(b"content-disposition", b""))
        name = params.get(b"name", b"").decode("utf-8", "replace")
        if name == "file":
            if self.file_started:
                raise BadRequest("the form has more than one file part", details={"field": "file"})
            self.file_started, self._is_file = True, True
            self.file_name = params.get(b"filename", b"").decode("utf-8", "replace")
            self.file_type = self._headers.get(b"content-type", b"").decode("latin-1").strip()
        elif name in FORM_FIELDS:
            self._part = name
            self.fields[name] = bytearray()
        else:
            raise BadRequest(f"unknown form field {name[:80]!r}", details={"field": name[:80]})

    def _data(self, data: bytes, start: int, end: int) -> None:
        if self._is_file:
            self.pending += data[start:end]
        elif self._part is not None:
            value = self.fields[self._part]
            value += data[start:end]
            if len(value) > MAX_FIELD_BYTES:
                raise PayloadTooLarge(
                    f"form field {self._part} is too large",
                    details={"field": self._part, "limit_bytes": MAX_FIELD_BYTES},
                )

    def _end(self) -> None:
        if self._is_file:
            self.file_ended = True


class MultipartUpload:
    """The upload route's endpoint; every other binding goes on to the forwarder."""

    def __init__(
        self,
        forwarder: Forwarder,
        client: Callable[[], Awaitable[Client]],
        settings: UploadSettings | None = None,
    ) -> None:
        self.forwarder = forwarder
        self.client = client
        self.settings = settings or UploadSettings()
        self._files: FileStore | None = None

    async def __call__(
        self, binding: Binding, path: dict[str, str], scope: Scope, receive: Receive, send: Send
    ) -> None:
        if not is_upload(binding):
            await self.forwarder(binding, path, scope, receive, send)
            return
        kind = _content_type(scope)
        if not kind.lower().startswith("multipart/form-data"):
            await self.forwarder(binding, path, scope, receive, send)
            return

        async def respond(ex: Exchange) -> Response:
            return await self._upload(binding, ex, kind)

        await self.forwarder.serve(
            binding.method, binding.openapi_path, binding.rpc, scope, receive, send, respond
        )

    async def files(self) -> FileStore:
        if self._files is None:
            client = await self.client()
            self._files = await FileStore.open(client.nc.jetstream())
        return self._files

    async def _upload(self, binding: Binding, ex: Exchange, kind: str) -> Response:
        caller = ex.caller = self.forwarder.auth.authenticate(ex.headers)
        try:
            self.forwarder.limiter.take(caller.tenant)
        except RateLimited:
            await asyncio.sleep(self.forwarder.settings.rate_limit_delay)
            raise
        _, params = parse_options_header(kind.encode("latin-1"))
        boundary = params.get(b"boundary")
        if not boundary:
            raise BadRequest("the multipart body names no boundary")
        declared = ex.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.settings.max_file_bytes + _FORM_SLACK:
            raise _too_large(self.settings.max_file_bytes)
        form = _Form()
        parser = MultipartParser(boundary, form.callbacks())  # type: ignore[arg-type]
        body = _Body(ex.receive, parser, self.forwarder.settings.body_timeout, self.settings)
        await body.until(lambda: form.file_started)
        if not form.file_started:
            raise BadRequest("the form has no file part", details={"field": "file"})
        files = await self.files()
        name = f"uploads/{uuid.uuid4()}"

        limit = self.settings.max_file_bytes

        async def chunks() -> AsyncIterator[bytes]:
            received = 0
            while True:
                if form.pending:
                    piece = bytes(form.pending)
                    form.pending.clear()
                    received += len(piece)
                    if received > limit:  # before the store's 1 MiB chunk is full
                        raise _too_large(limit)
                    yield piece
                if form.file_ended or body.done:
                    return
                await body.step()

        stored = await files.put(
            caller.tenant,
            name,
            chunks(),
            max_bytes=self.settings.max_file_bytes,
            content_type=form.file_type,
        )
        try:
            await body.until(lambda: False)  # the fields after the file, and the end
            payload = _upload_request(name, form)
            ex.deadline = time.monotonic() + self.forwarder.settings.request_timeout
            reply = await self.forwarder.request(ex, binding.rpc, payload)
        except ServiceError as exc:
            if exc.status != 504:  # a timed-out upload may still register the object
                await files.delete(caller.tenant, stored.name)
            raise
        except BaseException:
            await asyncio.shield(files.delete(caller.tenant, stored.name))
            raise
        return Response(reply.data, status_code=binding.status, media_type=JSON, headers=ex.out)


class _Body:
    """Pulls the ASGI body into the parser, a piece at a time, within the time limits."""

    def __init__(
        self, receive: Receive, parser: MultipartParser, idle: float, settings: UploadSettings
    ) -> None:
        self.receive = receive
        self.parser = parser
        self.idle = idle
        self.deadline = time.monotonic() + settings.upload_timeout_seconds
        self.done = False

    async def step(self) -> None:
        timeout = min(self.idle, self.deadline - time.monotonic())
        try:
            async with asyncio.timeout(max(timeout, 0.001)):
                message = await self.receive()
        except TimeoutError:
            raise RequestTimeout(
                "the upload stopped arriving", details={"timeout_seconds": round(timeout, 3)}
            ) from None
        if message["type"] == "http.disconnect":
            raise ClientGone
        try:
            self.parser.write(message.get("body", b""))
        except MultipartParseError as exc:
            raise BadRequest(f"malformed multipart body ({str(exc)[:120]})") from None
        if not message.get("more_body", False):
            self.done = True
            try:
                self.parser.finalize()
            except MultipartParseError as exc:
                raise BadRequest(f"malformed multipart body ({str(exc)[:120]})") from None

    async def until(self, condition: Callable[[], bool]) -> None:
        while not condition() and not self.done:
            await self.step()


def _upload_request(object_name: str, form: _Form) -> bytes:
    """The UploadRequest (proto3 JSON) for what the form said."""
    request: dict[str, Any] = {"object_name": object_name, "file_name": form.file_name or ""}
    fields = {k: bytes(v).decode("utf-8", "replace") for k, v in form.fields.items()}
    content_type = fields.get("content_type") or form.file_type
    if content_type:
        request["content_type"] = content_type
    if fields.get("title"):
        request["title"] = fields["title"]
    for name in JSON_FORM_FIELDS:
        if fields.get(name, "").strip():
            try:
                value = json.loads(fields[name])
            except ValueError:
                raise BadRequest(f"{name} is not JSON", details={"field": name}) from None
            if not isinstance(value, dict):
                raise BadRequest(f"{name} must be a JSON object", details={"field": name})
            request[name] = value
    if "auto_ingest" in fields:
        flag = fields["auto_ingest"].strip().lower()
        if flag not in ("true", "false", "1", "0"):
            raise BadRequest("auto_ingest must be true or false", details={"field": "auto_ingest"})
        request["auto_ingest"] = flag in ("true", "1")
    return json.dumps(request).encode()


def _content_type(scope: Scope) -> str:
    for name, value in scope["headers"]:
        if name == b"content-type":
            return str(value.decode("latin-1").strip())
    return ""


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge("the file is larger than allowed", details={"limit_bytes": limit})
