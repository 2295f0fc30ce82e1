"""OAuth 2.0 (AUTH XOAUTH2) against a real Authlib token endpoint and a real aiosmtpd server on loopback."""

from __future__ import annotations

import asyncio
import base64
import json
from email.message import EmailMessage
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from mailservers import Sink, StartServer, non_loopback_address

from oauthkit import (
    MAILBOX,
    OAuthProvider,
    XOAuth2Smtp,
    make_certificate,
    make_service_account_key,
    running_provider,
)
from smtpsettings.domain.mailtest import PERCENTS
from smtpsettings.mail import (
    STEP_AUTHENTICATE,
    STEP_CONNECT,
    STEP_SEND,
    STEP_TOKEN,
    STEPS,
    AuthenticationError,
    ConfigurationRefused,
    ConnectError,
    MailError,
    MailPolicy,
    MailTimeout,
    OAuth2Grant,
    OAuth2TokenError,
    SendReport,
    SmtpTarget,
    TLSError,
    TokenCache,
    build_test_message,
    default_scope,
    default_token_url,
    send_message,
)
from smtpsettings.mail.oauth2 import (
    LONGEST_LIFETIME_SECONDS,
    REFRESH_MARGIN_SECONDS,
    REFUSAL_MEMORY_SECONDS,
    certificate_problem,
    service_account_key_problem,
)

FAST = MailPolicy(connect_timeout=2, command_timeout=2, total_timeout=10, helo_name="client.test")

KINDS = ["generic", "microsoft-secret", "microsoft-certificate", "google"]


def message() -> EmailMessage:
    return build_test_message(
        sender_address="noreply@example.com", sender_display_name="Portal", recipient="admin@example.org"
    )


def grant_for(provider: OAuthProvider, kind: str) -> OAuth2Grant:
    if kind == "generic":
        return provider.grant("generic", provider.add_secret_client(methods=("client_secret_basic",)))
    if kind == "microsoft-secret":
        return provider.grant("microsoft", provider.add_secret_client(methods=("client_secret_post",)))
    if kind == "microsoft-certificate":
        return provider.grant("microsoft", provider.add_certificate_client())
    return provider.grant("google", provider.add_service_account(subjects={MAILBOX}))


def oauth_target(smtp: XOAuth2Smtp, grant: OAuth2Grant, *, username: str = MAILBOX) -> SmtpTarget:
    return SmtpTarget(
        host=smtp.host, port=smtp.port, enable_ssl=False, enable_auth=True, username=username, oauth2=grant
    )


class Steps:
    def __init__(self) -> None:
        self.seen: list[str] = []

    async def __call__(self, step: str) -> None:
        self.seen.append(step)


def everything(result: SendReport | MailError) -> str:
    lines = [d.message for d in result.details] + list(result.transcript)
    if isinstance(result, MailError):
        lines.append(str(result))
    return "\n".join(lines)


def secrets_of(provider: OAuthProvider, grant: OAuth2Grant) -> list[str]:
    """Every secret form never to be shown: credentials, signed assertions, tokens, XOAUTH2 payloads."""
    found = [s for s in (grant.client_secret, grant.certificate, grant.service_account_key) if s]
    for form in provider.requests:
        found.extend(v for k, v in form.items() if k in ("client_secret", "client_assertion", "assertion"))
    for token in provider.issued:
        found.append(token.value)
        found.append(
            base64.b64encode(f"user={MAILBOX}\x01auth=Bearer {token.value}\x01\x01".encode()).decode()
        )
    if grant.certificate:
        found.extend(line for line in grant.certificate.splitlines() if len(line) > 40)  # key material lines
    return found


def assert_no_secrets(result: SendReport | MailError, provider: OAuthProvider, grant: OAuth2Grant) -> None:
    text = everything(result)
    for secret in secrets_of(provider, grant):
        assert secret not in text


def jwt_claims(assertion: str) -> dict[str, object]:
    payload = assertion.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


