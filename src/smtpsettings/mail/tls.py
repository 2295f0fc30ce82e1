"""TLS context construction and the certificate facts shown to admins."""

from __future__ import annotations

import ssl
import time
from typing import Any

__all__ = ["build_tls_context", "certificate_verify_message", "describe_tls"]

EXPIRY_WARNING_DAYS = 14

_NAME_KEYS = {
    "commonName": "CN",
    "organizationName": "O",
    "organizationalUnitName": "OU",
    "countryName": "C",
    "stateOrProvinceName": "ST",
    "localityName": "L",
    "emailAddress": "emailAddress",
}


def build_tls_context(ca_file: str | None) -> ssl.SSLContext:
    """System-trust client context, plus ``ca_file`` for private CAs.

    ``load_verify_locations`` adds to the default store rather than replacing
    it, so a private relay CA does not break public providers.
    """
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    if ca_file:
        context.load_verify_locations(cafile=ca_file)
    return context


def certificate_verify_message(exc: BaseException) -> str | None:
    """Find an ``SSLCertVerificationError`` in ``exc``'s chain and return its reason."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ssl.SSLCertVerificationError):
            return current.verify_message or current.reason or "certificate not trusted"
        current = current.__cause__ or current.__context__
    return None


def find_ssl_error(exc: BaseException) -> ssl.SSLError | None:
    """Return the first ``ssl.SSLError`` in ``exc``'s cause/context chain."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ssl.SSLError):
            return current
        current = current.__cause__ or current.__context__
    return None


def _format_name(name: Any) -> str:
    parts = []
    for rdn in name or ():
        for key, value in rdn:
            parts.append(f"{_NAME_KEYS.get(key, key)}={value}")
    return ", ".join(parts) or "(empty)"


def describe_tls(ssl_object: ssl.SSLObject | None) -> list[tuple[str, bool]]:
    """Describe the negotiated session and peer certificate.

    Returns:
        ``(message, is_warning)`` pairs; a warning flags a certificate that
        expires within :data:`EXPIRY_WARNING_DAYS` days.
    """
    if ssl_object is None:
        return [("TLS session information unavailable", True)]
    lines: list[tuple[str, bool]] = []
    cipher = ssl_object.cipher()
    cipher_text = f"{cipher[0]} ({cipher[2]} bits)" if cipher else "unknown"
    lines.append((f"TLS established: {ssl_object.version()}, cipher {cipher_text}", False))
    cert = ssl_object.getpeercert()
    if not cert:
        lines.append(("Server certificate details unavailable", True))
        return lines
    lines.append((f"Certificate subject: {_format_name(cert.get('subject'))}", False))
    alt_names = ", ".join(f"{kind}:{value}" for kind, value in cert.get("subjectAltName", ()))
    if alt_names:
        lines.append((f"Certificate names: {alt_names}", False))
    lines.append((f"Certificate issuer: {_format_name(cert.get('issuer'))}", False))
    not_after = cert.get("notAfter")
    if isinstance(not_after, str):
        days_left = (ssl.cert_time_to_seconds(not_after) - time.time()) / 86400
        warn = days_left < EXPIRY_WARNING_DAYS
        suffix = f" (in {days_left:.0f} days)" if warn else ""
        lines.append((f"Certificate expires: {not_after}{suffix}", warn))
    return lines
