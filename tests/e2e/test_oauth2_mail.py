"""OAuth 2.0 to the mail server end to end: settings saved over HTTP, test mail sent with AUTH XOAUTH2.

Every part is real: a ``smtpsettings serve`` process (the shared server, on SQLite and on PostgreSQL), an
Authlib token endpoint on loopback and an aiosmtpd server that takes only tokens that endpoint issued and
still honours (``tests/oauthkit.py``). Each of Microsoft with a client secret, Microsoft with a certificate,
Google with a service account key and a generic endpoint is saved with its token URL pointing at the
loopback endpoint, the way an admin would save it.
"""

from __future__ import annotations

import base64
import json
import re
import ssl
import time
import warnings
from typing import Any

import httpx
import pytest
import trustme
from oauthkit import (  # noqa: F401  (fixtures)
    MAILBOX,
    CertificateClient,
    OAuthProvider,
    SecretClient,
    ServiceAccount,
    XOAuth2Smtp,
    make_certificate,
    make_service_account_key,
    oauth_provider,
    oauth_provider_tls,
    running_xoauth2_smtp,
    xoauth2_smtp,
)
from serverkit import Portal, wait_for_result
from smtp_peers import smtp_peer

from smtpsettings.domain.accounts import Role

with warnings.catch_warnings():
    warnings.simplefilter("ignore", UserWarning)  # the SDK's models warn about a field named "copy"
    import docspace_api_sdk as sdk

SETTINGS = "/api/2.0/smtpsettings/smtp"
TEST = SETTINGS + "/test"
STEP_TOKEN = "Get OAuth 2.0 token"

Credential = SecretClient | CertificateClient | ServiceAccount
CASES = ["microsoft-secret", "microsoft-certificate", "google", "generic"]


def credential_for(provider: OAuthProvider, case: str) -> tuple[str, Credential]:
    """The provider kind and a credential the endpoint knows, for one of :data:`CASES`."""
    if case == "microsoft-secret":
        return "microsoft", provider.add_secret_client()
    if case == "microsoft-certificate":
        return "microsoft", provider.add_certificate_client()
    if case == "google":
        return "google", provider.add_service_account(subjects={MAILBOX})
    return "generic", provider.add_secret_client()


def wrong_credential(credential: Credential) -> dict[str, str]:
    """The credential's secret replaced by one the endpoint does not know (same client)."""
    if isinstance(credential, SecretClient):
        return {"clientSecret": "wrong-" + credential.secret}
    if isinstance(credential, CertificateClient):
        return {"certificate": make_certificate().pem}
    return {"serviceAccountKey": make_service_account_key(credential.client_email).json}


def settings_for(smtp: XOAuth2Smtp, oauth2: dict[str, str]) -> dict[str, Any]:
    return {
        "host": smtp.host,
        "port": smtp.port,
        "senderAddress": "noreply@example.com",
        "senderDisplayName": "Example Portal",
        "enableSSL": False,
        "enableAuth": True,
        "credentialsUserName": MAILBOX,
        "authMethod": "oauth2",
        "oauth2": oauth2,
    }


def save(c: httpx.Client, settings: dict[str, Any]) -> dict[str, Any]:
    r = c.post(SETTINGS, json=settings)
    assert r.status_code == 200, r.text
    return r.json()["response"]  # type: ignore[no-any-return]


def send_test_mail(c: httpx.Client) -> dict[str, Any]:
    started = c.get(TEST)
    assert started.status_code == 200, started.text
    return wait_for_result(c)


def secret_of(credential: Credential) -> str:
    if isinstance(credential, SecretClient):
        return credential.secret
    if isinstance(credential, CertificateClient):
        return credential.certificate.pem
    return credential.key.json


