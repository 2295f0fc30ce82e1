"""Real OAuth 2.0 parts for the tests: a token endpoint and an SMTP server that takes only its tokens.

* :class:`OAuthProvider`: an Authlib ``AuthorizationServer`` served over HTTP(S) on 127.0.0.1 by a
  ``ThreadingHTTPServer`` in a thread. It issues Bearer tokens by client credentials (client secret, post
  or basic; or a client assertion signed with a certificate's key, RFC 7523 ``private_key_jwt``, located by
  its ``x5t#S256`` thumbprint as Entra ID does) and by the JWT bearer grant (RFC 7523, Google's service
  account flow, ``sub`` = the mailbox). It counts requests, can issue short-lived tokens, expire or revoke
  what it issued, and answer the next requests with a canned error (``AADSTS7000215``).
* :class:`XOAuth2Smtp`: an aiosmtpd server (a ``Controller`` thread, so it serves both tests in the
  event loop and a ``smtpsettings serve`` process) that offers AUTH XOAUTH2 only, accepts a token only
  while the provider says it is valid for that mailbox, answers a bad one the way Gmail and Exchange do
  (334 with a base64 JSON error, then 535) and refuses MAIL before authentication.
* Credentials: :func:`make_certificate` (self-signed RSA certificate + key PEM) and
  :func:`make_service_account_key` (a Google-style JSON key).

Fixtures, for any test module (``tests/`` is on ``pythonpath``)::

    from oauthkit import oauth_provider, oauth_provider_tls, xoauth2_smtp  # noqa: F401  (fixtures)

    def test_x(oauth_provider: OAuthProvider, xoauth2_smtp: XOAuth2Smtp) -> None:
        client = oauth_provider.add_secret_client()
        grant = oauth_provider.grant("generic", client)            # an OAuth2Grant for mail.send_message
        body = oauth_provider.wire("generic", client)              # the settings' "oauth2" object

For module-scoped parts, use the context managers :func:`running_provider` and :func:`running_xoauth2_smtp`.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import json
import secrets
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar
from urllib.parse import parse_qsl, urlsplit

import pytest
import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as SMTPServer
from aiosmtpd.smtp import AuthResult, Envelope, Session
from authlib.oauth2.rfc6749 import AuthorizationServer, ClientMixin, OAuth2Request
from authlib.oauth2.rfc6749.errors import InvalidClientError
from authlib.oauth2.rfc6749.grants import ClientCredentialsGrant
from authlib.oauth2.rfc6749.requests import BasicOAuth2Payload
from authlib.oauth2.rfc6750 import BearerTokenGenerator
from authlib.oauth2.rfc7523 import JWTBearerClientAssertion, JWTBearerGrant
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from joserfc import jws, jwt
from joserfc.errors import JoseError
from joserfc.jwk import RSAKey

from smtpsettings.mail import OAuth2Grant, default_scope

__all__ = [
    "MAILBOX",
    "CertificateClient",
    "OAuthProvider",
    "SecretClient",
    "ServiceAccount",
    "XOAuth2Smtp",
    "make_certificate",
    "make_service_account_key",
    "oauth_provider",
    "oauth_provider_tls",
    "running_provider",
    "running_xoauth2_smtp",
    "xoauth2_smtp",
]

MAILBOX = "mailer@example.com"
"""The mailbox the tests send as (XOAUTH2 user, Google's ``sub``)."""

_ASSERTION_ALGORITHMS = ["PS256", "RS256"]


# -- credentials ---------------------------------------------------------------------------------------


def _rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _pem_private(key: rsa.RSAPrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode("ascii")


@dataclass(frozen=True)
class Certificate:
    """A self-signed certificate with its key, as an admin uploads it for Microsoft (``certificate``)."""

    pem: str = field(repr=False)  # certificate, then private key
    certificate_pem: str
    public_key_pem: str
    thumbprint_sha256: str  # base64url, the x5t#S256 header value


def make_certificate(common_name: str = "smtpsettings test app") -> Certificate:
    """A fresh self-signed RSA certificate and key (cryptography), valid from an hour ago for a year."""
    key = _rsa_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=365))
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM).decode("ascii")
    public_pem = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode("ascii")
    )
    thumbprint = base64.urlsafe_b64encode(cert.fingerprint(hashes.SHA256())).rstrip(b"=").decode("ascii")
    return Certificate(cert_pem + _pem_private(key), cert_pem, public_pem, thumbprint)


