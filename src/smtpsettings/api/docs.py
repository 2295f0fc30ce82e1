"""The OpenAPI document and an interactive API page (Swagger UI 5 served from the installed package, no CDN).

Swagger UI comes from the ``swagger-ui-bundle-v2`` wheel (the official ``swagger-ui-dist`` files): version 5
is the first that reads OpenAPI 3.1, which our document is. Only the files the page needs are served,
not the package's whole directory (its sample ``index.html`` would point a browser at the public Petstore).
"""

from __future__ import annotations

from pathlib import Path

import msgspec
from litestar import Response, get
from litestar.exceptions import NotFoundException
from litestar.response import File
from swagger_ui_bundle import swagger_ui_path

from smtpsettings.api.openapi import openapi_document

__all__ = ("route_handlers",)

_DOCUMENT = msgspec.json.encode(openapi_document())
_ASSETS_DIR = Path(str(swagger_ui_path))
_ASSETS = {"swagger-ui-bundle.js": "text/javascript", "swagger-ui.css": "text/css", "favicon-32x32.png": "image/png"}
for _name in _ASSETS:
    if not (_ASSETS_DIR / _name).is_file():
        raise RuntimeError(f"Swagger UI is missing from the installation: {_ASSETS_DIR / _name}")

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>smtpsettings API</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" type="image/png" href="/api/2.0/docs/assets/favicon-32x32.png">
<link rel="stylesheet" href="/api/2.0/docs/assets/swagger-ui.css"></head>
<body><div id="swagger-ui"></div>
<script src="/api/2.0/docs/assets/swagger-ui-bundle.js"></script>
<script src="/api/2.0/docs/init.js"></script></body></html>"""
# Kept out of the page so the strict Content-Security-Policy below (no inline script) can apply.
# validatorUrl: null, or Swagger UI would send the document to validator.swagger.io for a badge.
_INIT = """window.ui = SwaggerUIBundle({
  url: '/api/2.0/openapi.json',
  dom_id: '#swagger-ui',
  validatorUrl: null,
  deepLinking: true,
  withCredentials: true
});"""
# As the admin page: nothing from elsewhere, no inline script or style, no framing.
_PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}


@get("/api/2.0/openapi.json", include_in_schema=False)
async def openapi_json() -> Response[bytes]:
    return Response(_DOCUMENT, media_type="application/json")


@get("/api/2.0/docs", include_in_schema=False)
async def docs_page() -> Response[str]:
    return Response(_PAGE, media_type="text/html", headers=_PAGE_HEADERS)


@get("/api/2.0/docs/init.js", include_in_schema=False)
async def docs_init() -> Response[str]:
    return Response(_INIT, media_type="text/javascript")


@get("/api/2.0/docs/assets/{name:str}", include_in_schema=False)
async def docs_asset(name: str) -> File:
    media_type = _ASSETS.get(name)
    if media_type is None:
        raise NotFoundException()
    return File(_ASSETS_DIR / name, media_type=media_type, content_disposition_type="inline")


route_handlers = [openapi_json, docs_page, docs_init, docs_asset]