# -- delivery with each grant ------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
async def test_each_grant_delivers_with_xoauth2(
    kind: str, oauth_provider: OAuthProvider, xoauth2_smtp: XOAuth2Smtp
) -> None:
    grant = grant_for(oauth_provider, kind)
    steps = Steps()
    report = await send_message(
        oauth_target(xoauth2_smtp, grant), message(), FAST, on_step=steps, tokens=TokenCache()
    )

    assert steps.seen == [STEP_TOKEN, STEP_CONNECT, STEP_AUTHENTICATE, STEP_SEND]
    assert len(xoauth2_smtp.messages) == 1 and xoauth2_smtp.inbox.logins == [MAILBOX]
    assert "C: AUTH XOAUTH2 ***" in report.transcript
    assert "S: 235 2.7.0 Authentication successful" in report.transcript
    token_details = [d.message for d in report.details if d.step == STEP_TOKEN]
    assert token_details[0].startswith(f"Token request to {oauth_provider.token_url}: ")
    assert "Token endpoint answered HTTP 200" in token_details
    assert "Got a Bearer token valid for 3600 s" in token_details
    assert any(
        d.message == f"Authenticated with XOAUTH2 as {MAILBOX}: 235 2.7.0 Authentication successful"
        for d in report.details
    )
    assert_no_secrets(report, oauth_provider, grant)


async def test_what_each_grant_sends(oauth_provider: OAuthProvider, xoauth2_smtp: XOAuth2Smtp) -> None:
    for kind in KINDS:
        await send_message(
            oauth_target(xoauth2_smtp, grant_for(oauth_provider, kind)), message(), FAST, tokens=TokenCache()
        )
    generic, ms_secret, ms_cert, google = oauth_provider.requests

    # Generic: client_secret_basic (RFC 6749 requires servers to support it), so no secret in the form.
    assert (
        generic["grant_type"] == "client_credentials"
        and "client_secret" not in generic
        and "scope" not in generic
    )
    # Microsoft with a secret: client_secret_post and the Exchange Online scope.
    assert ms_secret["grant_type"] == "client_credentials" and ms_secret["client_secret"]
    assert ms_secret["scope"] == "https://outlook.office365.com/.default"
    # Microsoft with a certificate: a signed client assertion naming the app and the token endpoint.
    assert ms_cert["client_assertion_type"] == "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
    claims = jwt_claims(ms_cert["client_assertion"])
    assert claims["iss"] == claims["sub"] and claims["aud"] == oauth_provider.token_url
    assert claims["nbf"] == claims["iat"] and claims["exp"] == claims["iat"] + 600  # type: ignore[operator]
    header = json.loads(base64.urlsafe_b64decode(ms_cert["client_assertion"].split(".")[0] + "=="))
    assert header["alg"] == "PS256" and "x5t#S256" in header
    # Google: the JWT bearer grant, the mailbox as subject and the scope in the assertion.
    assert google["grant_type"] == "urn:ietf:params:oauth:grant-type:jwt-bearer"
    claims = jwt_claims(google["assertion"])
    assert claims["sub"] == MAILBOX and claims["scope"] == "https://mail.google.com/"
    assert claims["aud"] == oauth_provider.token_url
    assert int(claims["exp"]) - int(claims["iat"]) <= 3600  # type: ignore[call-overload]


def test_percents_keep_the_step_order() -> None:
    percents = [PERCENTS[step] for step in STEPS]
    assert percents == sorted(percents) and len(set(percents)) == len(percents)
    assert STEPS[0] == STEP_TOKEN == "Get OAuth 2.0 token"


# -- the cache ---------------------------------------------------------------------------------------


async def test_three_mails_take_one_token(oauth_provider: OAuthProvider, xoauth2_smtp: XOAuth2Smtp) -> None:
    grant = grant_for(oauth_provider, "microsoft-secret")
    tokens = TokenCache()
    reports = [
        await send_message(oauth_target(xoauth2_smtp, grant), message(), FAST, tokens=tokens)
        for _ in range(3)
    ]
    assert oauth_provider.hits == 1 and len(xoauth2_smtp.messages) == 3
    for report in reports[1:]:
        [cached] = [d.message for d in report.details if d.step == STEP_TOKEN]
        assert cached.startswith("Using the cached OAuth 2.0 token from 127.0.0.1, usable for another ")
        assert_no_secrets(report, oauth_provider, grant)


async def test_concurrent_requests_share_one_token_request(oauth_provider: OAuthProvider) -> None:
    grant = grant_for(oauth_provider, "google")
    tokens = TokenCache()
    results = await asyncio.gather(*(tokens.get(grant, FAST) for _ in range(5)))
    assert oauth_provider.hits == 1 and len(set(results)) == 1


