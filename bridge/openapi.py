"""`/openapi.json` (OpenAPI 3.1) built from the proto descriptors (bridge/docs.py serves it).

Schemas follow the proto3 JSON mapping the bridge speaks: 64-bit integers as strings (numbers
accepted), bytes as base64, enums by name, well-known types in their JSON forms, unknown fields
refused (`additionalProperties: false`). Field names are the .proto names, as replies print
them. The proto comments are the text: an rpc's first sentence its summary, the whole comment
its description, a service's comment (else its file's) the description of its component's tag,
field and message comments the schemas' descriptions. Every operation documents the `Error`
responses. The caller's identity is a security scheme, so an explorer asks for it once: the
bearer JWT when the bridge checks tokens, the `X-Tenant-ID` header in dev mode.
"""

from __future__ import annotations

import re
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor

from bridge.auth import HEADER_TENANT
from bridge.config import BridgeSettings
from bridge.protodoc import comments
from bridge.routes import Binding, descriptor, resolve
from bridge.upload import FORM_PROPERTIES, JSON_FORM_FIELDS, is_upload
from schemas.v1.common_pb2 import Error
from subjects import HEADER_REQUEST_ID, HEADER_TIMEOUT_MS

REF = "#/components/schemas/"
_F = FieldDescriptor
_INT32 = {"type": "integer", "format": "int32", "minimum": -(2**31), "maximum": 2**31 - 1}
_UINT32 = {"type": "integer", "format": "uint32", "minimum": 0, "maximum": 2**32 - 1}
_DECIMAL = r"^-?[0-9]+$"
_INT64 = {
    "anyOf": [
        {"type": "integer", "minimum": -(2**63), "maximum": 2**63 - 1},
        {"type": "string", "pattern": _DECIMAL},
    ],
    "format": "int64",
}
_UINT64 = {
    "anyOf": [{"type": "integer", "minimum": 0, "maximum": 2**64 - 1}, {"type": "string"}],
    "format": "uint64",
}
_FLOAT = {
    "anyOf": [{"type": "number"}, {"type": "string", "enum": ["NaN", "Infinity", "-Infinity"]}]
}
_SCALARS: dict[int, dict[str, Any]] = {
    _F.TYPE_DOUBLE: _FLOAT,
    _F.TYPE_FLOAT: _FLOAT,
    _F.TYPE_INT32: _INT32,
    _F.TYPE_SINT32: _INT32,
    _F.TYPE_SFIXED32: _INT32,
    _F.TYPE_UINT32: _UINT32,
    _F.TYPE_FIXED32: _UINT32,
    _F.TYPE_INT64: _INT64,
    _F.TYPE_SINT64: _INT64,
    _F.TYPE_SFIXED64: _INT64,
    _F.TYPE_UINT64: _UINT64,
    _F.TYPE_FIXED64: _UINT64,
    _F.TYPE_BOOL: {"type": "boolean"},
    _F.TYPE_STRING: {"type": "string"},
    _F.TYPE_BYTES: {"type": "string", "contentEncoding": "base64"},
}
_WRAPPED = {
    "DoubleValue": _F.TYPE_DOUBLE,
    "FloatValue": _F.TYPE_FLOAT,
    "Int64Value": _F.TYPE_INT64,
    "UInt64Value": _F.TYPE_UINT64,
    "Int32Value": _F.TYPE_INT32,
    "UInt32Value": _F.TYPE_UINT32,
    "BoolValue": _F.TYPE_BOOL,
    "StringValue": _F.TYPE_STRING,
    "BytesValue": _F.TYPE_BYTES,
}
_WELL_KNOWN: dict[str, dict[str, Any]] = {
    "google.protobuf.Value": {"description": "any JSON value"},
    "google.protobuf.Struct": {"type": "object"},
    "google.protobuf.ListValue": {"type": "array"},
    "google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    "google.protobuf.Duration": {"type": "string", "pattern": r"^-?[0-9]+(\.[0-9]{1,9})?s$"},
    "google.protobuf.FieldMask": {"type": "string"},
    "google.protobuf.Empty": {"type": "object", "additionalProperties": False},
    "google.protobuf.Any": {
        "type": "object",
        "properties": {"@type": {"type": "string"}},
        "required": ["@type"],
    },
    **{f"google.protobuf.{name}": _SCALARS[kind] for name, kind in _WRAPPED.items()},
}
_ERRORS = {
    "400": "Invalid argument: malformed JSON, wrong type, unknown field, bad path or query",
    "401": "Missing, invalid or expired bearer token",
    "403": "The token does not allow this tenant",
    "404": "Not found",
    "408": "The request body did not arrive in time",
    "413": "Request body too large",
    "415": "The body is not application/json",
    "429": "The tenant's rate limit is exceeded (see Retry-After)",
    "500": "Internal error (details are never leaked)",
    "503": "No worker serves this operation right now, or a dependency is down",
    "504": "The deadline passed before the reply",
}