def forms(secret: str) -> list[bytes]:
    """The secret as stored text might hold it: whole, and (for PEM and JSON keys) each line of key material."""
    raw = secret.encode()
    found = [raw, base64.b64encode(raw), raw.hex().encode(), secret.encode("utf-16-le")]
    # A private key's base64 body, line by line (64 characters each), in a PEM text or inside a JSON string.
    text = json.loads(secret)["private_key"] if secret.lstrip().startswith("{") else secret
    key = text[text.index("-----BEGIN PRIVATE KEY-----") :] if "PRIVATE KEY" in text else ""
    found += [line.encode() for line in key.splitlines() if re.fullmatch(r"[A-Za-z0-9+/]{64}", line)]
    return found


@pytest.mark.parametrize("case", CASES)
def test_three_test_mails_go_out_with_xoauth2_on_one_token(
    portal: Portal, oauth_provider: OAuthProvider, xoauth2_smtp: XOAuth2Smtp, case: str
) -> None:
    kind, credential = credential_for(oauth_provider, case)
    with portal.client(Role.ADMIN) as c:
        answer = save(c, settings_for(xoauth2_smtp, oauth_provider.wire(kind, credential)))
        assert answer["authMethod"] == "oauth2" and answer["oauth2"]["provider"] == kind
        results = [send_test_mail(c) for _ in range(3)]
    for result in results:
        assert result["error"] == "" and result["percents"] == 100, result
        assert STEP_TOKEN in {d["step"] for d in result["details"]}
        auth = [line for line in result["transcript"] if line.startswith("C: AUTH")]
        assert auth == ["C: AUTH XOAUTH2 ***"], result["transcript"]
    assert len(xoauth2_smtp.messages) == 3
    assert all(m["To"] == portal.emails[Role.ADMIN] for m in xoauth2_smtp.messages)
    assert xoauth2_smtp.inbox.logins == [MAILBOX] * 3 and xoauth2_smtp.inbox.refusals == []
    assert oauth_provider.hits == 1, "the token is cached in the worker"
    # The provider's default scope was asked for; Google's in the signed assertion, with the mailbox as subject.
    [form] = oauth_provider.requests
    if kind == "google":
        payload = form["assertion"].split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        assert claims["sub"] == MAILBOX and claims["iss"] == credential.client_email  # type: ignore[union-attr]
        scope = claims["scope"]
    else:
        scope = form.get("scope", "")
    assert scope == {"microsoft": "https://outlook.office365.com/.default", "google": "https://mail.google.com/", "generic": ""}[kind]


@pytest.mark.parametrize("case", ["microsoft-certificate", "generic"])
def test_a_token_the_mail_server_no_longer_takes_is_replaced_once(
    portal: Portal, oauth_provider: OAuthProvider, xoauth2_smtp: XOAuth2Smtp, case: str
) -> None:
    kind, credential = credential_for(oauth_provider, case)
    with portal.client(Role.ADMIN) as c:
        save(c, settings_for(xoauth2_smtp, oauth_provider.wire(kind, credential)))
        assert send_test_mail(c)["error"] == ""
        oauth_provider.expire_all()  # the server refuses the token the worker still caches
        result = send_test_mail(c)
    assert result["error"] == "" and result["percents"] == 100, result
    assert oauth_provider.hits == 2
    assert xoauth2_smtp.inbox.refusals == ["revoked token"]
    assert len(xoauth2_smtp.messages) == 2


def test_a_token_near_its_expiry_is_not_used_but_replaced(
    portal: Portal, oauth_provider: OAuthProvider, xoauth2_smtp: XOAuth2Smtp
) -> None:
    kind, credential = credential_for(oauth_provider, "microsoft-secret")
    oauth_provider.expires_in = 5 * 60 + 1  # usable for a second: kept until five minutes before expiry
    with portal.client(Role.ADMIN) as c:
        save(c, settings_for(xoauth2_smtp, oauth_provider.wire(kind, credential)))
        assert send_test_mail(c)["error"] == ""
        time.sleep(1.5)
        result = send_test_mail(c)
    assert result["error"] == "", result
    assert oauth_provider.hits == 2 and xoauth2_smtp.inbox.refusals == []
    first, second = oauth_provider.issued
    assert first.value != second.value