async def test_a_token_is_used_until_five_minutes_before_it_expires(oauth_provider: OAuthProvider) -> None:
    now = [1000.0]
    tokens = TokenCache(clock=lambda: now[0])
    grant = grant_for(oauth_provider, "generic")
    first = await tokens.get(grant, FAST)
    now[0] += 3600 - REFRESH_MARGIN_SECONDS - 1
    assert await tokens.get(grant, FAST) == first and oauth_provider.hits == 1
    now[0] += 1
    assert await tokens.get(grant, FAST) != first and oauth_provider.hits == 2


async def test_a_token_shorter_than_the_margin_is_not_reused(oauth_provider: OAuthProvider) -> None:
    oauth_provider.expires_in = 120
    tokens = TokenCache()
    grant = grant_for(oauth_provider, "generic")
    token = await tokens.token(grant, FAST)
    assert token.valid_for == 0 and not token.cached
    await tokens.get(grant, FAST)
    assert oauth_provider.hits == 2


async def test_changed_settings_fetch_a_new_token(oauth_provider: OAuthProvider) -> None:
    tokens = TokenCache()
    grant = grant_for(oauth_provider, "microsoft-secret")
    await tokens.get(grant, FAST)
    await tokens.get(
        OAuth2Grant(**{**grant.__dict__, "scope": "https://outlook.office365.com/SMTP.Send"}), FAST
    )
    assert oauth_provider.hits == 2


async def test_refresh_keeps_a_token_another_caller_already_replaced(oauth_provider: OAuthProvider) -> None:
    tokens = TokenCache()
    grant = grant_for(oauth_provider, "generic")
    old = await tokens.get(grant, FAST)
    new = (await tokens.token(grant, FAST, refresh=True, rejected=old)).value
    assert new != old and oauth_provider.hits == 2
    again = await tokens.token(grant, FAST, refresh=True, rejected=old)
    assert again.value == new and again.cached and oauth_provider.hits == 2
    assert await tokens.get(grant, FAST, refresh=True) != new and oauth_provider.hits == 3


async def test_an_expired_cached_token_is_replaced_once(
    oauth_provider: OAuthProvider, xoauth2_smtp: XOAuth2Smtp
) -> None:
    grant = grant_for(oauth_provider, "microsoft-certificate")
    tokens = TokenCache()
    await send_message(oauth_target(xoauth2_smtp, grant), message(), FAST, tokens=tokens)
    oauth_provider.expire_all()  # the cache still holds it; the mail server no longer takes it

    steps = Steps()
    report = await send_message(
        oauth_target(xoauth2_smtp, grant), message(), FAST, on_step=steps, tokens=tokens
    )
    assert steps.seen == [STEP_TOKEN, STEP_CONNECT, STEP_AUTHENTICATE, STEP_SEND]
    assert oauth_provider.hits == 2 and len(xoauth2_smtp.messages) == 2
    assert xoauth2_smtp.inbox.refusals == ["revoked token"]
    refused = next(d for d in report.details if d.message.startswith("The server refused the cached token"))
    assert refused.level == "warning" and "535 5.7.3" in refused.message
    assert any(d.message.startswith("Server's XOAUTH2 error: {") for d in report.details)
    assert report.transcript.count("C: AUTH XOAUTH2 ***") == 2
    assert_no_secrets(report, oauth_provider, grant)
    # The new token is cached in turn.
    await send_message(oauth_target(xoauth2_smtp, grant), message(), FAST, tokens=tokens)
    assert oauth_provider.hits == 2


async def test_a_server_hanging_up_after_the_refusal_gets_a_new_connection(
    oauth_provider: OAuthProvider, xoauth2_smtp: XOAuth2Smtp
) -> None:
    grant = grant_for(oauth_provider, "generic")
    tokens = TokenCache()
    await send_message(oauth_target(xoauth2_smtp, grant), message(), FAST, tokens=tokens)
    oauth_provider.expire_all()
    xoauth2_smtp.inbox.hang_up_after_refusal = True

    steps = Steps()
    report = await send_message(
        oauth_target(xoauth2_smtp, grant), message(), FAST, on_step=steps, tokens=tokens
    )
    assert steps.seen == [STEP_TOKEN, STEP_CONNECT, STEP_AUTHENTICATE, STEP_SEND]  # no second "Connect"
    assert oauth_provider.hits == 2 and len(xoauth2_smtp.messages) == 2
    messages = [d.message for d in report.details]
    assert "The server closed the connection; connecting again" in messages
    assert sum(m.startswith("Connected to 127.0.0.1:") for m in messages) == 2
    assert report.transcript.count("C: AUTH XOAUTH2 ***") == 2
    assert_no_secrets(report, oauth_provider, grant)


