"""`/docs`: the OpenAPI document as a plain, self-contained HTML page.

No script and nothing fetched from elsewhere (the bridge may run where nothing else is
reachable), so it is a readable listing of routes, parameters, bodies and schemas, not an
interactive console; `/openapi.json` feeds any OpenAPI tool for that.
"""

from __future__ import annotations

import html
import json
from typing import Any

from bridge.openapi import REF


def docs_page(doc: dict[str, Any]) -> str:
    """A readable listing of the document: operations, parameters, bodies and schemas."""
    esc = html.escape
    rows = []
    for path, methods in doc["paths"].items():
        for method, op in methods.items():
            params = ", ".join(
                f"{esc(p['name'])} ({p['in']})" for p in op["parameters"] if p["in"] != "header"
            )
            body = op.get("requestBody", {}).get("content", {}).get("application/json", {})
            status, ok = next((k, v) for k, v in op["responses"].items() if k.startswith("2"))
            rows.append(
                "<tr>"
                f"<td><code>{esc(method.upper())} {esc(path)}</code></td>"
                f"<td>{esc(op.get('summary', ''))}</td>"
                f"<td>{params or '-'}</td>"
                f"<td><code>{esc(_name(body.get('schema', {})) or '-')}</code></td>"
                f"<td>{esc(status)} <code>{esc(_name(_schema_of(ok)))}</code></td>"
                "</tr>"
            )
    schemas = esc(json.dumps(doc["components"]["schemas"], indent=2))
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>aifleet API</title>"
        "<style>body{font:14px sans-serif;margin:2em}td,th{border:1px solid #ccc;padding:4px 8px;"
        "text-align:left;vertical-align:top}table{border-collapse:collapse}</style></head><body>"
        f"<h1>aifleet API</h1><p>{esc(doc['info']['description'])} "
        "The machine-readable document is <a href='/openapi.json'>/openapi.json</a>.</p>"
        "<table><tr><th>route</th><th>summary</th><th>parameters</th><th>body</th>"
        f"<th>success</th></tr>{''.join(rows)}</table>"
        "<p>Every operation answers errors as <code>aifleet.v1.Error</code> with the HTTP status "
        "of the error.</p>"
        f"<h2>Schemas</h2><pre>{schemas}</pre></body></html>"
    )


def _schema_of(response: dict[str, Any]) -> dict[str, Any]:
    content = response.get("content", {})
    for media in content.values():
        return dict(media.get("schema", {}))
    return {}


def _name(schema: dict[str, Any]) -> str:
    ref = schema.get("$ref", "")
    if ref:
        return str(ref).removeprefix(REF)
    return "inline" if schema else ""
