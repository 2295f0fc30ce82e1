"""Content negotiation as DocSpace does it: JSON in, JSON out, under whichever JSON-ish type was asked for."""

from __future__ import annotations

import functools

from smtpsettings.domain.errors import DomainError

__all__ = ("NotAcceptable", "UnsupportedCharset", "UnsupportedMediaType", "check_body_type", "response_media_type")

# In our order of preference, for wildcard ranges that admit several.
_RESPONSE_TYPES = ("application/json", "text/json", "text/plain")


class NotAcceptable(DomainError):
    def __init__(self) -> None:
        super().__init__("The Accept header admits no type this API can answer with (application/json, text/json, text/plain).")


class UnsupportedMediaType(DomainError):
    def __init__(self, media_type: str) -> None:
        shown = media_type or "none"
        super().__init__(f"Unsupported content type {shown!r}: send the body as application/json.")


class UnsupportedCharset(UnsupportedMediaType):
    def __init__(self, charset: str) -> None:
        DomainError.__init__(
            self, f"Unsupported charset {charset!r}: send the body as UTF-8 (application/json; charset=utf-8)."
        )


# JSON is UTF-8 (RFC 8259, 8.1); these are the spellings clients send for it.
_UTF8 = frozenset(("utf-8", "utf8"))


@functools.lru_cache(maxsize=256)  # clients send the same few Accept headers over and over
def response_media_type(accept: str | None) -> str:
    """The JSON type to answer with, following the client's preferences (q-values honoured).

    Raises:
        NotAcceptable: the Accept header admits none of our types.
    """
    if not accept or not accept.strip():
        return "application/json"
    entries: list[tuple[str, float, int]] = []
    for position, part in enumerate(accept.split(",")):
        media, *params = (p.strip() for p in part.split(";"))
        q = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        entries.append((media.lower(), q, position))
    ranked: list[tuple[float, int, int, str]] = []
    for preference, candidate in enumerate(_RESPONSE_TYPES):
        # The most specific entry that matches decides the type's q (RFC 9110, 12.5.1).
        matches = [
            (_specificity(media, candidate), q, position)
            for media, q, position in entries
            if _specificity(media, candidate) >= 0
        ]
        if matches:
            _, q, position = max(matches, key=lambda m: m[0])
            if q > 0:
                ranked.append((-q, position, preference, candidate))
    if not ranked:
        raise NotAcceptable()
    return min(ranked)[3]


def _specificity(media_range: str, media_type: str) -> int:
    """2 for an exact match, 1 for ``type/*``, 0 for ``*/*``, -1 when the range does not admit the type."""
    if media_range == media_type:
        return 2
    if media_range == "*/*":
        return 0
    if media_range.endswith("/*") and media_type.startswith(media_range[:-1]):
        return 1
    return -1


def check_body_type(content_type: str | None) -> None:
    """Accept ``application/json``, ``text/json`` and ``application/*+json``, in UTF-8.

    A ``charset`` parameter, if any, must name UTF-8 (``utf-8`` or ``utf8``, any case, quoted or not):
    the body is decoded as UTF-8 whatever it says, so another charset would be silently misread.
    Other parameters are ignored.

    Raises:
        UnsupportedMediaType: anything else, including a missing Content-Type.
        UnsupportedCharset: a JSON type with a charset other than UTF-8.
    """
    media, _, params = (content_type or "").partition(";")
    media = media.strip().lower()
    if not (media in ("application/json", "text/json") or (media.startswith("application/") and media.endswith("+json"))):
        raise UnsupportedMediaType(media)
    for param in params.split(";") if params else ():
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset":
            charset = value.strip().strip('"').strip()
            if charset.lower() not in _UTF8:
                raise UnsupportedCharset(charset)
