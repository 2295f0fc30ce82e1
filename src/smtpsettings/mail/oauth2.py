"""OAuth 2.0 access tokens for SMTP AUTH XOAUTH2 (skeleton: interface only, token requests follow)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, fields
from urllib.parse import quote

from smtpsettings.mail.errors import OAuth2TokenError
from smtpsettings.mail.policy import MailPolicy

__all__ = [
    "PROVIDERS",
    "STEP_TOKEN",
    "OAuth2Grant",
    "OAuth2TokenError",
    "TokenCache",
    "default_scope",
    "default_token_url",
]

STEP_TOKEN = "Get OAuth 2.0 token"
PROVIDERS = ("microsoft", "google", "generic")

_MICROSOFT_TOKEN_URL = "https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token"
_GOOGLE_TOKEN_URL = "https://oauth2.googleapis.com/token"
_DEFAULT_SCOPES = {
    "microsoft": "https://outlook.office365.com/.default",
    "google": "https://mail.google.com/",
    "generic": "",
}


def default_token_url(provider: str, tenant_id: str) -> str:
    """The provider's token endpoint; ``""`` for ``generic``, whose URL the admin must give."""
    if provider == "microsoft":
        return _MICROSOFT_TOKEN_URL.format(tenant=quote(tenant_id, safe=""))
    if provider == "google":
        return _GOOGLE_TOKEN_URL
    return ""


def default_scope(provider: str) -> str:
    """The scope that grants SMTP sending at ``provider``; ``""`` (no scope sent) for ``generic``."""
    return _DEFAULT_SCOPES.get(provider, "")


@dataclass(frozen=True)
class OAuth2Grant:
    """Everything needed to ask one token endpoint for an access token.

    Defaults are resolved by the caller (see :func:`default_token_url`, :func:`default_scope`), so the
    grant is exactly what is sent and its fingerprint changes whenever the request would.

    Attributes:
        provider: ``microsoft`` (client secret or certificate), ``google`` (service account key, JWT
            bearer grant) or ``generic`` (client credentials with a client secret).
        token_url: The token endpoint.
        scope: Space-separated scopes; ``""`` sends none.
        client_id: The application (client) id; for ``google`` the key's ``client_email`` is used.
        tenant_id: Microsoft's directory (tenant) id; informational once ``token_url`` is resolved.
        subject: ``google``: the mailbox the service account acts as (domain-wide delegation).
        client_secret: Secret for client credentials (``microsoft``, ``generic``).
        certificate: ``microsoft``: PEM certificate and private key for a signed client assertion.
        service_account_key: ``google``: the service account's JSON key.
    """

    provider: str
    token_url: str
    scope: str
    client_id: str = ""
    tenant_id: str = ""
    subject: str = ""
    client_secret: str = field(default="", repr=False)
    certificate: str = field(default="", repr=False)
    service_account_key: str = field(default="", repr=False)

    def fingerprint(self) -> str:
        """SHA-256 over every field, secrets included: the cache key, so any change fetches anew."""
        canonical = json.dumps([getattr(self, f.name) for f in fields(self)], ensure_ascii=False)
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


class TokenCache:
    """Access tokens per grant, for one worker process."""

    async def get(self, grant: OAuth2Grant, policy: MailPolicy, *, refresh: bool = False) -> str:
        """An access token for ``grant``; ``refresh=True`` drops a cached one first.

        Raises:
            MailError: with step :data:`STEP_TOKEN`; :class:`OAuth2TokenError` when the endpoint refused.
        """
        raise OAuth2TokenError("OAuth 2.0 token requests are not implemented yet", step=STEP_TOKEN)
