"""What to connect to: the admin's SMTP settings, minus the message."""

from __future__ import annotations

from dataclasses import dataclass, field

from smtpsettings.mail.oauth2 import OAuth2Grant

__all__ = ["IMPLICIT_TLS_PORT", "SmtpTarget", "uses_implicit_tls"]

IMPLICIT_TLS_PORT = 465
"""SMTPS (RFC 8314): TLS from the first byte. Every other port uses STARTTLS."""


@dataclass(frozen=True)
class SmtpTarget:
    """Connection and credential settings for one SMTP server.

    Attributes:
        host: Host name or IP literal; certificates are verified against it.
        port: TCP port.
        enable_ssl: Encrypt the session: implicit TLS on port 465, otherwise
            STARTTLS, which is then *required* (no silent downgrade).
        enable_auth: Authenticate after EHLO.
        username: Login name (for NTLM, ``DOMAIN\\user`` or ``user@domain``).
        password: Secret; excluded from ``repr`` so it cannot leak into logs.
        use_ntlm: Use AUTH NTLM instead of CRAM-MD5/PLAIN/LOGIN.
        oauth2: With ``enable_auth``, authenticate with AUTH XOAUTH2 as ``username`` using a token
            obtained for this grant (``password`` and ``use_ntlm`` are then ignored).
    """

    host: str
    port: int
    enable_ssl: bool
    enable_auth: bool
    username: str = ""
    password: str = field(default="", repr=False)
    use_ntlm: bool = False
    oauth2: OAuth2Grant | None = None


def uses_implicit_tls(target: SmtpTarget) -> bool:
    """Whether ``target`` starts TLS immediately instead of via STARTTLS.

    Kept as a pure function because the decision is part of the settings
    contract (the UI only has an "enable SSL" switch) and must be testable
    without binding port 465.
    """
    return target.enable_ssl and target.port == IMPLICIT_TLS_PORT
