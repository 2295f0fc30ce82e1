"""The OpenAPI document and an interactive API page (Swagger UI served from the installed package, no CDN)."""

from __future__ import annotations

from pathlib import Path

import msgspec
from litestar import Response, get
from litestar.static_files import create_static_files_router
from swagger_ui_bundle import swagger_ui_path

from smtpsettings.api.openapi import openapi_document

__all__ = ("route_handlers",)

_DOCUMENT = msgspec.json.encode(openapi_document())
_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>smtpsettings API</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="stylesheet" href="/api/2.0/docs/assets/swagger-ui.css"></head>
<body><div id="swagger-ui"></div>
<script src="/api/2.0/docs/assets/swagger-ui-bundle.js"></script>
<script src="/api/2.0/docs/init.js"></script></body></html>"""
# Kept out of the page so a strict Content-Security-Policy (no inline script) can apply.
_INIT = "window.ui = SwaggerUIBundle({url: '/api/2.0/openapi.json', dom_id: '#swagger-ui', withCredentials: true});"


@get("/api/2.0/openapi.json", include_in_schema=False)
async def openapi_json() -> Response[bytes]:
    return Response(_DOCUMENT, media_type="application/json")


@get("/api/2.0/docs", include_in_schema=False)
async def docs_page() -> Response[str]:
    return Response(_PAGE, media_type="text/html")


@get("/api/2.0/docs/init.js", include_in_schema=False)
async def docs_init() -> Response[str]:
    return Response(_INIT, media_type="text/javascript")


route_handlers = [
    openapi_json,
    docs_page,
    docs_init,
    create_static_files_router(path="/api/2.0/docs/assets", directories=[Path(str(swagger_ui_path))], include_in_schema=False),
]