@pytest.mark.parametrize("case", CASES)
def test_a_wrong_secret_ends_the_test_at_the_token_step_with_the_providers_error(
    portal: Portal, oauth_provider: OAuthProvider, xoauth2_smtp: XOAuth2Smtp, case: str
) -> None:
    kind, credential = credential_for(oauth_provider, case)
    wrong = wrong_credential(credential)
    with portal.client(Role.ADMIN) as c:
        save(c, settings_for(xoauth2_smtp, oauth_provider.wire(kind, credential, **wrong)))
        result = send_test_mail(c)
    assert result["completed"] is True and result["status"] == STEP_TOKEN and result["percents"] == 30, result
    expected = "invalid_grant" if kind == "google" else "invalid_client"
    assert expected in result["error"], result["error"]
    assert oauth_provider.hits == 1
    assert xoauth2_smtp.inbox.logins == [] and xoauth2_smtp.messages == []  # never reached the mail server
    assert not any(line.startswith("C: AUTH") for line in result["transcript"])
    shown = json.dumps(result).encode()
    for form in forms(next(iter(wrong.values()))):
        assert form not in shown


def test_microsofts_error_code_and_description_reach_the_admin(
    portal: Portal, oauth_provider: OAuthProvider, xoauth2_smtp: XOAuth2Smtp
) -> None:
    kind, credential = credential_for(oauth_provider, "microsoft-secret")
    description = "AADSTS7000215: Invalid client secret provided. Ensure the secret being sent in the request is the client secret value."
    oauth_provider.fail_next("invalid_client", description, status=401)
    with portal.client(Role.ADMIN) as c:
        save(c, settings_for(xoauth2_smtp, oauth_provider.wire(kind, credential)))
        result = send_test_mail(c)
    assert result["status"] == STEP_TOKEN and "invalid_client" in result["error"] and "AADSTS7000215" in result["error"], result
    step = [d for d in result["details"] if d["step"] == STEP_TOKEN]
    assert step, result["details"]


@pytest.mark.parametrize("case", CASES)
def test_the_secrets_and_tokens_appear_nowhere(
    portal: Portal, oauth_provider: OAuthProvider, xoauth2_smtp: XOAuth2Smtp, case: str
) -> None:
    kind, credential = credential_for(oauth_provider, case)
    secret = secret_of(credential)
    wire = oauth_provider.wire(kind, credential)
    bodies: list[bytes] = []
    with portal.client(Role.OWNER) as c:
        for r in (
            c.post(SETTINGS, json=settings_for(xoauth2_smtp, wire)),
            c.get(SETTINGS),
            c.post(SETTINGS, json={**settings_for(xoauth2_smtp, wire), "port": 0}),
            c.get(TEST),
        ):
            bodies.append(r.content + str(r.headers).encode())
        result = wait_for_result(c)
        assert result["error"] == "", result
        status = c.get(TEST + "/status")
        bodies.append(status.content)
        answer = c.get(SETTINGS).json()["response"]["oauth2"]
    assert {k: answer[k] for k in ("clientSecret", "certificate", "serviceAccountKey")} == dict.fromkeys(
        ("clientSecret", "certificate", "serviceAccountKey"), ""
    )
    stored_flag = {SecretClient: "clientSecretStored", CertificateClient: "certificateStored", ServiceAccount: "serviceAccountKeyStored"}
    assert answer[stored_flag[type(credential)]] is True
    haystacks = {
        "responses and the transcript": b"\n".join(bodies),
        "server log": portal.server.log_path.read_bytes(),
        "audit": portal.server.cli("audit", "--portal", portal.hostname).stdout.encode(),
        "database files": portal.server.storage_bytes(),
    }
    # Besides the secret: the access token issued, and the signed assertion sent for it.
    sent = [v for form in oauth_provider.requests for k, v in form.items() if k in ("client_assertion", "assertion", "client_secret")]
    needles = forms(secret) + [t.value.encode() for t in oauth_provider.issued] + [v.encode() for v in sent]
    assert len(needles) > 4
    for where, haystack in haystacks.items():
        for needle in needles:
            assert needle not in haystack, f"a secret, token or assertion is in the {where}"