def auth_exchange(transcript: list[str] | tuple[str, ...]) -> list[str]:
    """The transcript from AUTH to the reply that ends it (235 or 5xx)."""
    lines = list(transcript)
    start = lines.index("C: AUTH XOAUTH2 ***")
    end = next(i for i in range(start, len(lines)) if lines[i].startswith(("S: 235", "S: 5")))
    return lines[start : end + 1]


async def test_an_empty_334_to_the_initial_response_gets_the_token_as_the_continuation(
    oauth_provider: OAuthProvider, xoauth2_smtp: XOAuth2Smtp
) -> None:
    xoauth2_smtp.inbox.ignore_initial_response = True
    grant = grant_for(oauth_provider, "generic")

    report = await send_message(oauth_target(xoauth2_smtp, grant), message(), FAST, tokens=TokenCache())

    assert xoauth2_smtp.inbox.logins == [MAILBOX] and len(xoauth2_smtp.messages) == 1
    assert xoauth2_smtp.inbox.refusals == []
    exchange = auth_exchange(report.transcript)
    assert exchange[:3] == ["C: AUTH XOAUTH2 ***", "S: 334 ***", "C: ***"]
    assert exchange[3].startswith("S: 235") and len(exchange) == 4
    messages = [d.message for d in report.details]
    assert "The server asked for the XOAUTH2 response again; sent it as the continuation" in messages
    assert not any(m.startswith("Server's XOAUTH2 error") for m in messages)
    assert_no_secrets(report, oauth_provider, grant)


@pytest.mark.parametrize("initial_response_read", [True, False], ids=["read", "asked for again"])
async def test_a_fresh_token_refused_is_not_fetched_again(
    oauth_provider: OAuthProvider, xoauth2_smtp: XOAuth2Smtp, initial_response_read: bool
) -> None:
    """The refusal is an error challenge (334, base64 JSON), an empty line, then 535, whether the server read
    the initial response or asked for it again with an empty 334."""
    xoauth2_smtp.inbox.ignore_initial_response = not initial_response_read
    grant = grant_for(oauth_provider, "google")  # the token is for MAILBOX, the login names another
    with pytest.raises(AuthenticationError) as info:
        await send_message(
            oauth_target(xoauth2_smtp, grant, username="other@example.com"),
            message(),
            FAST,
            tokens=TokenCache(),
        )
    assert oauth_provider.hits == 1 and not xoauth2_smtp.messages
    assert len(xoauth2_smtp.inbox.refusals) == 1
    assert info.value.step == STEP_AUTHENTICATE
    assert str(info.value).startswith(
        "Authentication failed: 535 5.7.3 Authentication unsuccessful (the token was refused"
    )
    assert "domain-wide delegation" in str(info.value)
    # The empty line answering the error challenge leaves no line in the transcript.
    asked_again = [] if initial_response_read else ["S: 334 ***", "C: ***"]
    assert auth_exchange(info.value.transcript) == [
        "C: AUTH XOAUTH2 ***", *asked_again, "S: 334 ***", "S: 535 5.7.3 Authentication unsuccessful"
    ]
    messages = [d.message for d in info.value.details]
    assert any(m.startswith('Server\'s XOAUTH2 error: {"status": "401"') for m in messages), messages
    assert_no_secrets(info.value, oauth_provider, grant)


# -- the token step's failures -----------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["generic", "microsoft-secret"])
async def test_a_wrong_secret_ends_at_the_token_step(
    kind: str, oauth_provider: OAuthProvider, xoauth2_smtp: XOAuth2Smtp
) -> None:
    good = grant_for(oauth_provider, kind)
    grant = OAuth2Grant(**{**good.__dict__, "client_secret": "wrong-secret-value"})
    steps = Steps()
    with pytest.raises(OAuth2TokenError) as info:
        await send_message(
            oauth_target(xoauth2_smtp, grant), message(), FAST, on_step=steps, tokens=TokenCache()
        )
    error = info.value
    assert steps.seen == [STEP_TOKEN] and error.step == STEP_TOKEN
    assert error.error == "invalid_client"
    assert str(error).startswith("The token endpoint 127.0.0.1:")
    assert "refused the request (HTTP 401): invalid_client: " in str(error)
    assert error.details[-1].level == "error" and error.details[-1].step == STEP_TOKEN
    assert not xoauth2_smtp.inbox.logins and not xoauth2_smtp.messages and error.transcript == []
    assert_no_secrets(error, oauth_provider, grant)
    assert "wrong-secret-value" not in everything(error)


