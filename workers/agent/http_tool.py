"""HTTP tools: one declarative request, made with limits a hostile model or page cannot lift.

- The URL's host, and the host of every redirect, must be on the tool's allowlist.
- Every address a host resolves to is checked when the connection is made (so also after a
  redirect, and a DNS answer cannot change between the check and the connect): private,
  loopback, link-local (169.254.169.254), multicast and reserved addresses are refused unless
  the tool allows private addresses. Proxies from the environment are not used.
- Secrets are headers whose values come from `AIFLEET_AGENT_SECRET_*` environment variables,
  read at call time; they are never stored, shown or given to the model.
- The whole call has a time limit, the body a size limit (read as a stream, cut off past it).
- Each call carries an `Idempotency-Key` derived from the run and the call, so a call repeated
  after a crash is recognisable by a server that honours the header.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urljoin, urlsplit

import httpcore
import httpx

from workers.agent.definitions import host_allowed, url_placeholders
from workers.agent.loop import ToolResult

MAX_REDIRECTS = 3
USER_AGENT = "aifleet-agent/1"


class AddressRefused(httpcore.ConnectError):
    """The host resolves to an address the tool may not reach."""


def address_allowed(address: str, *, allow_private: bool) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_unspecified or ip.is_multicast:
        return False
    return allow_private or ip.is_global


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend, connecting only to addresses `address_allowed` accepts: the
    host is resolved here and the connection made to the checked address itself."""

    def __init__(self, *, allow_private: bool) -> None:
        self._allow_private = allow_private
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                host, port, type=socket.SOCK_STREAM
            )
        except OSError as exc:
            raise httpcore.ConnectError(f"cannot resolve {host}") from exc
        addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
        refused = [
            a for a in addresses if not address_allowed(a, allow_private=self._allow_private)
        ]
        if refused or not addresses:
            raise AddressRefused(f"{host} resolves to a non-public address ({', '.join(refused)})")
        last: Exception | None = None
        for address in addresses:
            try:
                return await self._inner.connect_tcp(
                    address,
                    port,
                    timeout=timeout,
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except httpcore.ConnectError as exc:
                last = exc
        raise last or httpcore.ConnectError(f"cannot connect to {host}")

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.AsyncNetworkStream:
        raise AddressRefused("unix sockets are not reachable from tools")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class GuardedTransport(httpx.AsyncHTTPTransport):
    def __init__(self, *, allow_private: bool) -> None:
        super().__init__(trust_env=False)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(trust_env=False),
            network_backend=GuardedBackend(allow_private=allow_private),
            max_connections=4,
        )


@dataclass(frozen=True)
class HttpLimits:
    default_timeout: float = 10.0
    max_timeout: float = 60.0
    default_response_bytes: int = 256 * 1024
    max_response_bytes: int = 4 * 1024 * 1024


def build_request(
    spec: dict[str, Any], arguments: dict[str, Any]
) -> tuple[str, str, dict[str, Any]]:
    """(method, url, httpx keyword arguments) of a call: placeholders filled percent-encoded,
    the other arguments as query parameters (GET, DELETE) or the JSON body."""
    method, template = spec["method"], spec["url"]
    used = set(url_placeholders(template))
    url = template
    for name in used:
        value = arguments.get(name, "")
        text = value if isinstance(value, str) else json.dumps(value)
        url = url.replace("{" + name + "}", quote(text, safe=""))
    rest = {k: v for k, v in arguments.items() if k not in used}
    extra: dict[str, Any] = {}
    if method in ("GET", "DELETE"):
        if rest:
            extra["params"] = {
                k: v if isinstance(v, str) else json.dumps(v) for k, v in rest.items()
            }
    else:
        extra["json"] = rest
    return method, url, extra


def secret_headers(spec: dict[str, Any]) -> dict[str, str] | str:
    """The secret headers' values from the environment, or the reason one is missing."""
    values = {}
    for header, variable in spec.get("secret_headers", {}).items():
        value = os.environ.get(variable)
        if not value:
            return f"the secret for header {header} is not configured"
        values[header] = value
    return values


async def call_http(
    spec: dict[str, Any], arguments: dict[str, Any], *, idempotency_key: str, limits: HttpLimits
) -> ToolResult:
    """Make the call; every failure is a result the model can read, never an exception."""
    secrets = secret_headers(spec)
    if isinstance(secrets, str):
        return ToolResult(secrets, is_error=True)
    method, url, extra = build_request(spec, arguments)
    timeout = min(spec.get("timeout_seconds") or limits.default_timeout, limits.max_timeout)
    max_bytes = min(
        spec.get("max_response_bytes") or limits.default_response_bytes, limits.max_response_bytes
    )
    headers = {
        "User-Agent": USER_AGENT,
        **spec.get("headers", {}),
        **secrets,
        "Idempotency-Key": idempotency_key,
    }
    transport = GuardedTransport(allow_private=bool(spec.get("allow_private_addresses")))
    try:
        async with (
            asyncio.timeout(timeout),
            httpx.AsyncClient(transport=transport, timeout=timeout, trust_env=False) as client,
        ):
            for _ in range(MAX_REDIRECTS + 1):
                host = urlsplit(url).hostname or ""
                if not host_allowed(host, spec["allowed_hosts"]):
                    return ToolResult(
                        f"host {host[:100]} is not allowed for this tool", is_error=True
                    )
                request = client.build_request(method, url, headers=headers, **extra)
                response = await client.send(request, stream=True)
                try:
                    if response.is_redirect and "location" in response.headers:
                        url = urljoin(url, response.headers["location"])
                        if response.status_code in (301, 302, 303):
                            method, extra = "GET", {}
                        continue
                    body = await _read(response, max_bytes)
                finally:
                    await response.aclose()
                if body is None:
                    return ToolResult(
                        f"the response is larger than {max_bytes} bytes", is_error=True
                    )
                return _result(response, body)
            return ToolResult(f"more than {MAX_REDIRECTS} redirects", is_error=True)
    except TimeoutError:
        return ToolResult(f"no response within {timeout:g}s", is_error=True)
    except httpx.HTTPError as exc:
        refused = _refusal(exc)
        if refused is not None:
            return ToolResult(f"refused: {refused}", is_error=True)
        return ToolResult(f"the request failed: {type(exc).__name__}", is_error=True)


def _refusal(exc: BaseException) -> AddressRefused | None:
    """The address refusal behind an httpx error (httpx re-raises httpcore's errors as its own)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, AddressRefused):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


async def _read(response: httpx.Response, max_bytes: int) -> bytes | None:
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        return None
    chunks, size = [], 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > max_bytes:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _result(response: httpx.Response, body: bytes) -> ToolResult:
    text = body.decode(response.encoding or "utf-8", errors="replace")
    content: Any = text
    if "json" in response.headers.get("content-type", ""):
        try:
            content = json.loads(text)
        except ValueError:
            content = text
    payload = json.dumps({"status": response.status_code, "body": content}, ensure_ascii=False)
    return ToolResult(payload, is_error=response.status_code >= 400)
