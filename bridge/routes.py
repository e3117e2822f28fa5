"""REST routes derived from the `google.api.http` annotations of every registered service.

Each annotated rpc becomes one `Binding` (plus one per `additional_bindings` entry): the HTTP
method, the path template compiled to a matcher over the raw (still percent-encoded) path, so a
`{key}` segment may hold an encoded `/`, the body rule (applied by bridge/mapping.py) and the
success status (`option (aifleet.v1.http_status)`, 200 when unset). An rpc without an
annotation has no route.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import quote, unquote

from google.api import annotations_pb2, http_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor, ServiceDescriptor
from google.protobuf.message import Message
from starlette.routing import BaseRoute, Match
from starlette.types import Receive, Scope, Send

from bridge.errors import MethodNotAllowed, error_response
from schemas.registry import Rpc, rpcs_of
from schemas.v1 import options_pb2

_METHODS = ("get", "put", "post", "delete", "patch")
_SCALAR_WELL_KNOWN = frozenset(
    {
        "google.protobuf.Timestamp",
        "google.protobuf.Duration",
        "google.protobuf.FieldMask",
        *(
            f"google.protobuf.{w}Value"
            for w in ("Double", "Float", "Int64", "UInt64", "Int32", "UInt32", "Bool", "String")
        ),
    }
)
MAX_QUERY_DEPTH = 3
# What `aifleet.v1.http_status` may name: created, accepted (a job), no content (a delete).
SUCCESS_STATUSES = frozenset({200, 201, 202, 204})
_PATH_SAFE = "/:@!$&'()*+,;=-._~"


@dataclass(frozen=True)
class Binding:
    """One HTTP route of one rpc."""

    rpc: Rpc
    method: str  # upper case
    template: str  # as annotated, e.g. /api/v1/cache/keys/{key}
    openapi_path: str  # /api/v1/cache/keys/{key}
    pattern: re.Pattern[str]
    variables: tuple[str, ...]  # field paths, in group order
    body: str  # "" (no body), "*" (whole message) or a top-level field name
    response_body: str
    status: int = 200  # of a successful reply; 204 sends no body
    # A top-level reply field that, when set, makes a successful reply 202 (a queued job).
    accepted_field: str = ""

    @property
    def request(self) -> Descriptor:
        return descriptor(self.rpc.request)

    @property
    def takes_body(self) -> bool:
        return self.body != ""

    def query_fields(self) -> dict[str, tuple[FieldDescriptor, ...]]:
        """Field paths a query parameter may set: what neither the path nor the body binds."""
        if self.body == "*":
            return {}
        bound = {v.split(".")[0] for v in self.variables} | ({self.body} if self.body else set())
        desc = self.request
        return {
            name: path for name, path in _scalar_paths(desc, (), 0) if path[0].name not in bound
        }


def descriptor(cls: type[Message]) -> Descriptor:
    return cast(Descriptor, cls.DESCRIPTOR)


def _scalar_paths(
    desc: Descriptor, prefix: tuple[FieldDescriptor, ...], depth: int
) -> Iterator[tuple[str, tuple[FieldDescriptor, ...]]]:
    for field in desc.fields:
        path = (*prefix, field)
        sub = field.message_type
        if sub is None or sub.full_name in _SCALAR_WELL_KNOWN:
            if not (field.is_repeated and sub is not None):
                yield ".".join(f.name for f in path), path
        elif not field.is_repeated and depth + 1 < MAX_QUERY_DEPTH and not _is_map(field):
            yield from _scalar_paths(sub, path, depth + 1)


def _is_map(field: FieldDescriptor) -> bool:
    sub = field.message_type
    return bool(field.is_repeated and sub is not None and sub.GetOptions().map_entry)


# -- annotations ------------------------------------------------------------------------------


def bindings(services: Iterable[ServiceDescriptor]) -> list[Binding]:
    """Every route of every service; a malformed annotation fails here, at start."""
    out: list[Binding] = []
    for service in services:
        for rpc in rpcs_of(service).values():
            options = rpc.method.GetOptions()
            if not options.HasExtension(annotations_pb2.http):
                continue
            rule = options.Extensions[annotations_pb2.http]
            for one in (rule, *rule.additional_bindings):
                out.append(_binding(rpc, one))
    seen: dict[tuple[str, str], str] = {}
    for b in out:
        where = f"{b.rpc.component}.{b.rpc.op}"
        other = seen.setdefault((b.method, b.openapi_path), where)
        if other != where:
            raise ValueError(f"{b.method} {b.template}: declared by both {other} and {where}")
    return out


def _binding(rpc: Rpc, rule: http_pb2.HttpRule) -> Binding:
    kind = rule.WhichOneof("pattern")
    if kind in _METHODS:
        method, template = kind.upper(), getattr(rule, kind)
    elif kind == "custom":
        method, template = rule.custom.kind.upper(), rule.custom.path
    else:
        raise ValueError(f"{rpc.component}.{rpc.op}: http rule without a pattern")
    pattern, variables, openapi_path = compile_template(template)
    desc = descriptor(rpc.request)
    for var in variables:
        leaf = resolve(desc, var.split("."))[-1]
        if leaf.is_repeated or (leaf.message_type is not None):
            raise ValueError(f"{template}: path variable {var} must be a singular scalar field")
    if rule.body not in ("", "*") and rule.body not in desc.fields_by_name:
        raise ValueError(f"{template}: body field {rule.body!r} is not in {desc.full_name}")
    return Binding(
        rpc=rpc,
        method=method,
        template=template,
        openapi_path=openapi_path,
        pattern=pattern,
        variables=tuple(variables),
        body=rule.body,
        response_body=rule.response_body,
        status=success_status(rpc),
        accepted_field=accepted_field(rpc),
    )


def success_status(rpc: Rpc) -> int:
    """The rpc's `aifleet.v1.http_status` (200 when unset); one the bridge cannot answer with
    fails at start."""
    status = rpc.method.GetOptions().Extensions[options_pb2.http_status] or 200
    where = f"{rpc.component}.{rpc.op}"
    if status not in SUCCESS_STATUSES:
        allowed = ", ".join(map(str, sorted(SUCCESS_STATUSES)))
        raise ValueError(f"{where}: http_status {status} is not one of {allowed}")
    if rpc.streaming and status != 200:
        raise ValueError(f"{where}: a streaming rpc answers 200 (Server-Sent Events)")
    return status


def accepted_field(rpc: Rpc) -> str:
    """The rpc's `aifleet.v1.accepted_when_set` ("" when unset); a field the reply does not
    have, a repeated or message field, a streaming rpc or a 204 rpc fails at start."""
    name = str(rpc.method.GetOptions().Extensions[options_pb2.accepted_when_set])
    if not name:
        return ""
    where = f"{rpc.component}.{rpc.op}"
    field = descriptor(rpc.response).fields_by_name.get(name)
    if field is None or field.is_repeated or field.message_type is not None:
        raise ValueError(f"{where}: accepted_when_set {name!r} is not a scalar reply field")
    if rpc.streaming or success_status(rpc) == 204:
        raise ValueError(f"{where}: accepted_when_set needs a unary rpc whose reply has a body")
    return name


def resolve(desc: Descriptor, names: list[str]) -> tuple[FieldDescriptor, ...]:
    """Field descriptors along a dotted path (proto or JSON names); ValueError if none."""
    path: list[FieldDescriptor] = []
    current: Descriptor | None = desc
    for name in names:
        if current is None:
            raise ValueError(f"{'.'.join(names)}: {path[-1].name} is not a message")
        field = current.fields_by_name.get(name) or _by_json_name(current, name)
        if field is None:
            raise ValueError(f"{'.'.join(names)}: no field {name!r} in {current.full_name}")
        path.append(field)
        current = field.message_type
    return tuple(path)


def _by_json_name(desc: Descriptor, name: str) -> FieldDescriptor | None:
    return next((f for f in desc.fields if f.json_name == name), None)


_TOKEN = re.compile(r"\{[^}]*\}|[^/]+")


def compile_template(template: str) -> tuple[re.Pattern[str], list[str], str]:
    """`/v1/{name=shelves/*}/books:list` -> (regex over the raw path, variables, OpenAPI path)."""
    if not template.startswith("/"):
        raise ValueError(f"path template {template!r} must start with '/'")
    body, verb = template, ""
    colon = template.find(":", max(template.rfind("/"), template.rfind("}")) + 1)
    if colon != -1:
        body, verb = template[:colon], template[colon:]
    regex: list[str] = []
    variables: list[str] = []
    openapi: list[str] = []
    for token in _TOKEN.findall(body):
        if token.startswith("{"):
            name, _, sub = token[1:-1].partition("=")
            if not re.fullmatch(r"[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*", name):
                raise ValueError(f"{template}: bad variable {token}")
            group = f"v{len(variables)}"
            regex.append(f"(?P<{group}>{_segments(sub or '*', template)})")
            variables.append(name)
            openapi.append("{" + name + "}")
        else:
            regex.append(_segments(token, template))
            openapi.append(token)
    regex_text = "/" + "/".join(regex) + re.escape(verb)
    return re.compile(regex_text + r"\Z"), variables, "/" + "/".join(openapi) + verb


def _segments(spec: str, template: str) -> str:
    parts = []
    for seg in spec.split("/"):
        if seg == "*":
            parts.append(r"[^/]+")
        elif seg == "**":
            parts.append(r".+")
        elif seg and "{" not in seg and "}" not in seg:
            parts.append(re.escape(seg))
        else:
            raise ValueError(f"{template}: bad segment {seg!r}")
    return "/".join(parts)


# -- the Starlette route ----------------------------------------------------------------------

Endpoint = Callable[[Binding, dict[str, str], Scope, Receive, Send], Any]
_BINDING = "aifleet.binding"  # the scope key naming the binding a request matched


class RpcRoutes(BaseRoute):
    """Every rpc route as one Starlette route: the raw path is read once and tried against each
    binding's pattern in declaration order. The first binding with the request's method is a
    FULL match; a path that only matches with another method is PARTIAL (405 naming the allowed
    methods), as Starlette's router expects."""

    def __init__(self, all_bindings: Iterable[Binding], endpoint: Endpoint) -> None:
        self.bindings = tuple(all_bindings)
        self.endpoint = endpoint
        methods: dict[str, set[str]] = {}
        for b in self.bindings:
            methods.setdefault(b.openapi_path, set()).add(b.method)
        self.allow = {path: ", ".join(sorted(m)) for path, m in methods.items()}

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope["type"] != "http":
            return Match.NONE, {}
        raw = scope.get("raw_path")  # None on Lambda (Mangum): only the decoded path is known
        path = raw.decode("latin-1") if raw else quote(scope["path"], safe=_PATH_SAFE)
        root = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :]
        method = scope["method"]
        partial: Scope | None = None
        for b in self.bindings:
            found = b.pattern.match(path)
            if found is None:
                continue
            if b.method == method:
                return Match.FULL, self._child(b, found)
            if partial is None:
                partial = self._child(b, found)
        return (Match.PARTIAL, partial) if partial is not None else (Match.NONE, {})

    def _child(self, b: Binding, found: re.Match[str]) -> Scope:
        values = {var: unquote(found.group(f"v{i}")) for i, var in enumerate(b.variables)}
        return {"endpoint": self.endpoint, "path_params": values, _BINDING: b}

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        b: Binding = scope[_BINDING]
        if scope["method"] != b.method:
            allow = self.allow[b.openapi_path]
            response = error_response(
                MethodNotAllowed(f"this path takes {allow}"), headers={"Allow": allow}
            )
            await response(scope, receive, send)
            return
        await self.endpoint(b, scope["path_params"], scope, receive, send)