async def test_the_providers_error_code_and_description_are_shown_on_one_line(
    oauth_provider: OAuthProvider, xoauth2_smtp: XOAuth2Smtp
) -> None:
    grant = grant_for(oauth_provider, "microsoft-secret")
    oauth_provider.fail_next(
        "invalid_client",
        "AADSTS7000215: Invalid client secret provided.\r\nTrace ID: 0a1b\r\nCorrelation ID: 2c3d",
        status=401,
    )
    with pytest.raises(OAuth2TokenError) as info:
        await send_message(oauth_target(xoauth2_smtp, grant), message(), FAST, tokens=TokenCache())
    assert info.value.error == "invalid_client"
    assert (
        info.value.error_description
        == "AADSTS7000215: Invalid client secret provided. Trace ID: 0a1b Correlation ID: 2c3d"
    )
    assert str(info.value).endswith(
        "refused the request (HTTP 401): invalid_client: AADSTS7000215: Invalid client secret provided. "
        "Trace ID: 0a1b Correlation ID: 2c3d"
    )
    as_dict = info.value.to_dict()
    assert as_dict["step"] == STEP_TOKEN and as_dict["error"] == "OAuth2TokenError"
    assert as_dict["oauth2_error"] == "invalid_client"
    assert str(as_dict["oauth2_error_description"]).startswith("AADSTS7000215: ")


async def test_a_description_echoing_the_secret_is_redacted(oauth_provider: OAuthProvider) -> None:
    grant = grant_for(oauth_provider, "generic")
    oauth_provider.fail_next("invalid_client", f"bad secret {grant.client_secret}")
    with pytest.raises(OAuth2TokenError) as info:
        await TokenCache().get(grant, FAST)
    assert (
        grant.client_secret not in str(info.value) and grant.client_secret not in info.value.error_description
    )
    assert "bad secret ***" in str(info.value)


async def test_a_mailbox_without_delegation_gets_the_grant_error(oauth_provider: OAuthProvider) -> None:
    account = oauth_provider.add_service_account(subjects={"someone-else@example.com"})
    with pytest.raises(OAuth2TokenError) as info:
        await TokenCache().get(oauth_provider.grant("google", account), FAST)
    assert info.value.error == "invalid_client" and info.value.step == STEP_TOKEN


async def test_an_unregistered_certificate_is_refused(oauth_provider: OAuthProvider) -> None:
    registered = oauth_provider.add_certificate_client()
    grant = OAuth2Grant(
        **{**oauth_provider.grant("microsoft", registered).__dict__, "certificate": make_certificate().pem}
    )
    with pytest.raises(OAuth2TokenError) as info:
        await TokenCache().get(grant, FAST)
    assert info.value.error == "invalid_client" and info.value.error_description.startswith("AADSTS700027")


async def test_errors_are_not_cached(oauth_provider: OAuthProvider) -> None:
    grant = grant_for(oauth_provider, "generic")
    tokens = TokenCache()
    oauth_provider.fail_next("temporarily_unavailable", status=503)
    with pytest.raises(OAuth2TokenError):
        await tokens.get(grant, FAST)
    assert await tokens.get(grant, FAST)
    assert oauth_provider.hits == 2


async def test_a_non_oauth_answer_is_reported(oauth_provider: OAuthProvider) -> None:
    grant = grant_for(oauth_provider, "generic")
    grant = OAuth2Grant(**{**grant.__dict__, "token_url": oauth_provider.token_url.replace("/token", "/")})
    with pytest.raises(OAuth2TokenError) as info:
        await TokenCache().get(grant, FAST)
    assert info.value.error == "not_found"  # the test endpoint's JSON 404


@pytest.mark.parametrize(
    "url",
    ["http://169.254.169.254/token", "https://169.254.169.254/token", "http://[64:ff9b::a9fe:a9fe]/token"],
)
async def test_the_token_url_is_checked_against_the_deny_list(url: str, xoauth2_smtp: XOAuth2Smtp) -> None:
    grant = OAuth2Grant("generic", url, "", client_id="app", client_secret="secret-value-1")
    steps = Steps()
    with pytest.raises(ConfigurationRefused) as info:
        await send_message(
            oauth_target(xoauth2_smtp, grant), message(), FAST, on_step=steps, tokens=TokenCache()
        )
    assert info.value.step == STEP_TOKEN and steps.seen == [STEP_TOKEN]
    assert "denied network (169.254.0.0/16)" in str(info.value)
    assert not any(d.message.startswith("Connected to") for d in info.value.details)