@dataclass(frozen=True)
class ServiceAccountKey:
    """A Google service account JSON key (``serviceAccountKey``) and its public half."""

    json: str = field(repr=False)
    client_email: str
    client_id: str
    key_id: str
    public_key_pem: str


def make_service_account_key(
    client_email: str = "smtp-sender@example-project.iam.gserviceaccount.com",
) -> ServiceAccountKey:
    """A key shaped like the one Google's console downloads, with a fresh RSA key."""
    key = _rsa_key()
    key_id = secrets.token_hex(20)
    client_id = str(10**20 + secrets.randbelow(10**20))
    body = {
        "type": "service_account",
        "project_id": "example-project",
        "private_key_id": key_id,
        "private_key": _pem_private(key),
        "client_email": client_email,
        "client_id": client_id,
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": "https://oauth2.googleapis.com/token",
    }
    public_pem = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode("ascii")
    )
    return ServiceAccountKey(json.dumps(body, indent=2), client_email, client_id, key_id, public_pem)


# -- the provider's clients ----------------------------------------------------------------------------


@dataclass
class _Client(ClientMixin):
    client_id: str
    secret: str = field(default="", repr=False)
    auth_methods: tuple[str, ...] = ()
    grant_types: tuple[str, ...] = ("client_credentials",)
    public_key_pem: str = ""
    thumbprint_sha256: str = ""
    subjects: frozenset[str] | None = None  # JWT bearer: mailboxes it may act as (None: any)

    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> str:
        return ""

    def get_allowed_scope(self, scope: str) -> str:
        return scope or ""

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return False

    def check_client_secret(self, client_secret: str) -> bool:
        return bool(self.secret) and secrets.compare_digest(client_secret.encode(), self.secret.encode())

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return method in self.auth_methods

    def check_response_type(self, response_type: str) -> bool:
        return False

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type in self.grant_types


@dataclass(frozen=True)
class SecretClient:
    client_id: str
    secret: str = field(repr=False)


@dataclass(frozen=True)
class CertificateClient:
    client_id: str
    certificate: Certificate = field(repr=False)


@dataclass(frozen=True)
class ServiceAccount:
    key: ServiceAccountKey = field(repr=False)

    @property
    def client_email(self) -> str:
        return self.key.client_email


Credential = SecretClient | CertificateClient | ServiceAccount


@dataclass
class IssuedToken:
    value: str = field(repr=False)
    client_id: str
    subject: str | None
    scope: str
    expires_at: float  # time.time()
    revoked: bool = False


# -- the authorization server --------------------------------------------------------------------------


class _FormRequest(OAuth2Request):
    """An HTTP request as Authlib's grants read it: headers and the urlencoded form."""

    def __init__(self, method: str, uri: str, headers: Any, form: dict[str, str]) -> None:
        super().__init__(method, uri, headers=headers)
        self._form = form
        self.payload = BasicOAuth2Payload(form)

    @property
    def args(self) -> dict[str, str]:
        return {}

    @property
    def form(self) -> dict[str, str]:
        return self._form


class _CertificateAssertion(JWTBearerClientAssertion):
    """private_key_jwt as Entra ID does it: the certificate is found by ``x5t#S256``, PS256 or RS256."""

    CLIENT_AUTH_METHOD = "private_key_jwt"

    def __init__(self, provider: OAuthProvider) -> None:
        super().__init__(validate_jti=True, leeway=60)
        self._provider = provider
        self._seen_jti: set[str] = set()

    def get_audiences(self) -> list[str]:
        return self._provider.token_urls()

    def validate_jti(self, claims: Any, jti: str) -> bool:
        if jti in self._seen_jti:
            return False
        self._seen_jti.add(jti)
        return True

    def resolve_client_public_key(self, client: _Client) -> RSAKey:
        return RSAKey.import_key(client.public_key_pem)

    def process_assertion_claims(self, assertion: str, resolve_key: Any) -> Any:
        try:
            header = jws.extract_compact(assertion.encode()).headers()
        except JoseError as exc:
            raise InvalidClientError(description="AADSTS50027: Invalid JWT token.") from exc
        client = self._provider.client_by_thumbprint(str(header.get("x5t#S256", "")))
        if client is None:
            raise InvalidClientError(
                description="AADSTS700027: The certificate with identifier used to sign the client assertion "
                "is not registered on application."
            )
        try:
            token = jwt.decode(assertion, resolve_key, algorithms=_ASSERTION_ALGORITHMS)
        except JoseError as exc:
            raise InvalidClientError(
                description=f"AADSTS700027: Client assertion failed signature validation. {exc.description}"
            ) from exc
        self.verify_claims(token.claims)
        return token.claims


