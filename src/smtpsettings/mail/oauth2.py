"""OAuth 2.0 access tokens for SMTP AUTH XOAUTH2: Microsoft 365, Google Workspace, any token endpoint.

Three grants, each built and signed by Authlib (through joserfc) rather than by hand:

* ``microsoft``: client credentials, authenticated by the client secret (``client_secret_post``) or by a
  client assertion signed with the certificate's private key (``private_key_jwt``, RFC 7523, PS256, with
  the certificate's SHA-256 thumbprint as ``x5t#S256`` so Entra ID finds the certificate);
* ``google``: the JWT bearer grant (RFC 7523) signed with the service account's key, ``sub`` = the mailbox
  (domain-wide delegation);
* ``generic``: client credentials with ``client_secret_basic``, which RFC 6749 requires every server to
  support.

The token URL is admin input exactly like the SMTP host, so the request dials through the same guard
(:mod:`smtpsettings.mail.dial`): resolved once, denied networks refused before any packet, the connection
made to the checked address with the name as TLS SNI and ``Host``. It must be https, except to loopback
(a local identity provider, tests). Redirects are not followed (they would leave the guard) and no proxy
from the environment is used. The SMTP deadlines apply: ``connect_timeout`` for connecting and the TLS
handshake, ``command_timeout`` for each read and write, ``total_timeout`` for the whole request.

A failure raises a :class:`MailError` with step :data:`STEP_TOKEN`; a refusal by the endpoint is an
:class:`OAuth2TokenError` carrying its ``error`` and ``error_description``. Neither the secret, the key,
the signed assertion nor a token ever appears in a message.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import hashlib
import ipaddress
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any
from urllib.parse import parse_qsl, quote

import httpx
from authlib.oauth2.auth import ClientAuth
from authlib.oauth2.rfc6749.parameters import prepare_token_request
from authlib.oauth2.rfc7523 import JWTBearerGrant, PrivateKeyJWT
from authlib.oauth2.rfc7523.jwt_bearer import JWT_BEARER_GRANT_TYPE
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from joserfc.errors import JoseError
from joserfc.jwk import RSAKey

from smtpsettings.mail.dial import Note, elapsed_ms, os_reason, resolve, seconds
from smtpsettings.mail.errors import (
    ConfigurationRefused,
    ConnectError,
    MailError,
    MailTimeout,
    OAuth2TokenError,
    TLSError,
)
from smtpsettings.mail.policy import MailPolicy
from smtpsettings.mail.tls import build_tls_context, certificate_verify_message, find_ssl_error
from smtpsettings.mail.transcript import Redactor, truncate

__all__ = [
    "MAX_RESPONSE_BYTES",
    "PROVIDERS",
    "LONGEST_LIFETIME_SECONDS",
    "REFRESH_MARGIN_SECONDS",
    "REFUSAL_MEMORY_SECONDS",
    "STEP_TOKEN",
    "AccessToken",
    "OAuth2Grant",
    "OAuth2TokenError",
    "TokenCache",
    "certificate_problem",
    "default_scope",
    "default_token_url",
    "service_account_key_problem",
]

STEP_TOKEN = "Get OAuth 2.0 token"
PROVIDERS = ("microsoft", "google", "generic")

REFRESH_MARGIN_SECONDS = 300.0
"""A token is used until this long before it expires, so it cannot run out in the middle of a send."""
UNKNOWN_LIFETIME_SECONDS = 2 * REFRESH_MARGIN_SECONDS
"""Assumed when the endpoint gives no ``expires_in``: cached for five minutes, then asked again."""
LONGEST_LIFETIME_SECONDS = 24 * 3600.0
"""A longer ``expires_in`` (or an infinite one: ``1e400`` reads as infinity) counts as this long."""
REFUSAL_MEMORY_SECONDS = 60.0
"""How long a refusal is remembered: the endpoint's refusal to issue a token, or the mail server's refusal of
a token just issued. Within it the endpoint is not asked again for the same settings."""
MAX_RESPONSE_BYTES = 256 * 1024
"""A token answer is a few kilobytes; an endpoint sending more is not a token endpoint."""

_MICROSOFT_TOKEN_URL = "https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token"
_GOOGLE_TOKEN_URL = "https://oauth2.googleapis.com/token"
_DEFAULT_SCOPES = {
    "microsoft": "https://outlook.office365.com/.default",
    "google": "https://mail.google.com/",
    "generic": "",
}
_CLIENT_CREDENTIALS = "client_credentials"
_ASSERTION_LIFETIME = 600
_MAX_DESCRIPTION_CHARS = 500


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
        certificate: ``microsoft``: PEM certificate and private key for a signed client assertion; used
            instead of ``client_secret`` when both are given.
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


@dataclass(frozen=True)
class AccessToken:
    """An access token and what is known about its lifetime.

    Attributes:
        value: The token; excluded from ``repr``.
        valid_for: Seconds it stays usable (until :data:`REFRESH_MARGIN_SECONDS` before expiry), or
            ``None`` when the endpoint gave no lifetime.
        cached: Whether it came from the cache rather than from a request made for this call.
    """

    value: str = field(repr=False)
    valid_for: float | None
    cached: bool = False


# -- credentials ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Certificate:
    key: RSAKey = field(repr=False)
    thumbprint_sha256: str


@dataclass(frozen=True)
class _ServiceAccount:
    client_email: str
    key_id: str
    key: RSAKey = field(repr=False)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _load_certificate(pem: str) -> _Certificate:
    """The RSA private key and certificate thumbprint from one PEM text holding both.

    Raises:
        ValueError: with a sentence saying what is wrong with the text (never quoting it).
    """
    data = pem.encode("utf-8")
    try:
        certificate = x509.load_pem_x509_certificate(data)
    except ValueError:
        raise ValueError("the certificate field holds no PEM certificate (BEGIN CERTIFICATE)") from None
    try:
        private = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise ValueError("the private key is encrypted; give it without a password") from None
    except (ValueError, UnsupportedAlgorithm):
        raise ValueError("the certificate field holds no PEM private key (BEGIN PRIVATE KEY)") from None
    if not isinstance(private, rsa.RSAPrivateKey):
        raise ValueError("the private key is not an RSA key; Microsoft accepts RSA certificates only")  # noqa: TRY004
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    if certificate.public_key().public_bytes(
        serialization.Encoding.DER, public
    ) != private.public_key().public_bytes(serialization.Encoding.DER, public):
        raise ValueError("the private key does not belong to the certificate")
    pkcs8 = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    thumbprint = _b64url(certificate.fingerprint(hashes.SHA256()))
    return _Certificate(RSAKey.import_key(pkcs8), thumbprint)


def _load_service_account(text: str) -> _ServiceAccount:
    """The signing key and identity from a Google service account JSON key.

    Raises:
        ValueError: with a sentence saying what is wrong (never quoting the key).
    """
    try:
        data = json.loads(text)
    except ValueError:
        raise ValueError("the service account key is not JSON") from None
    if not isinstance(data, dict):
        raise ValueError("the service account key is not a JSON object")  # noqa: TRY004 - the admin's value
    kind = data.get("type", "service_account")
    if kind != "service_account":
        raise ValueError(f"the key is of type {str(kind)[:40]!r}, not a service account key")
    email, private_key = data.get("client_email"), data.get("private_key")
    if not isinstance(email, str) or not email:
        raise ValueError("the service account key has no client_email")
    if not isinstance(private_key, str) or not private_key:
        raise ValueError("the service account key has no private_key")
    key_id = data.get("private_key_id")
    try:
        key = RSAKey.import_key(private_key)
    except (JoseError, ValueError, TypeError):
        raise ValueError("the service account key's private_key is not an RSA private key in PEM") from None
    if not key.is_private:
        raise ValueError("the service account key's private_key is a public key")
    return _ServiceAccount(email, key_id if isinstance(key_id, str) else "", key)


def certificate_problem(pem: str) -> str | None:
    """What is wrong with a ``certificate`` value (PEM certificate + RSA key), or ``None`` when usable."""
    try:
        _load_certificate(pem)
    except ValueError as exc:
        return str(exc)
    return None


def service_account_key_problem(text: str) -> str | None:
    """What is wrong with a ``serviceAccountKey`` value (Google JSON key), or ``None`` when usable."""
    try:
        _load_service_account(text)
    except ValueError as exc:
        return str(exc)
    return None


# -- the request ---------------------------------------------------------------------------------------


@dataclass
class _TokenRequest:
    headers: dict[str, str]
    body: str = field(repr=False)
    kind: str  # for the admin: which grant and client authentication
    secrets: list[str] = field(default_factory=list, repr=False)


def _build_request(grant: OAuth2Grant) -> _TokenRequest:
    """The form body and headers for ``grant``, signed where the grant needs it.

    Raises:
        OAuth2TokenError: a credential is missing or unusable.
    """
    headers = {"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"}
    try:
        if grant.provider == "google":
            if not grant.service_account_key:
                raise ValueError("no service account key is configured")
            account = _load_service_account(grant.service_account_key)
            header = {"alg": "RS256", "typ": "JWT", **({"kid": account.key_id} if account.key_id else {})}
            assertion = JWTBearerGrant.sign(
                account.key,
                issuer=account.client_email,
                audience=grant.token_url,
                subject=grant.subject or None,
                claims={"scope": grant.scope} if grant.scope else {},
                header=header,
                expires_in=3600,  # Google's maximum
            )
            body = prepare_token_request(JWT_BEARER_GRANT_TYPE, assertion=assertion)
            kind = f"JWT bearer grant for {grant.subject or '(no subject)'} signed by {account.client_email}"
            return _TokenRequest(headers, body, kind, [assertion])
        if grant.provider not in ("microsoft", "generic"):
            raise ValueError(f"unknown provider {grant.provider[:40]!r}")
        if not grant.client_id:
            raise ValueError("no client id is configured")
        body = prepare_token_request(_CLIENT_CREDENTIALS, scope=grant.scope)
        if grant.provider == "microsoft" and grant.certificate:
            certificate = _load_certificate(grant.certificate)
            now = int(time.time())
            signer = PrivateKeyJWT(
                token_endpoint=grant.token_url,
                # Entra ID lists nbf among the assertion's claims; ten minutes is what MSAL gives it.
                claims={"iat": now, "nbf": now, "exp": now + _ASSERTION_LIFETIME},
                headers={"typ": "JWT", "x5t#S256": certificate.thumbprint_sha256},
                alg="PS256",
            )
            auth = ClientAuth(grant.client_id, certificate.key, signer)
            kind = "client credentials with a certificate-signed client assertion"
        elif grant.client_secret:
            method = "client_secret_post" if grant.provider == "microsoft" else "client_secret_basic"
            auth = ClientAuth(grant.client_id, grant.client_secret, method)
            kind = "client credentials with the client secret"
        else:
            raise ValueError(
                "no client secret is configured"
                + (" and no certificate" if grant.provider == "microsoft" else "")
            )
        _, headers, body = auth.prepare("POST", grant.token_url, headers, body)
    except ValueError as exc:
        raise OAuth2TokenError(f"Cannot request an OAuth 2.0 token: {exc}", step=STEP_TOKEN) from None
    except UnicodeEncodeError:
        # client_secret_basic sends id:secret as Latin-1.
        raise OAuth2TokenError(
            "Cannot request an OAuth 2.0 token: "
            "the client id or secret has characters HTTP Basic cannot carry",
            step=STEP_TOKEN,
        ) from None
    secrets = [grant.client_secret] if grant.client_secret else []
    if "client_assertion=" in body:
        secrets.extend(value for name, value in parse_qsl(body) if name == "client_assertion")
    if "Authorization" in headers:
        secrets.append(headers["Authorization"].removeprefix("Basic "))
    return _TokenRequest(headers, body, kind, secrets)


def _is_loopback(address: str) -> bool:
    addr = ipaddress.ip_address(address)
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr.is_loopback


class _GuardedTransport(httpx.AsyncBaseTransport):
    """Sends each request to an address the deny list allows, never to the name itself.

    The URL's host is swapped for the checked address while ``Host`` (set from the original URL) and the
    TLS server name (``sni_hostname``, also what the certificate is verified against) keep the name.
    """

    def __init__(self, policy: MailPolicy, note: Note) -> None:
        self._policy = policy
        self._note = note
        try:
            context = build_tls_context(policy.ca_file)
        except OSError as exc:  # ssl.SSLError included
            raise TLSError(f"Could not load the CA file {policy.ca_file}: {os_reason(exc)}") from exc
        self._inner = httpx.AsyncHTTPTransport(verify=context, trust_env=False)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        if url.scheme not in ("https", "http"):
            raise ConfigurationRefused(f"The token URL must use https, not {url.scheme}")
        port = url.port or (443 if url.scheme == "https" else 80)
        name, candidates = await resolve(url.host, port, self._policy, self._note)
        if url.scheme == "http" and not all(_is_loopback(c.address) for c in candidates):
            raise ConfigurationRefused(
                f"Refusing to send OAuth 2.0 credentials to {url.host} over plain http: "
                "the token URL must use https (http is allowed to loopback only)"
            )
        failure: httpx.TransportError | None = None
        for candidate in candidates:
            routed = httpx.Request(
                request.method,
                url.copy_with(host=candidate.address),
                headers=request.headers,
                stream=request.stream,
                extensions={**request.extensions, "sni_hostname": name},
            )
            start = time.perf_counter()
            try:
                return await self._inner.handle_async_request(routed)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                if find_ssl_error(exc) is not None:
                    raise  # the same certificate answers on every address
                what = (
                    "no answer" if isinstance(exc, httpx.ConnectTimeout) else str(exc) or "connection failed"
                )
                self._note(
                    f"Connecting to {candidate.address}:{port} failed: {what}", elapsed_ms(start), "warning"
                )
                failure = exc
        assert failure is not None
        raise failure

    async def aclose(self) -> None:
        await self._inner.aclose()


def _one_line(text: object, limit: int = _MAX_DESCRIPTION_CHARS) -> str:
    """An endpoint's string as one line: control characters (CR LF in Entra's traces) become spaces."""
    cleaned = "".join(ch if ch.isprintable() else " " for ch in str(text))
    return truncate(" ".join(cleaned.split()), limit)


def _endpoint_name(url: httpx.URL) -> str:
    return url.host if url.port is None else f"{url.host}:{url.port}"


def _parse_lifetime(value: object) -> float | None:
    """``expires_in`` in seconds, at most :data:`LONGEST_LIFETIME_SECONDS`; None when absent or not a positive number.

    A huge or infinite value must not reach the clock arithmetic: ``round(inf)`` raises, and a token kept
    forever would outlive its revocation.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return None
    if not isinstance(value, (int, float)) or not value > 0:  # NaN is not above 0 either
        return None
    # Compared before converting: float() of a 400-digit integer raises.
    return LONGEST_LIFETIME_SECONDS if value >= LONGEST_LIFETIME_SECONDS else float(value)


