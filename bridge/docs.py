"""`/openapi.json` and `/docs`: the document, and Swagger UI over it, where a user can try a
request.

Swagger UI's files come from the swagger-ui-bundle-v2 package and are served by the bridge
(`/docs/assets/...`): nothing is fetched from elsewhere, so the page works where the bridge
is the only thing reachable. Every URL in the page is relative, so it also works behind a
path prefix. The caller's identity is the document's security scheme: in dev mode the
Authorize button sets `X-Tenant-ID` once for every request, with auth on it takes the bearer
JWT.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, Response
from starlette.routing import Route
from swagger_ui_bundle import swagger_ui_path

from bridge.errors import JSON

# What the page loads of the bundle; nothing else in its directory is served.
ASSETS = frozenset({"swagger-ui.css", "swagger-ui-bundle.js", "favicon-32x32.png"})
_CACHE = {"Cache-Control": "public, max-age=86400"}

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>aifleet API</title>
<link rel="stylesheet" href="docs/assets/swagger-ui.css">
<link rel="icon" type="image/png" href="docs/assets/favicon-32x32.png">
</head>
<body>
<div id="swagger-ui"></div>
<script src="docs/assets/swagger-ui-bundle.js"></script>
<script src="docs/init.js"></script>
</body>
</html>
"""

# Forms are open for input at once (no "Try it out" click), the Authorize dialog's value is
# kept across reloads, and each reply shows how long it took.
INIT = """window.ui = SwaggerUIBundle({
  url: new URL("openapi.json", document.baseURI).href,
  dom_id: "#swagger-ui",
  deepLinking: true,
  tryItOutEnabled: true,
  persistAuthorization: true,
  displayRequestDuration: true,
  defaultModelsExpandDepth: 0,
  presets: [SwaggerUIBundle.presets.apis],
  layout: "BaseLayout",
});
"""


def docs_routes(doc: dict[str, Any]) -> list[Route]:
    """`/openapi.json`, `/docs`, its script and its assets."""
    spec = Response(json.dumps(doc, separators=(",", ":")).encode(), media_type=JSON)
    page = HTMLResponse(PAGE)
    init = Response(INIT, media_type="text/javascript")

    async def openapi(request: Request) -> Response:
        return spec

    async def docs(request: Request) -> Response:
        return page

    async def script(request: Request) -> Response:
        return init

    async def asset(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in ASSETS:
            raise HTTPException(404, "no such asset")
        return FileResponse(swagger_ui_path / name, headers=_CACHE)

    return [
        Route("/openapi.json", openapi, methods=["GET"]),
        Route("/docs", docs, methods=["GET"]),
        Route("/docs/init.js", script, methods=["GET"]),
        Route("/docs/assets/{name}", asset, methods=["GET"]),
    ]