async def test_plain_http_is_refused_beyond_loopback(xoauth2_smtp: XOAuth2Smtp) -> None:
    address = non_loopback_address()
    if address is None:
        pytest.skip("no non-loopback address on this machine")
    grant = OAuth2Grant(
        "generic", f"http://{address}:9/token", "", client_id="app", client_secret="secret-value-1"
    )
    with pytest.raises(ConfigurationRefused) as info:
        await TokenCache().get(grant, FAST)
    assert str(info.value) == (
        f"Refusing to send OAuth 2.0 credentials to {address} over plain http: "
        "the token URL must use https (http is allowed to loopback only)"
    )


async def test_https_to_the_endpoint_by_name(oauth_provider_tls: OAuthProvider, ca_file: str) -> None:
    grant = grant_for(oauth_provider_tls, "microsoft-certificate")
    assert grant.token_url.startswith("https://localhost:")
    policy = MailPolicy(connect_timeout=2, command_timeout=2, total_timeout=10, ca_file=ca_file)
    details: list[str] = []
    token = await TokenCache().token(grant, policy, note=lambda m, e=None, level="info": details.append(m))
    assert token.value and oauth_provider_tls.hits == 1
    assert any(d.startswith("Resolved localhost to ") for d in details)


async def test_an_untrusted_endpoint_certificate_is_a_tls_error(oauth_provider_tls: OAuthProvider) -> None:
    grant = grant_for(oauth_provider_tls, "generic")
    with pytest.raises(TLSError) as info:
        await TokenCache().get(grant, FAST)
    assert str(info.value).startswith(
        f"Certificate verify failed for the token endpoint localhost:{oauth_provider_tls.port}: "
    )
    assert info.value.step == STEP_TOKEN and oauth_provider_tls.hits == 0


async def test_an_unreadable_ca_file_is_a_tls_error(
    oauth_provider_tls: OAuthProvider, tmp_path: Path
) -> None:
    policy = MailPolicy(
        connect_timeout=2, command_timeout=2, total_timeout=10, ca_file=str(tmp_path / "none.pem")
    )
    with pytest.raises(TLSError) as info:
        await TokenCache().get(grant_for(oauth_provider_tls, "generic"), policy)
    assert str(info.value).startswith(f"Could not load the CA file {tmp_path / 'none.pem'}: ")
    assert info.value.step == STEP_TOKEN and oauth_provider_tls.hits == 0


async def test_a_silent_endpoint_hits_the_command_deadline(tarpit: int) -> None:
    policy = MailPolicy(connect_timeout=1, command_timeout=1, total_timeout=5)
    grant = OAuth2Grant(
        "generic", f"http://127.0.0.1:{tarpit}/token", "", client_id="app", client_secret="secret-value-1"
    )
    loop = asyncio.get_running_loop()
    start = loop.time()
    with pytest.raises(MailTimeout) as info:
        await TokenCache().get(grant, policy)
    assert loop.time() - start < 4.5  # generous: the deadline is 1 s
    assert str(info.value) == f"No answer from the token endpoint 127.0.0.1:{tarpit} within 1 s"
    assert info.value.step == STEP_TOKEN


async def test_a_closed_port_is_a_connect_error(closed_port: int) -> None:
    grant = OAuth2Grant(
        "generic",
        f"http://127.0.0.1:{closed_port}/token",
        "",
        client_id="app",
        client_secret="secret-value-1",
    )
    with pytest.raises(ConnectError) as info:
        await TokenCache().get(grant, FAST)
    assert str(info.value).startswith(f"Token request to 127.0.0.1:{closed_port} failed: ")
    assert info.value.step == STEP_TOKEN


async def test_a_server_without_xoauth2_is_reported(
    oauth_provider: OAuthProvider, start_server: StartServer
) -> None:
    server = await start_server(Sink(), auth_require_tls=False)
    grant = grant_for(oauth_provider, "generic")
    target = SmtpTarget(
        host=server.host, port=server.port, enable_ssl=False, enable_auth=True, username=MAILBOX, oauth2=grant
    )
    with pytest.raises(AuthenticationError) as info:
        await send_message(target, message(), FAST, tokens=TokenCache())
    assert str(info.value) == "Server does not offer AUTH XOAUTH2 (offered: LOGIN PLAIN)"