@dataclass(frozen=True)
class _Issued:
    value: str = field(repr=False)
    lifetime: float | None


async def _fetch(grant: OAuth2Grant, policy: MailPolicy, note: Note) -> _Issued:
    """One token request. Raises a MailError subclass (step :data:`STEP_TOKEN`) on any failure."""
    redactor = Redactor([grant.client_secret])
    try:
        url = httpx.URL(grant.token_url)
    except httpx.InvalidURL:
        raise OAuth2TokenError("The token URL is not a valid URL", step=STEP_TOKEN) from None
    if not url.host:
        raise OAuth2TokenError("The token URL has no host", step=STEP_TOKEN)
    if url.userinfo:
        raise ConfigurationRefused("The token URL must not contain a user name or password", step=STEP_TOKEN)
    endpoint = _endpoint_name(url)
    request = _build_request(grant)
    for secret in request.secrets:
        redactor.add(secret)
        redactor.add(quote(secret, safe=""))
    shown_url = str(url.copy_with(query=None, fragment=None))
    scope = f", scope {grant.scope}" if grant.scope else ""
    note(f"Token request to {shown_url}: {request.kind}{scope}")

    timeout = httpx.Timeout(
        connect=policy.connect_timeout,
        read=policy.command_timeout,
        write=policy.command_timeout,
        pool=policy.connect_timeout,
    )
    start = time.perf_counter()
    try:
        client = httpx.AsyncClient(
            transport=_GuardedTransport(policy, note),
            timeout=timeout,
            follow_redirects=False,
            trust_env=False,
        )
        async with (
            asyncio.timeout(policy.total_timeout),
            client,
            client.stream(
                "POST", url, content=request.body.encode("ascii"), headers=request.headers
            ) as response,
        ):
            raw = bytearray()
            async for chunk in response.aiter_bytes():
                raw += chunk
                if len(raw) > MAX_RESPONSE_BYTES:
                    raise OAuth2TokenError(
                        f"The token endpoint {endpoint} sent more than {MAX_RESPONSE_BYTES // 1024} KiB; "
                        "that is not a token answer",
                        step=STEP_TOKEN,
                    )
            status, content_type = response.status_code, response.headers.get("content-type", "")
    except MailError as exc:
        exc.message = redactor.scrub(exc.message)
        exc.args = (exc.message,)
        exc.step = exc.step or STEP_TOKEN
        raise
    except TimeoutError as exc:
        raise MailTimeout(
            f"The token endpoint {endpoint} did not answer within "
            f"{seconds(policy.total_timeout)} s (total timeout)",
            step=STEP_TOKEN,
        ) from exc
    except httpx.TimeoutException as exc:
        deadline = (
            policy.connect_timeout
            if isinstance(exc, (httpx.ConnectTimeout, httpx.PoolTimeout))
            else policy.command_timeout
        )
        raise MailTimeout(
            f"No answer from the token endpoint {endpoint} within {seconds(deadline)} s", step=STEP_TOKEN
        ) from exc
    except httpx.HTTPError as exc:
        verify = certificate_verify_message(exc)
        if verify is not None:
            raise TLSError(
                f"Certificate verify failed for the token endpoint {endpoint}: {verify}", step=STEP_TOKEN
            ) from exc
        ssl_error = find_ssl_error(exc)
        if ssl_error is not None:
            reason = ssl_error.reason or str(ssl_error)
            raise TLSError(
                f"TLS failure with the token endpoint {endpoint}: {reason}", step=STEP_TOKEN
            ) from exc
        raise ConnectError(
            redactor.scrub(
                f"Token request to {endpoint} failed: {_one_line(exc, 200) or type(exc).__name__}"
            ),
            step=STEP_TOKEN,
        ) from exc
    note(f"Token endpoint answered HTTP {status}", elapsed_ms(start))
    return _interpret(status, content_type, bytes(raw), endpoint, redactor)