class _Schemas:
    def __init__(self) -> None:
        self.out: dict[str, Any] = {}
        self.docs: dict[str, str] = {}

    def ref(self, desc: Descriptor) -> dict[str, Any]:
        if desc.full_name in _WELL_KNOWN:
            return dict(_WELL_KNOWN[desc.full_name])
        if desc.full_name not in self.out:
            self.docs.update(comments(desc.file))
            self.out[desc.full_name] = {}  # placeholder first: recursive messages terminate
            self.out[desc.full_name] = self.message(desc)
        return {"$ref": REF + desc.full_name}

    def message(self, desc: Descriptor, skip: frozenset[str] = frozenset()) -> dict[str, Any]:
        props = {f.name: self.field(f) for f in desc.fields if f.name not in skip}
        schema: dict[str, Any] = {
            "type": "object",
            "properties": props,
            "additionalProperties": False,
        }
        oneofs = [o for o in desc.oneofs if len(o.fields) > 1]
        if oneofs:
            schema["maxProperties"] = len(props) - sum(len(o.fields) - 1 for o in oneofs)
        notes = [self.docs.get(desc.full_name, "")]
        notes += [f"At most one of: {', '.join(f.name for f in o.fields)}." for o in oneofs]
        if any(notes):
            schema["description"] = " ".join(n for n in notes if n)
        return schema

    def field(self, field: FieldDescriptor) -> dict[str, Any]:
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            value = field.message_type.fields_by_name["value"]
            schema: dict[str, Any] = {"type": "object", "additionalProperties": self.single(value)}
        elif field.is_repeated:
            schema = {"type": "array", "items": self.single(field)}
        else:
            schema = self.single(field)
        text = self.docs.get(field.full_name)
        return {**schema, "description": text} if text else schema

    def single(self, field: FieldDescriptor) -> dict[str, Any]:
        if field.message_type is not None:
            return self.ref(field.message_type)
        if field.enum_type is not None:
            names = [v.name for v in field.enum_type.values]
            return {"anyOf": [{"type": "string", "enum": names}, _INT32]}
        return dict(_SCALARS[field.type])


def document(bindings: list[Binding], settings: BridgeSettings) -> dict[str, Any]:
    schemas = _Schemas()
    schemas.ref(descriptor(Error))
    paths: dict[str, dict[str, Any]] = {}
    seen: dict[str, int] = {}
    tags: dict[str, dict[str, Any]] = {}
    for b in bindings:
        if b.rpc.component not in tags:
            tags[b.rpc.component] = _tag(b)
        op = _operation(b, schemas, settings)
        # additional_bindings of one rpc: operation ids stay unique (Get, Get_2, ...)
        seen[op["operationId"]] = seen.get(op["operationId"], 0) + 1
        if seen[op["operationId"]] > 1:
            op["operationId"] += f"_{seen[op['operationId']]}"
        paths.setdefault(b.openapi_path, {})[b.method.lower()] = op
    components: dict[str, Any] = {
        "schemas": schemas.out,
        "responses": {
            "Error": {
                "description": "The fleet's one error shape",
                "content": {"application/json": {"schema": {"$ref": REF + "aifleet.v1.Error"}}},
            }
        },
    }
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "aifleet",
            "version": "v1",
            "description": "REST over the fleet's NATS request subjects, generated from the "
            ".proto contracts. Errors always have the aifleet.v1.Error shape.",
        },
        "tags": list(tags.values()),
        "paths": paths,
        "components": components,
    }
    if settings.dev_mode:
        doc["info"]["description"] += (
            " Dev mode: authentication is off, and the X-Tenant-ID header names the tenant to "
            f"act as (`{settings.dev_tenant}` without it); on /docs, Authorize sets it for "
            "every request."
        )
        components["securitySchemes"] = {
            "tenantHeader": {
                "type": "apiKey",
                "in": "header",
                "name": HEADER_TENANT,
                "description": "Dev mode: the tenant to act as; without it, "
                f"`{settings.dev_tenant}`.",
            }
        }
        doc["security"] = [{"tenantHeader": []}, {}]
    else:
        components["securitySchemes"] = {
            "bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
        }
        doc["security"] = [{"bearerAuth": []}]
    return doc


def _tag(b: Binding) -> dict[str, Any]:
    """A component's tag, described by its service's comment, else its .proto file's."""
    service = b.rpc.method.containing_service
    notes = comments(service.file)
    text = notes.get(service.full_name) or notes.get(service.file.name)
    return {"name": b.rpc.component, **({"description": text} if text else {})}


_SENTENCE = re.compile(r"(.+?[.!?])(?=\s|$)", re.DOTALL)


def summary(text: str) -> str:
    """The first sentence of a comment's first paragraph."""
    first = text.split("\n\n", 1)[0]
    found = _SENTENCE.match(first)
    return found.group(1) if found else first


