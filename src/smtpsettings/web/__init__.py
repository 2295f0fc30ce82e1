"""The admin page: static files served by us (no CDN), talking only to the public JSON API."""

from __future__ import annotations

from pathlib import Path

from litestar import Response, get
from litestar.static_files import create_static_files_router

__all__ = ("STATIC_DIR", "route_handlers")

STATIC_DIR = Path(__file__).parent / "static"
if not (STATIC_DIR / "index.html").is_file():
    raise RuntimeError(f"the admin page is missing from the installation: {STATIC_DIR / 'index.html'}")

# The page runs no inline script, loads nothing from elsewhere, and may not be framed.
_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}


@get("/", include_in_schema=False)
async def admin_page() -> Response[bytes]:
    return Response((STATIC_DIR / "index.html").read_bytes(), media_type="text/html", headers=_HEADERS)


route_handlers = [
    admin_page,
    create_static_files_router(path="/static", directories=[STATIC_DIR], include_in_schema=False),
]