def _interpret(status: int, content_type: str, raw: bytes, endpoint: str, redactor: Redactor) -> _Issued:
    """The token in a 200 answer, or the endpoint's own ``error``/``error_description`` as an error."""
    try:
        data: Any = json.loads(raw)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        what = f"HTTP {status}" + (f" ({_one_line(content_type, 80)})" if content_type else "")
        if 300 <= status < 400:
            what += "; redirects are not followed, give the token endpoint itself"
        raise OAuth2TokenError(
            f"The token endpoint {endpoint} answered {what} instead of an OAuth 2.0 JSON answer",
            step=STEP_TOKEN,
        )
    if status != 200 or "error" in data:
        error = redactor.scrub(_one_line(data.get("error", ""), 80))
        description = redactor.scrub(_one_line(data.get("error_description", "")))
        said = ": ".join(part for part in (error, description) if part) or "no error code given"
        raise OAuth2TokenError(
            f"The token endpoint {endpoint} refused the request (HTTP {status}): {said}",
            error=error,
            error_description=description,
            step=STEP_TOKEN,
        )
    token = data.get("access_token")
    if not isinstance(token, str) or not token:
        raise OAuth2TokenError(
            f"The token endpoint {endpoint} answered without an access_token", step=STEP_TOKEN
        )
    if not token.isascii() or not token.isprintable() or " " in token:
        raise OAuth2TokenError(
            f"The token endpoint {endpoint} issued an access token that cannot be sent in XOAUTH2",
            step=STEP_TOKEN,
        )
    token_type = data.get("token_type", "Bearer")
    if not isinstance(token_type, str) or token_type.lower() != "bearer":
        raise OAuth2TokenError(
            f"The token endpoint {endpoint} issued a {_one_line(token_type, 40)!r} token; "
            "XOAUTH2 needs a Bearer token",
            step=STEP_TOKEN,
        )
    return _Issued(token, _parse_lifetime(data.get("expires_in")))


