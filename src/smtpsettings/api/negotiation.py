"""Content negotiation as DocSpace does it: JSON in, JSON out, under whichever JSON-ish type was asked for."""

from __future__ import annotations

from smtpsettings.domain.errors import DomainError

__all__ = ("NotAcceptable", "UnsupportedMediaType", "check_body_type", "response_media_type")

_RESPONSE_TYPES = ("application/json", "text/json", "text/plain")
# A wildcard range answers with the first concrete type it admits.
_RANGES = {"*/*": "application/json", "application/*": "application/json", "text/*": "text/json"}


class NotAcceptable(DomainError):
    def __init__(self) -> None:
        super().__init__("The Accept header admits no type this API can answer with (application/json, text/json, text/plain).")


class UnsupportedMediaType(DomainError):
    def __init__(self, media_type: str) -> None:
        shown = media_type or "none"
        super().__init__(f"Unsupported content type {shown!r}: send the body as application/json.")


def response_media_type(accept: str | None) -> str:
    """The JSON type to answer with, following the client's preferences (q-values honoured).

    Raises:
        NotAcceptable: the Accept header admits none of our types.
    """
    if not accept or not accept.strip():
        return "application/json"
    ranked: list[tuple[float, int, str]] = []
    for position, part in enumerate(accept.split(",")):
        media, *params = (p.strip() for p in part.split(";"))
        media = media.lower()
        q = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        if q <= 0:
            continue
        answer = media if media in _RESPONSE_TYPES else _RANGES.get(media)
        if answer:
            ranked.append((-q, position, answer))
    if not ranked:
        raise NotAcceptable()
    return min(ranked)[2]


def check_body_type(content_type: str | None) -> None:
    """Accept ``application/json``, ``text/json`` and ``application/*+json``, with any parameters.

    Raises:
        UnsupportedMediaType: anything else, including a missing Content-Type.
    """
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media in ("application/json", "text/json"):
        return
    if media.startswith("application/") and media.endswith("+json"):
        return
    raise UnsupportedMediaType(media)