async def test_oauth2_without_auth_enabled_sends_no_token(
    oauth_provider: OAuthProvider, start_server: StartServer
) -> None:
    server = await start_server()
    grant = grant_for(oauth_provider, "generic")
    target = SmtpTarget(host=server.host, port=server.port, enable_ssl=False, enable_auth=False, oauth2=grant)
    steps = Steps()
    await send_message(target, message(), FAST, on_step=steps)
    assert steps.seen == [STEP_CONNECT, STEP_SEND] and oauth_provider.hits == 0


async def test_a_target_with_oauth2_needs_the_token_cache(
    oauth_provider: OAuthProvider, xoauth2_smtp: XOAuth2Smtp
) -> None:
    with pytest.raises(ValueError, match="TokenCache"):
        await send_message(oauth_target(xoauth2_smtp, grant_for(oauth_provider, "generic")), message(), FAST)


# -- pure parts --------------------------------------------------------------------------------------


def test_provider_defaults() -> None:
    assert default_token_url("microsoft", "contoso.onmicrosoft.com") == (
        "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token"
    )
    assert (
        default_token_url("microsoft", "a/b?c")
        == "https://login.microsoftonline.com/a%2Fb%3Fc/oauth2/v2.0/token"
    )
    assert default_token_url("google", "") == "https://oauth2.googleapis.com/token"
    assert default_token_url("generic", "") == ""
    assert default_scope("microsoft") == "https://outlook.office365.com/.default"
    assert default_scope("google") == "https://mail.google.com/"
    assert default_scope("generic") == ""


def test_the_fingerprint_covers_every_field_and_repr_hides_secrets() -> None:
    base = OAuth2Grant(
        "microsoft",
        "https://t.example/token",
        "s",
        client_id="c",
        tenant_id="t",
        subject="m",
        client_secret="secret-1",
        certificate="cert-1",
        service_account_key="key-1",
    )
    seen = {base.fingerprint()}
    for name in base.__dataclass_fields__:
        changed = OAuth2Grant(**{**base.__dict__, name: getattr(base, name) + "x"})
        seen.add(changed.fingerprint())
    assert len(seen) == 1 + len(base.__dataclass_fields__)
    assert all(secret not in repr(base) for secret in ("secret-1", "cert-1", "key-1"))


def test_credential_checks() -> None:
    cert = make_certificate()
    assert certificate_problem(cert.pem) is None
    assert (
        certificate_problem(cert.certificate_pem)
        == "the certificate field holds no PEM private key (BEGIN PRIVATE KEY)"
    )
    key_only = cert.pem[len(cert.certificate_pem) :]
    assert (
        certificate_problem(key_only) == "the certificate field holds no PEM certificate (BEGIN CERTIFICATE)"
    )
    assert (
        certificate_problem(make_certificate().certificate_pem + key_only)
        == "the private key does not belong to the certificate"
    )
    ec_key = (
        ec.generate_private_key(ec.SECP256R1())
        .private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        .decode()
    )
    assert "not an RSA key" in (certificate_problem(cert.certificate_pem + ec_key) or "")
    encrypted = (
        serialization.load_pem_private_key(key_only.encode(), None)
        .private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"pw"),
        )
        .decode()
    )
    assert (
        certificate_problem(cert.certificate_pem + encrypted)
        == "the private key is encrypted; give it without a password"
    )

    key = make_service_account_key()
    assert service_account_key_problem(key.json) is None
    assert service_account_key_problem("{") == "the service account key is not JSON"
    assert service_account_key_problem("[]") == "the service account key is not a JSON object"
    body = json.loads(key.json)
    assert service_account_key_problem(json.dumps({**body, "type": "authorized_user"})) == (
        "the key is of type 'authorized_user', not a service account key"
    )
    assert service_account_key_problem(json.dumps({**body, "private_key": "nope"})) == (
        "the service account key's private_key is not an RSA private key in PEM"
    )
    assert service_account_key_problem(
        json.dumps({k: v for k, v in body.items() if k != "client_email"})
    ) == ("the service account key has no client_email")


async def test_an_unusable_credential_fails_at_the_token_step_without_a_request(
    oauth_provider: OAuthProvider,
) -> None:
    grant = OAuth2Grant(
        "google", oauth_provider.token_url, "s", subject=MAILBOX, service_account_key="{not json"
    )
    with pytest.raises(OAuth2TokenError) as info:
        await TokenCache().get(grant, FAST)
    assert str(info.value) == "Cannot request an OAuth 2.0 token: the service account key is not JSON"
    assert info.value.step == STEP_TOKEN and oauth_provider.hits == 0