# -- the cache -----------------------------------------------------------------------------------------


@dataclass
class _Entry:
    value: str = field(repr=False)
    usable_until: float  # clock() value
    known_lifetime: bool


def _ignore(message: str, elapsed_ms: float | None = None, level: str = "info") -> None:
    return None


@dataclass
class _Refusal:
    """A refusal remembered until ``until``: the endpoint's (``error``), or the mail server's of a new token."""

    until: float  # clock() value
    error: OAuth2TokenError | None = None


# RFC 6749 5.2's errors that say "try again": everything else the endpoint says will not change by itself.
_TRANSIENT_ERRORS = frozenset({"temporarily_unavailable", "server_error"})


class TokenCache:
    """Access tokens per grant, for one worker process (one event loop).

    A token is reused until :data:`REFRESH_MARGIN_SECONDS` before it expires. Concurrent callers for the
    same grant share one request (single flight). ``refresh=True`` means "the server refused the token I
    was given": the cached token is dropped unless another caller has already replaced it meanwhile, so a
    burst of rejections still costs one request.

    Refusals are remembered for :data:`REFUSAL_MEMORY_SECONDS`, so that a portal whose credentials are
    wrong costs the provider one request a period, not one per message: the endpoint's refusal (an OAuth
    error code other than the transient ones) is answered from memory, and once the mail server has refused
    a token issued after a refusal, asking again with ``rejected`` returns that token rather than a new one.
    Failures without an error code (timeouts, connection errors) are not remembered: they cost the caller
    their own deadline.
    """

    def __init__(
        self, *, clock: Callable[[], float] = time.monotonic, refusal_memory: float = REFUSAL_MEMORY_SECONDS
    ) -> None:
        self._clock = clock
        self._refusal_memory = refusal_memory
        self._entries: dict[str, _Entry] = {}
        self._refusals: dict[str, _Refusal] = {}
        self._inflight: dict[str, asyncio.Task[_Entry]] = {}

    def __len__(self) -> int:
        """Tokens held: one per grant in use (what a metric of the cache's size reports)."""
        return len(self._entries)

    async def get(self, grant: OAuth2Grant, policy: MailPolicy, *, refresh: bool = False) -> str:
        """An access token for ``grant``; ``refresh=True`` drops a cached one first.

        Raises:
            MailError: with step :data:`STEP_TOKEN`; :class:`OAuth2TokenError` when the endpoint refused.
        """
        return (await self.token(grant, policy, refresh=refresh)).value

    async def token(
        self,
        grant: OAuth2Grant,
        policy: MailPolicy,
        *,
        refresh: bool = False,
        rejected: str | None = None,
        note: Note | None = None,
    ) -> AccessToken:
        """Like :meth:`get`, with the token's remaining lifetime and whether it was cached.

        Args:
            refresh: Drop the cached token first.
            rejected: With ``refresh``, the token the server refused: a cached token other than this one
                (another caller already replaced it) is kept and returned. Within the refusal memory of
                an earlier such refresh, the rejected token itself comes back: no new one is asked for.
            note: Receives the request's diagnostics (resolution, HTTP status) when this call makes it.
        """
        note = note or _ignore
        key = grant.fingerprint()
        self._sweep()
        entry = self._entries.get(key)
        replaced = rejected is not None and entry is not None and entry.value != rejected
        if entry is not None and self._usable(entry) and (not refresh or replaced):
            return self._answer(entry, cached=True)
        refusal = self._refusals.get(key)
        if refusal is not None:
            wait = seconds(max(1, round(refusal.until - self._clock())))
            if refusal.error is not None:
                error = copy.copy(refusal.error)
                error.message = f"{error.message} (an answer of moments ago; the endpoint is asked again in {wait} s)"
                error.args = (error.message,)
                raise error
            if rejected is not None and entry is not None and self._usable(entry):
                note(f"The server refused a new token moments ago too; no new one is asked for {wait} s", level="warning")
                return self._answer(entry, cached=True)
        if rejected is not None:
            # The one request of this period: should the server refuse its token as well, that is remembered.
            self._refusals[key] = _Refusal(self._clock() + self._refusal_memory)
        task = self._inflight.get(key)
        mine = task is None
        if task is None:
            self._entries.pop(key, None)
            task = asyncio.get_running_loop().create_task(self._refill(key, grant, policy, note))
            self._inflight[key] = task
            task.add_done_callback(lambda done: self._settle(key, done))
        else:
            note("Waiting for the token request already under way for these settings")
        try:
            fresh = await asyncio.shield(task)
        except MailError as exc:
            # Each caller gets its own copy: sessions fill in details and transcript on the exception.
            raise copy.copy(exc) from exc
        return self._answer(fresh, cached=not mine)

    async def _refill(self, key: str, grant: OAuth2Grant, policy: MailPolicy, note: Note) -> _Entry:
        try:
            issued = await _fetch(grant, policy, note)
        except OAuth2TokenError as exc:
            if exc.error and exc.error not in _TRANSIENT_ERRORS:
                self._refusals[key] = _Refusal(self._clock() + self._refusal_memory, copy.copy(exc))
            raise
        now = self._clock()
        lifetime = issued.lifetime if issued.lifetime is not None else UNKNOWN_LIFETIME_SECONDS
        entry = _Entry(issued.value, now + lifetime - REFRESH_MARGIN_SECONDS, issued.lifetime is not None)
        if issued.lifetime is not None:
            note(f"Got a Bearer token valid for {seconds(round(issued.lifetime))} s")
        else:
            note(
                "Got a Bearer token; the endpoint did not say for how long (kept for 5 minutes)",
                level="warning",
            )
        # Cached last: whatever fails before this leaves no token behind.
        self._entries[key] = entry
        return entry

    def _settle(self, key: str, task: asyncio.Task[_Entry]) -> None:
        if self._inflight.get(key) is task:
            del self._inflight[key]
        if not task.cancelled():
            task.exception()  # retrieved here too, in case every caller had gone

    def _usable(self, entry: _Entry) -> bool:
        return self._clock() < entry.usable_until

    def _answer(self, entry: _Entry, *, cached: bool) -> AccessToken:
        remaining = entry.usable_until - self._clock()
        return AccessToken(entry.value, max(0.0, remaining) if entry.known_lifetime else None, cached)

    def _sweep(self) -> None:
        # Entries of settings no longer used would otherwise stay for the life of the process.
        now = self._clock()
        for key in [k for k, e in self._entries.items() if e.usable_until <= now and k not in self._inflight]:
            del self._entries[key]
        for key in [k for k, r in self._refusals.items() if r.until <= now]:
            del self._refusals[key]