@pytest.mark.parametrize("case", CASES)
def test_keys_rotate_keeps_oauth2_secrets_working(
    portal: Portal, oauth_provider: OAuthProvider, xoauth2_smtp: XOAuth2Smtp, case: str
) -> None:
    kind, credential = credential_for(oauth_provider, case)
    column = {
        SecretClient: "oauth2_client_secret_ciphertext",
        CertificateClient: "oauth2_certificate_ciphertext",
        ServiceAccount: "oauth2_service_account_key_ciphertext",
    }[type(credential)]
    query = f"SELECT {column} FROM smtp_settings s JOIN portals p ON p.id = s.portal_id WHERE p.hostname = :host"
    with portal.client(Role.ADMIN) as c:
        save(c, settings_for(xoauth2_smtp, oauth_provider.wire(kind, credential)))
        assert send_test_mail(c)["error"] == ""
        before = portal.server.query(query, host=portal.hostname)[0][0]
        portal.server.cli("keys", "rotate")
        after = portal.server.query(query, host=portal.hostname)[0][0]
        assert isinstance(before, str) and isinstance(after, str) and before.split(".")[1] != after.split(".")[1]
        result = send_test_mail(c)
        assert result["error"] == "", result
        # The secret decrypted after the rotation is the one cached under: the same grant, no new token.
        assert oauth_provider.hits == 1
        oauth_provider.expire_all()
        assert send_test_mail(c)["error"] == ""  # and it still gets a token from the endpoint
    assert oauth_provider.hits == 2 and len(xoauth2_smtp.messages) == 3


def test_unsaved_oauth2_settings_are_tested_with_the_stored_secret_kept_by_the_rule(
    portal: Portal, oauth_provider: OAuthProvider, xoauth2_smtp: XOAuth2Smtp
) -> None:
    kind, credential = credential_for(oauth_provider, "generic")
    settings = settings_for(xoauth2_smtp, oauth_provider.wire(kind, credential))
    omitted = {**settings, "oauth2": {k: v for k, v in settings["oauth2"].items() if k != "clientSecret"}}
    with portal.client(Role.ADMIN) as c:
        save(c, settings)
        r = c.post(TEST, json={**omitted, "senderDisplayName": "Unsaved"})
        assert r.status_code == 200, r.text
        assert wait_for_result(c)["error"] == ""
        moved = {**omitted, "oauth2": {**omitted["oauth2"], "tokenUrl": oauth_provider.token_url.replace("127.0.0.1", "localhost")}}
        r = c.post(TEST, json=moved)
        assert r.status_code == 400 and list(r.json()["response"]["errors"]) == ["Oauth2.ClientSecret"], r.text
    assert xoauth2_smtp.messages[0]["From"].startswith("Unsaved")
    assert oauth_provider.hits == 1