def _operation(b: Binding, schemas: _Schemas, settings: BridgeSettings) -> dict[str, Any]:
    desc = b.request
    schemas.ref(desc)
    params: list[dict[str, Any]] = []
    for var in b.variables:
        field = _leaf(desc, var)
        params.append(
            {"name": var, "in": "path", "required": True, "schema": schemas.single(field)}
        )
    for name, path in b.query_fields().items():
        params.append(
            {"name": name, "in": "query", "required": False, "schema": schemas.field(path[-1])}
        )
    params += _headers(settings)
    service = b.rpc.method.containing_service
    op: dict[str, Any] = {
        "operationId": f"{service.name}_{b.rpc.method.name}",
        "tags": [b.rpc.component],
        "parameters": params,
        "responses": {str(b.status): _success(b, schemas)},
    }
    if b.accepted_field:
        op["responses"]["202"] = {
            **_success(b, schemas, 202),
            "description": f"{_SUCCESS[202]}: `{b.accepted_field}` is set",
        }
    text = schemas.docs.get(b.rpc.method.full_name)
    if text:
        op["summary"] = summary(text)
        if op["summary"] != text:
            op["description"] = text
    if b.body == "*":
        top = frozenset(v for v in b.variables if "." not in v)
        body = schemas.message(desc, skip=top) if top else schemas.ref(desc)
        op["requestBody"] = _json_body(body)
        if is_upload(b):
            op["requestBody"] = _upload_body(desc, body, schemas)
    elif b.body:
        op["requestBody"] = _json_body(schemas.field(desc.fields_by_name[b.body]))
    for status, text in _ERRORS.items():
        if status in ("401", "403") and settings.dev_mode:
            continue
        op["responses"][status] = {**_error_ref(), "description": text}
    op["responses"]["default"] = _error_ref()
    return op


def _headers(settings: BridgeSettings) -> list[dict[str, Any]]:
    """Headers every operation takes; in dev mode the tenant is the security scheme instead."""
    headers = [
        {
            "name": HEADER_REQUEST_ID,
            "in": "header",
            "required": False,
            "description": "Echoed in the reply and carried to the worker; made if absent",
            "schema": _REQUEST_ID,
        },
        {
            "name": HEADER_TIMEOUT_MS,
            "in": "header",
            "required": False,
            "description": "Milliseconds the caller waits: shortens the bridge's deadline",
            "schema": _TIMEOUT,
        },
    ]
    if not settings.dev_mode:
        headers.append(
            {
                "name": HEADER_TENANT,
                "in": "header",
                "required": False,
                "description": "Must name the token's tenant if given",
                "schema": {"type": "string", "pattern": r"^[a-z0-9][a-z0-9_-]{0,62}$"},
            }
        )
    return headers


_REQUEST_ID = {"type": "string", "pattern": r"^[A-Za-z0-9._:\-]{1,128}$"}
_TIMEOUT = {"type": "integer", "minimum": 1, "maximum": 600_000}


def _success(b: Binding, schemas: _Schemas, status: int | None = None) -> dict[str, Any]:
    status = status or b.status
    response = descriptor(b.rpc.response)
    if b.rpc.streaming:
        schemas.ref(response)
        return {
            "description": "Server-Sent Events: one `message` event per "
            f"{response.full_name} (data: its JSON), an `error` event (data: aifleet.v1.Error) "
            "if the stream fails, then a final `end` event.",
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
        }
    if status == 204:
        return {"description": _SUCCESS[204]}
    if b.response_body:
        schema = schemas.field(response.fields_by_name[b.response_body])
    else:
        schema = schemas.ref(response)
    return {"description": _SUCCESS[status], "content": {"application/json": {"schema": schema}}}


_SUCCESS = {
    200: "OK",
    201: "Created",
    202: "Accepted: the work goes on after the reply, which names it",
    204: "Done; no body",
}


def _leaf(desc: Descriptor, dotted: str) -> FieldDescriptor:
    return resolve(desc, dotted.split("."))[-1]


def _upload_body(
    desc: Descriptor, json_schema: dict[str, Any], schemas: _Schemas
) -> dict[str, Any]:
    """The upload takes a multipart form with the file (bridge/upload.py), or the JSON
    UploadRequest naming an object already stored or a chunked upload."""
    options = schemas.field(desc.fields_by_name["options"])
    form = {
        "type": "object",
        "required": ["file"],
        "properties": {
            **FORM_PROPERTIES,
            "options": {**options, "description": "A JSON object of ProcessingOptions."},
        },
    }
    return {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": form,
                "encoding": {
                    name: {"contentType": "application/json"} for name in JSON_FORM_FIELDS
                },
            },
            "application/json": {"schema": json_schema},
        },
    }


def _json_body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"required": False, "content": {"application/json": {"schema": schema}}}


def _error_ref() -> dict[str, Any]:
    return {
        "description": "Error",
        "content": {"application/json": {"schema": {"$ref": REF + "aifleet.v1.Error"}}},
    }