class _ClientCredentials(ClientCredentialsGrant):
    TOKEN_ENDPOINT_AUTH_METHODS: ClassVar[list[str]] = [
        "client_secret_basic",
        "client_secret_post",
        "private_key_jwt",
    ]


class _ServiceAccountGrant(JWTBearerGrant):
    """Google's flow: the service account signs an assertion naming the mailbox as ``sub``."""

    provider: OAuthProvider  # set on the subclass made per provider

    def get_audiences(self) -> list[str]:
        return self.provider.token_urls()

    def resolve_issuer_client(self, issuer: str) -> _Client | None:
        return self.provider.client(issuer)

    def resolve_client_public_key(self, client: _Client) -> RSAKey:
        return RSAKey.import_key(client.public_key_pem)

    def authenticate_user(self, subject: str) -> str | None:
        return subject if "@" in subject else None

    def has_granted_permission(self, client: _Client, user: str) -> bool:
        return client.subjects is None or user in client.subjects


class _Server(AuthorizationServer):
    def __init__(self, provider: OAuthProvider) -> None:
        super().__init__()
        self._provider = provider
        self.register_token_generator(
            "default",
            BearerTokenGenerator(
                access_token_generator=lambda **_: secrets.token_urlsafe(32),
                expires_generator=lambda client, grant_type: provider.expires_in,
            ),
        )
        self.register_client_auth_method("private_key_jwt", _CertificateAssertion(provider))
        self.register_grant(_ClientCredentials)
        self.register_grant(type("ServiceAccountGrant", (_ServiceAccountGrant,), {"provider": provider}))

    def query_client(self, client_id: str) -> _Client | None:
        return self._provider.client(client_id)

    def save_token(self, token: dict[str, Any], request: OAuth2Request) -> None:
        self._provider.record(token, request)

    def send_signal(self, name: str, *args: Any, **kwargs: Any) -> None:
        return None

    def create_oauth2_request(self, request: OAuth2Request) -> OAuth2Request:
        return request

    def handle_response(self, status: int, body: Any, headers: Any) -> tuple[int, Any, Any]:
        return status, body, headers