def test_a_docspace_sdk_save_afterwards_switches_back_to_password_and_works(
    portal: Portal, oauth_provider: OAuthProvider, xoauth2_smtp: XOAuth2Smtp
) -> None:
    kind, credential = credential_for(oauth_provider, "microsoft-secret")
    with portal.client(Role.ADMIN) as c:
        save(c, settings_for(xoauth2_smtp, oauth_provider.wire(kind, credential)))
        assert send_test_mail(c)["error"] == ""
    token = portal.sign_in(Role.ADMIN)
    configuration = sdk.Configuration(host=portal.server.base_url, access_token=token)
    with smtp_peer(auth=("mailer", "smtp-Pass-7c1e")) as (port, inbox):
        # The SDK addresses the server by URL; the portal is chosen by the Host header, as behind a proxy.
        with sdk.ApiClient(configuration, header_name="Host", header_value=portal.hostname) as api_client:
            api = sdk.SMTPSettingsApi(api_client)
            saved = api.save_smtp_settings(
                smtp_settings_dto=sdk.SmtpSettingsDto(
                    host="127.0.0.1",
                    port=port,
                    sender_address="noreply@example.com",
                    sender_display_name="Example Portal",
                    credentials_user_name="mailer",
                    credentials_user_password="smtp-Pass-7c1e",
                    enable_ssl=False,
                    enable_auth=True,
                    use_ntlm=False,
                )
            ).response
            assert saved is not None and saved.port == port and saved.credentials_user_password == ""
            api.test_smtp_settings()
        with portal.client(Role.ADMIN) as c:
            result = wait_for_result(c)
            answer = c.get(SETTINGS).json()["response"]
    assert result["error"] == "", result
    assert len(inbox.messages) == 1 and len(xoauth2_smtp.messages) == 1
    auth = [line for line in result["transcript"] if line.startswith("C: AUTH")]
    assert auth and "XOAUTH2" not in auth[0]
    assert answer["authMethod"] == "password" and answer["oauth2"] is None
    rows = portal.server.query(
        "SELECT oauth2_provider, oauth2_client_secret_ciphertext FROM smtp_settings s JOIN portals p ON p.id = s.portal_id"
        " WHERE p.hostname = :host",
        host=portal.hostname,
    )
    assert rows == [(None, None)]


def test_xoauth2_over_starttls_with_a_token_from_an_https_endpoint(
    portal: Portal, oauth_provider_tls: OAuthProvider, ca: trustme.CA
) -> None:
    # Both certificates come from the CA the server is configured to trust (SMTPSETTINGS_SMTP_CA_FILE).
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(tls)
    kind, credential = credential_for(oauth_provider_tls, "generic")
    with running_xoauth2_smtp(oauth_provider_tls, starttls=tls) as smtp, portal.client(Role.ADMIN) as c:
        save(c, {**settings_for(smtp, oauth_provider_tls.wire(kind, credential)), "enableSSL": True})
        result = send_test_mail(c)
        assert result["error"] == "", result
        assert len(smtp.messages) == 1
    assert oauth_provider_tls.token_url.startswith("https://localhost:")


def test_the_outbox_sends_with_xoauth2_over_one_connection_on_one_token(
    portal: Portal, oauth_provider: OAuthProvider, xoauth2_smtp: XOAuth2Smtp
) -> None:
    """Mail from the outbox signs in like the test mail: XOAUTH2 with the worker's cached token."""
    kind, credential = credential_for(oauth_provider, "microsoft-secret")
    with portal.client(Role.ADMIN) as c:
        save(c, settings_for(xoauth2_smtp, oauth_provider.wire(kind, credential)))
        ids = []
        for i in range(3):
            r = c.post("/api/2.0/smtpsettings/messages", json={"to": [f"r{i}@x.test"], "subject": f"n{i}", "text": "hi"})
            assert r.status_code == 202, r.text
            ids.append(r.json()["response"]["id"])
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            statuses = {c.get(f"/api/2.0/smtpsettings/messages/{i}").json()["response"]["status"] for i in ids}
            if statuses == {"sent"}:
                break
            time.sleep(0.05)
    assert statuses == {"sent"}
    assert sorted(m["Subject"] for m in xoauth2_smtp.messages) == ["n0", "n1", "n2"]
    assert set(xoauth2_smtp.inbox.logins) == {MAILBOX} and xoauth2_smtp.inbox.refusals == []
    assert oauth_provider.hits == 1, "one token for all three"