async def test_running_provider_serves_outside_the_fixtures() -> None:
    with running_provider() as provider:
        client = provider.add_secret_client()
        assert await TokenCache().get(provider.grant("generic", client), FAST)


# -- lifetimes and refusals ---------------------------------------------------------------------------


async def test_an_infinite_lifetime_is_clamped_and_the_token_still_works(
    oauth_provider: OAuthProvider, xoauth2_smtp: XOAuth2Smtp
) -> None:
    oauth_provider.expires_in = float("1e400")  # the answer's JSON says Infinity, as 1e400 reads
    now = [1000.0]
    tokens = TokenCache(clock=lambda: now[0])
    grant = grant_for(oauth_provider, "generic")
    for _ in range(2):
        report = await send_message(oauth_target(xoauth2_smtp, grant), message(), FAST, tokens=tokens)
        assert report.details
    assert oauth_provider.hits == 1 and len(xoauth2_smtp.messages) == 2
    token = await tokens.token(grant, FAST)
    assert token.cached and token.valid_for == LONGEST_LIFETIME_SECONDS - REFRESH_MARGIN_SECONDS
    now[0] += LONGEST_LIFETIME_SECONDS
    assert not (await tokens.token(grant, FAST)).cached and oauth_provider.hits == 2


@pytest.mark.parametrize("expires_in", ["1e400", "1" + "0" * 400, "NaN", "-5"])
async def test_an_unusable_lifetime_never_poisons_the_cache(oauth_provider: OAuthProvider, expires_in: str) -> None:
    grant = grant_for(oauth_provider, "generic")
    oauth_provider.canned_token(expires_in)
    tokens = TokenCache()
    first = await tokens.token(grant, FAST)
    assert first.valid_for is None or 0 < first.valid_for <= LONGEST_LIFETIME_SECONDS
    assert (await tokens.token(grant, FAST)).cached and oauth_provider.hits == 1


async def test_the_endpoints_refusal_is_remembered_for_its_period(oauth_provider: OAuthProvider) -> None:
    now = [1000.0]
    tokens = TokenCache(clock=lambda: now[0])
    grant = grant_for(oauth_provider, "generic")
    oauth_provider.fail_next("invalid_client", "bad secret", status=401, times=2)
    with pytest.raises(OAuth2TokenError):
        await tokens.get(grant, FAST)
    for _ in range(20):
        with pytest.raises(OAuth2TokenError) as info:
            await tokens.get(grant, FAST)
        assert info.value.error == "invalid_client"
        assert str(info.value).endswith(f"(an answer of moments ago; the endpoint is asked again in {REFUSAL_MEMORY_SECONDS:.0f} s)")
    assert oauth_provider.hits == 1
    now[0] += REFUSAL_MEMORY_SECONDS
    with pytest.raises(OAuth2TokenError):
        await tokens.get(grant, FAST)
    assert oauth_provider.hits == 2
    now[0] += REFUSAL_MEMORY_SECONDS
    assert await tokens.get(grant, FAST) and oauth_provider.hits == 3


async def test_a_server_refusing_every_token_costs_one_token_request_per_period(
    oauth_provider: OAuthProvider, xoauth2_smtp: XOAuth2Smtp
) -> None:
    now = [1000.0]
    tokens = TokenCache(clock=lambda: now[0])
    grant = grant_for(oauth_provider, "google")  # the token is for MAILBOX, the login names another
    target = oauth_target(xoauth2_smtp, grant, username="other@example.com")
    for _ in range(10):
        with pytest.raises(AuthenticationError):
            await send_message(target, message(), FAST, tokens=tokens)
    # The first token, then one refresh after the cached one was refused; none after that in the period.
    assert oauth_provider.hits == 2 and not xoauth2_smtp.messages
    now[0] += REFUSAL_MEMORY_SECONDS
    with pytest.raises(AuthenticationError) as info:
        await send_message(target, message(), FAST, tokens=tokens)
    assert oauth_provider.hits == 3
    assert str(info.value).startswith("Authentication failed: 535 ")
    with pytest.raises(AuthenticationError) as info:
        await send_message(target, message(), FAST, tokens=tokens)
    assert oauth_provider.hits == 3
    assert any("refused a new token moments ago too" in d.message for d in info.value.details)
    assert_no_secrets(info.value, oauth_provider, grant)