class OAuthProvider:
    """A token endpoint on 127.0.0.1 with the state tests inspect.

    Attributes:
        expires_in: Lifetime (seconds) of the tokens it issues from now on.
        hits: Token requests received (answered or refused).
        issued: Every token issued, oldest first.
        requests: The form fields of each request (for assertions about what the client sent).
    """

    def __init__(self, tls: trustme.CA | None = None) -> None:
        self.expires_in = 3600
        self.hits = 0
        self.issued: list[IssuedToken] = []
        self.requests: list[dict[str, str]] = []
        self._clients: dict[str, _Client] = {}
        self._canned: list[tuple[int, dict[str, str] | bytes]] = []
        self._lock = threading.RLock()
        self._server_impl = _Server(self)
        self._http = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._http.daemon_threads = True
        self.scheme = "http"
        self.host = "127.0.0.1"
        if tls is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            tls.issue_cert("localhost", "127.0.0.1").configure_cert(context)
            self._http.socket = context.wrap_socket(self._http.socket, server_side=True)
            self.scheme, self.host = "https", "localhost"
        self.port = int(self._http.server_address[1])
        # A short poll keeps stop() (shutdown waits for the loop to notice) quick.
        self._thread = threading.Thread(
            target=self._http.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="oauth-provider",
            daemon=True,
        )

    # -- life ---------------------------------------------------------------------------------------

    def start(self) -> OAuthProvider:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._http.shutdown()
        self._http.server_close()
        self._thread.join(5)

    @property
    def token_url(self) -> str:
        """The endpoint to put in ``tokenUrl`` / :attr:`OAuth2Grant.token_url`."""
        return f"{self.scheme}://{self.host}:{self.port}/token"

    def token_urls(self) -> list[str]:
        """Accepted assertion audiences: the endpoint under each name it answers to."""
        return [f"{self.scheme}://{host}:{self.port}/token" for host in ("127.0.0.1", "localhost")]

    # -- clients ------------------------------------------------------------------------------------

    def add_secret_client(
        self,
        client_id: str | None = None,
        secret: str | None = None,
        *,
        methods: tuple[str, ...] = ("client_secret_post", "client_secret_basic"),
    ) -> SecretClient:
        """A confidential client for client credentials with a secret (Microsoft and generic)."""
        client = SecretClient(
            client_id or f"app-{secrets.token_hex(6)}", secret or f"s3cret~{secrets.token_urlsafe(18)}"
        )
        with self._lock:
            self._clients[client.client_id] = _Client(client.client_id, client.secret, methods)
        return client

    def add_certificate_client(
        self, client_id: str | None = None, certificate: Certificate | None = None
    ) -> CertificateClient:
        """A client that authenticates with a client assertion signed by its certificate's key (Microsoft)."""
        cert = certificate or make_certificate()
        client = CertificateClient(client_id or f"app-{secrets.token_hex(6)}", cert)
        with self._lock:
            self._clients[client.client_id] = _Client(
                client.client_id,
                "",
                ("private_key_jwt",),
                public_key_pem=cert.public_key_pem,
                thumbprint_sha256=cert.thumbprint_sha256,
            )
        return client

    def add_service_account(
        self, key: ServiceAccountKey | None = None, *, subjects: set[str] | None = None
    ) -> ServiceAccount:
        """A Google service account with domain-wide delegation (for ``subjects``, or any mailbox)."""
        account = ServiceAccount(key or make_service_account_key())
        with self._lock:
            self._clients[account.client_email] = _Client(
                account.client_email,
                "",
                (),
                grant_types=(JWTBearerGrant.GRANT_TYPE,),
                public_key_pem=account.key.public_key_pem,
                subjects=frozenset(subjects) if subjects is not None else None,
            )
        return account

    def client(self, client_id: str) -> _Client | None:
        with self._lock:
            return self._clients.get(client_id)

    def client_by_thumbprint(self, thumbprint: str) -> _Client | None:
        with self._lock:
            return next(
                (c for c in self._clients.values() if thumbprint and c.thumbprint_sha256 == thumbprint), None
            )

    # -- what the mail code and the settings need ---------------------------------------------------

    def grant(
        self, provider: str, credential: Credential, *, subject: str = MAILBOX, scope: str | None = None
    ) -> OAuth2Grant:
        """An :class:`OAuth2Grant` for ``credential`` with the token URL pointing here."""
        scope = default_scope(provider) if scope is None else scope
        if isinstance(credential, ServiceAccount):
            return OAuth2Grant(
                provider, self.token_url, scope, subject=subject, service_account_key=credential.key.json
            )
        if isinstance(credential, CertificateClient):
            return OAuth2Grant(
                provider,
                self.token_url,
                scope,
                client_id=credential.client_id,
                tenant_id="contoso.onmicrosoft.com",
                certificate=credential.certificate.pem,
            )
        tenant = "contoso.onmicrosoft.com" if provider == "microsoft" else ""
        return OAuth2Grant(
            provider,
            self.token_url,
            scope,
            client_id=credential.client_id,
            tenant_id=tenant,
            client_secret=credential.secret,
        )

    def wire(self, provider: str, credential: Credential, **extra: str) -> dict[str, str]:
        """The settings' ``oauth2`` object (wire names) for ``credential``, ``tokenUrl`` pointing here."""
        body: dict[str, str] = {"provider": provider, "tokenUrl": self.token_url}
        if provider == "microsoft":
            body["tenantId"] = "contoso.onmicrosoft.com"
        if isinstance(credential, ServiceAccount):
            body["serviceAccountKey"] = credential.key.json
        elif isinstance(credential, CertificateClient):
            body.update(clientId=credential.client_id, certificate=credential.certificate.pem)
        else:
            body.update(clientId=credential.client_id, clientSecret=credential.secret)
        return {**body, **extra}

    # -- token state --------------------------------------------------------------------------------

    def record(self, token: dict[str, Any], request: OAuth2Request) -> None:
        with self._lock:
            self.issued.append(
                IssuedToken(
                    token["access_token"],
                    request.client.client_id,
                    request.user if isinstance(request.user, str) else None,
                    token.get("scope", ""),
                    time.time() + float(token.get("expires_in", self.expires_in)),
                )
            )

    def check(self, token: str, user: str) -> str | None:
        """``None`` when ``token`` is valid for ``user``, else why not (the SMTP server's view)."""
        with self._lock:
            found = next(
                (t for t in self.issued if secrets.compare_digest(t.value.encode(), token.encode())), None
            )
            if found is None:
                return "unknown token"
            if found.revoked:
                return "revoked token"
            if time.time() >= found.expires_at:
                return "expired token"
            if found.subject is not None and found.subject != user:
                return "token issued for another mailbox"
            return None

    def expire_all(self) -> None:
        """Every token issued so far stops working (as if expired), while a client may still cache it."""
        with self._lock:
            for token in self.issued:
                token.revoked = True

    def fail_next(self, error: str, description: str = "", *, status: int = 400, times: int = 1) -> None:
        """Answer the next ``times`` requests with this OAuth 2.0 error instead of processing them."""
        body = {"error": error, **({"error_description": description} if description else {})}
        with self._lock:
            self._canned.extend([(status, body)] * times)

    def canned_token(self, expires_in: str) -> None:
        """Answer the next request with a token whose ``expires_in`` is the JSON text ``expires_in``, as written."""
        body = f'{{"access_token": "canned-{secrets.token_hex(8)}", "token_type": "Bearer", "expires_in": {expires_in}}}'
        with self._lock:
            self._canned.append((200, body.encode()))

    def _answer(self, method: str, path: str, headers: Any, form: dict[str, str]) -> tuple[int, Any]:
        with self._lock:
            self.hits += 1
            self.requests.append(dict(form))
            if self._canned:
                return self._canned.pop(0)
        if urlsplit(path).path != "/token":
            return 404, {"error": "not_found"}
        uri = f"{self.scheme}://{self.host}:{self.port}{path}"
        request = _FormRequest(method, uri, headers, form)
        status, body, _ = self._server_impl.create_token_response(request)
        return status, body


