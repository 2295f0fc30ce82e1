"""Reading request headers on the hot path."""

from __future__ import annotations

from litestar import Request

__all__ = ("header",)


def header(request: Request, name: bytes) -> str:
    """One request header by its lower-case name ("" when absent), from the raw ASGI list.

    Litestar's ``request.headers`` builds a multi-dict of every header on first use; an authenticated
    request needs three or four of them, and a plain dict of the raw list, made once per request, costs
    a fraction of that. A repeated header keeps its last value.
    """
    state = request.scope["state"]
    raw = state.get("raw_headers")
    if raw is None:
        raw = state["raw_headers"] = dict(request.scope["headers"])
    value = raw.get(name)
    return value.decode("latin-1") if value else ""