def _handler_for(provider: OAuthProvider) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length).decode("utf-8", "replace")
            form = dict(parse_qsl(raw, keep_blank_values=True))
            status, body = provider._answer("POST", self.path, self.headers, form)
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            self.send_response(405)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            return None

    return Handler


@contextmanager
def running_provider(tls: trustme.CA | None = None) -> Iterator[OAuthProvider]:
    """An :class:`OAuthProvider`: http on 127.0.0.1, or https as ``localhost`` with a cert from ``tls``."""
    provider = OAuthProvider(tls).start()
    try:
        yield provider
    finally:
        provider.stop()


# -- the SMTP server -----------------------------------------------------------------------------------


class XOAuth2Inbox:
    """aiosmtpd handler: AUTH XOAUTH2 against the provider's tokens, MAIL only after AUTH, keeps messages."""

    def __init__(self, provider: OAuthProvider) -> None:
        self.provider = provider
        self.messages: list[Message] = []
        self.envelopes: list[Envelope] = []
        self.logins: list[str] = []  # mailboxes that authenticated
        self.refusals: list[str] = []  # why each refused AUTH was refused
        self.hang_up_after_refusal = False  # close the connection after the 535, as some servers do
        # Answer AUTH's initial response with an empty 334 and read the response from the next line, as
        # servers that do not take initial responses do.
        self.ignore_initial_response = False
        self.received = threading.Event()

    async def auth_XOAUTH2(self, server: SMTPServer, args: list[str]) -> AuthResult:
        if len(args) > 1 and not self.ignore_initial_response:
            blob = args[1]
        else:
            answer = await server.challenge_auth(b"", encode_to_b64=False)
            if not isinstance(answer, bytes):
                return AuthResult(success=False, handled=False)
            blob = base64.b64encode(answer).decode()
        try:
            fields = base64.b64decode(blob, validate=True).decode("utf-8").split("\x01")
        except (binascii.Error, UnicodeDecodeError):
            return AuthResult(success=False, handled=False, message="501 5.5.2 Cannot decode the response")
        values = dict(item.split("=", 1) for item in fields if "=" in item)
        user, auth = values.get("user", ""), values.get("auth", "")
        token = auth.removeprefix("Bearer ") if auth.startswith("Bearer ") else ""
        why = self.provider.check(token, user) if token else "no Bearer token"
        if why is None:
            self.logins.append(user)
            return AuthResult(success=True, handled=False, auth_data=user)
        self.refusals.append(why)
        error = json.dumps(
            {"status": "401", "schemes": "bearer", "scope": "https://mail.google.com/"}
        ).encode()
        await server.challenge_auth(error)  # the client answers with an empty line
        if self.hang_up_after_refusal:
            await server.push("535 5.7.3 Authentication unsuccessful")
            assert server.transport is not None
            server.transport.close()
            return AuthResult(success=False, handled=True)
        return AuthResult(success=False, handled=False, message="535 5.7.3 Authentication unsuccessful")

    async def handle_MAIL(
        self, server: SMTPServer, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if not session.authenticated:
            return "530 5.7.57 Client not authenticated to send mail"
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_DATA(self, server: SMTPServer, session: Session, envelope: Envelope) -> str:
        self.envelopes.append(envelope)
        self.messages.append(message_from_bytes(envelope.original_content or b""))
        self.received.set()
        return "250 2.0.0 OK queued"


@dataclass
class XOAuth2Smtp:
    """A running XOAUTH2-only SMTP server."""

    host: str
    port: int
    inbox: XOAuth2Inbox

    @property
    def messages(self) -> list[Message]:
        return self.inbox.messages


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def running_xoauth2_smtp(
    provider: OAuthProvider,
    *,
    starttls: ssl.SSLContext | None = None,
    implicit_tls: ssl.SSLContext | None = None,
) -> Iterator[XOAuth2Smtp]:
    """An aiosmtpd server on 127.0.0.1 (a thread of its own) taking only ``provider``'s tokens.

    Without TLS, AUTH is allowed in plain text (loopback); with ``starttls`` it is required first.
    """
    inbox = XOAuth2Inbox(provider)
    kwargs: dict[str, Any] = {"auth_exclude_mechanism": ["LOGIN", "PLAIN"]}
    if starttls is not None:
        kwargs.update(tls_context=starttls, require_starttls=True)
    elif implicit_tls is None:
        kwargs.update(auth_require_tls=False)
    # aiosmtpd's Controller checks readiness by connecting to its port, so it needs a real number.
    controller = Controller(
        inbox,
        hostname="127.0.0.1",
        port=_free_port(),
        ssl_context=implicit_tls,
        server_hostname="localhost",
        **kwargs,
    )
    controller.start()
    try:
        yield XOAuth2Smtp("127.0.0.1", int(controller.port), inbox)
    finally:
        controller.stop()


# -- fixtures ------------------------------------------------------------------------------------------


@pytest.fixture
def oauth_provider() -> Iterator[OAuthProvider]:
    """A token endpoint on http://127.0.0.1:PORT/token (plain http is allowed to loopback)."""
    with running_provider() as provider:
        yield provider


@pytest.fixture
def oauth_provider_tls(ca: trustme.CA) -> Iterator[OAuthProvider]:
    """A token endpoint on https://localhost:PORT/token, its certificate from the session's ``ca``."""
    with running_provider(ca) as provider:
        yield provider


@pytest.fixture
def xoauth2_smtp(oauth_provider: OAuthProvider) -> Iterator[XOAuth2Smtp]:
    """An SMTP server on 127.0.0.1 that accepts AUTH XOAUTH2 with ``oauth_provider``'s valid tokens only."""
    with running_xoauth2_smtp(oauth_provider) as server:
        yield server
