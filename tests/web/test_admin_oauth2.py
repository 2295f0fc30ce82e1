"""The admin page's OAuth 2.0 sign-in (XOAUTH2) in Chromium, against the real server process.

What the page must get right: the sign-in method choice shows the fields that method uses and no others,
choosing Microsoft 365 or Google fills in their mail server, the save sends exactly the wire shape the
server expects (checked on the request and on what the server then answers), stored secrets are write-only
with a "stored" hint, a certificate or key file is read in the browser, and a save from a DocSpace client
shows up as the switch back to password it is.
"""

from __future__ import annotations

import json
import re
from typing import Any

from pathlib import Path

import pytest
from oauthkit import OAuthProvider, XOAuth2Smtp, make_certificate, make_service_account_key
from oauthkit import oauth_provider, xoauth2_smtp  # noqa: F401  (fixtures)
from playwright.sync_api import Page, Request, expect
from serverkit import Portal
from test_admin_page import SETTINGS, field, get_via_api, save_via_api, sign_in

from smtpsettings.domain.accounts import Role

TENANT = "contoso.onmicrosoft.com"
CLIENT_ID = "6731de76-14a6-49ae-97bc-6eba6914391e"
CLIENT_SECRET = "Qx8Q~client-secret-value~7"
MAILBOX = "noreply@contoso.example"

# ------------------------------------------------------------------------------------------- helpers


def posted_settings(page: Page) -> list[dict[str, Any]]:
    """The bodies of the page's settings saves, in order, as the browser sent them."""
    bodies: list[dict[str, Any]] = []

    def keep(request: Request) -> None:
        if request.method == "POST" and request.url.endswith(SETTINGS):
            bodies.append(json.loads(request.post_data or "null"))

    page.on("request", keep)
    return bodies


def choose_oauth2(page: Page, provider: str) -> None:
    field(page, "Authentication").check()
    field(page, "OAuth 2.0").check()
    field(page, provider).check()


def fill_common(page: Page, mailbox: str = MAILBOX) -> None:
    field(page, "Sender email address").fill(mailbox)
    field(page, "Host login").fill(mailbox)


def save(page: Page) -> None:
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_role("status").filter(has_text="Settings saved.")).to_be_visible()


def expect_shown(page: Page, labels: list[str], hidden: list[str]) -> None:
    for label in labels:
        expect(field(page, label)).to_be_visible()
    for label in hidden:
        expect(field(page, label)).to_be_hidden()


OAUTH2_LABELS = [
    "Microsoft 365",
    "Tenant ID",
    "Client ID",
    "Client secret",
    "Certificate",
    "Client secret value",
    "Certificate and private key (PEM)",
    "Service account key (JSON)",
    "Token URL",
    "Scope",
]


def certificate_and_key() -> tuple[str, str]:
    """A fresh self-signed RSA certificate and its unencrypted key, as two PEM texts (two files)."""
    cert = make_certificate()
    return cert.certificate_pem, cert.pem[len(cert.certificate_pem) :]


# ------------------------------------------------------------------------------------------- the method choice


def test_the_method_choice_shows_only_the_fields_of_that_method(page: Page, portal: Portal) -> None:
    sign_in(page, portal)
    expect(field(page, "Login and password")).to_be_checked()  # the server default: auth without NTLM
    expect_shown(page, ["Host login", "Host password"], OAUTH2_LABELS)

    field(page, "NTLM").check()
    expect_shown(page, ["Host login", "Host password"], OAUTH2_LABELS)

    field(page, "OAuth 2.0").check()
    expect_shown(page, ["Host login", "Microsoft 365", "Google Workspace", "Other token endpoint"], ["Host password", "Tenant ID", "Token URL"])
    expect(page.get_by_text("DocSpace and its SDK do not know OAuth 2.0")).to_be_visible()
    # A provider must be chosen before anything can be saved.
    expect(page.locator("#oauth2-provider-error")).to_have_text("Choose who issues the tokens.")
    expect(page.get_by_role("button", name="Save")).to_be_disabled()

    field(page, "Microsoft 365").check()
    expect(page.locator("#oauth2-provider-error")).to_have_text("")
    expect_shown(
        page,
        ["Tenant ID", "Client ID", "Client secret", "Certificate", "Client secret value", "Token URL", "Scope"],
        ["Host password", "Certificate and private key (PEM)", "Service account key (JSON)"],
    )
    expect(field(page, "Client secret")).to_be_checked()
    # The defaults the server applies to empty fields are the placeholders.
    field(page, "Tenant ID").fill(TENANT)
    expect(field(page, "Token URL")).to_have_attribute("placeholder", f"https://login.microsoftonline.com/{TENANT}/oauth2/v2.0/token")
    expect(field(page, "Scope")).to_have_attribute("placeholder", "https://outlook.office365.com/.default")
    expect(field(page, "Host login")).to_have_accessible_description(re.compile("The mailbox to send from"))

    field(page, "Certificate").check()
    expect_shown(page, ["Certificate and private key (PEM)", "Or read them from files"], ["Client secret value"])

    field(page, "Google Workspace").check()
    expect_shown(
        page,
        ["Service account key (JSON)", "Or read it from a file", "Token URL", "Scope"],
        ["Tenant ID", "Client ID", "Client secret", "Client secret value", "Certificate and private key (PEM)"],
    )
    expect(field(page, "Token URL")).to_have_attribute("placeholder", "https://oauth2.googleapis.com/token")
    expect(field(page, "Scope")).to_have_attribute("placeholder", "https://mail.google.com/")

    field(page, "Other token endpoint").check()
    expect_shown(
        page,
        ["Client ID", "Client secret value", "Token URL", "Scope"],
        ["Tenant ID", "Client secret", "Service account key (JSON)", "Certificate and private key (PEM)"],
    )
    expect(field(page, "Token URL")).to_have_accessible_description(re.compile(r"The provider's token endpoint \(https\)"))

    # Authentication off: every sign-in field is disabled, as the login and password always were.
    field(page, "Authentication").uncheck()
    for label in ("Login and password", "NTLM", "OAuth 2.0", "Other token endpoint", "Client ID", "Client secret value", "Token URL"):
        expect(field(page, label)).to_be_disabled()

    field(page, "Authentication").check()
    field(page, "Login and password").check()
    expect_shown(page, ["Host password"], OAUTH2_LABELS)


def test_choosing_a_provider_fills_in_its_mail_server(page: Page, portal: Portal) -> None:
    sign_in(page, portal)
    expect(field(page, "Enable SSL")).not_to_be_checked()
    field(page, "OAuth 2.0").check()
    expect(field(page, "Host")).to_have_value("mail.default.test")  # the method alone changes nothing

    field(page, "Microsoft 365").check()
    expect(field(page, "Host")).to_have_value("smtp.office365.com")
    expect(field(page, "Port")).to_have_value("587")
    expect(field(page, "Enable SSL")).to_be_checked()  # STARTTLS on 587
    expect(page.locator("#announcer")).to_have_text("Microsoft 365: host smtp.office365.com, port 587 and SSL (STARTTLS) set.")
    expect(page.locator("#oauth2-provider")).to_have_accessible_description(re.compile("Choosing it sets host smtp.office365.com, port 587"))

    field(page, "Enable SSL").uncheck()
    field(page, "Google Workspace").check()
    expect(field(page, "Host")).to_have_value("smtp.gmail.com")
    expect(field(page, "Port")).to_have_value("587")
    expect(field(page, "Enable SSL")).to_be_checked()
    expect(page.locator("#announcer")).to_have_text("Google Workspace: host smtp.gmail.com, port 587 and SSL (STARTTLS) set.")

    # Any other endpoint has no mail server of its own: what the admin typed stays.
    field(page, "Host").fill("mail.example.org")
    field(page, "Port").fill("465")
    field(page, "Other token endpoint").check()
    expect(field(page, "Host")).to_have_value("mail.example.org")
    expect(field(page, "Port")).to_have_value("465")


def test_ntlm_is_sent_as_both_auth_method_and_use_ntlm(page: Page, portal: Portal) -> None:
    bodies = posted_settings(page)
    save_via_api(portal)
    sign_in(page, portal)
    field(page, "NTLM").check()
    save(page)
    assert bodies[-1]["authMethod"] == "ntlm" and bodies[-1]["useNtlm"] is True and "oauth2" not in bodies[-1]
    stored = get_via_api(portal)
    assert (stored["authMethod"], stored["useNtlm"], stored["oauth2"]) == ("ntlm", True, None)

    page.reload()
    expect(field(page, "NTLM")).to_be_checked()
    expect(field(page, "Host password")).to_have_accessible_description(re.compile("A password is stored"))
    field(page, "Login and password").check()
    save(page)  # the stored password is kept: same host, port and login
    assert bodies[-1]["authMethod"] == "password" and bodies[-1]["useNtlm"] is False
    stored = get_via_api(portal)
    assert (stored["authMethod"], stored["useNtlm"]) == ("password", False)


# ------------------------------------------------------------------------------------------- saving OAuth 2.0


def test_microsoft_with_a_client_secret_is_saved_and_the_secret_is_write_only(page: Page, portal: Portal) -> None:
    bodies = posted_settings(page)
    sign_in(page, portal)
    choose_oauth2(page, "Microsoft 365")
    fill_common(page)
    field(page, "Tenant ID").fill(TENANT)
    field(page, "Client ID").fill(CLIENT_ID)
    expect(page.get_by_role("button", name="Save")).to_be_disabled()  # the secret is missing
    field(page, "Client secret value").fill(CLIENT_SECRET)
    save(page)

    assert bodies == [
        {
            "host": "smtp.office365.com",
            "port": 587,
            "senderAddress": MAILBOX,
            "senderDisplayName": "Default Sender",
            "credentialsUserName": MAILBOX,
            "enableSSL": True,
            "enableAuth": True,
            "useNtlm": False,
            "authMethod": "oauth2",
            "oauth2": {
                "provider": "microsoft",
                "tenantId": TENANT,
                "clientId": CLIENT_ID,
                "clientSecret": CLIENT_SECRET,
                "tokenUrl": "",
                "scope": "",
            },
        }
    ]
    stored = get_via_api(portal)
    assert stored["authMethod"] == "oauth2" and stored["credentialsUserPassword"] == ""
    assert stored["oauth2"] == {
        "provider": "microsoft",
        "tenantId": TENANT,
        "clientId": CLIENT_ID,
        "clientSecret": "",
        "certificate": "",
        "serviceAccountKey": "",
        "tokenUrl": "",
        "scope": "",
        "clientSecretStored": True,
        "certificateStored": False,
        "serviceAccountKeyStored": False,
    }
    expect(field(page, "Client secret value")).to_have_value("")
    assert CLIENT_SECRET not in page.content()

    # After a reload: the settings as saved, the secret only as "stored".
    page.reload()
    expect(field(page, "OAuth 2.0")).to_be_checked()
    expect(field(page, "Microsoft 365")).to_be_checked()
    expect(field(page, "Client secret")).to_be_checked()
    expect(field(page, "Tenant ID")).to_have_value(TENANT)
    expect(field(page, "Client ID")).to_have_value(CLIENT_ID)
    secret = field(page, "Client secret value")
    expect(secret).to_have_value("")
    expect(secret).to_have_accessible_description(re.compile("A client secret is stored. Leave the field empty to keep it."))
    expect(secret).to_have_attribute("placeholder", "Stored client secret (unchanged)")
    expect(page.get_by_role("button", name="Save")).to_be_disabled()  # nothing changed
    expect(page.get_by_role("button", name="Send test mail")).to_be_enabled()

    # A change elsewhere saves without the secret, which the server keeps.
    field(page, "Sender display name").fill("Contoso Mailer")
    save(page)
    assert "clientSecret" not in bodies[-1]["oauth2"]
    assert get_via_api(portal)["oauth2"]["clientSecretStored"] is True

    # Another client ID would take the stored secret to another client: the page asks for it again.
    field(page, "Client ID").fill("00000000-0000-0000-0000-000000000001")
    expect(secret).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#oauth2-client-secret-error")).to_have_text(re.compile("^Enter the client secret again: .*client ID.*changed"))
    expect(page.get_by_role("button", name="Save")).to_be_disabled()
    field(page, "Client ID").fill(CLIENT_ID)
    expect(secret).not_to_have_attribute("aria-invalid", "true")
    expect(secret).to_have_accessible_description(re.compile("A client secret is stored"))


def test_the_server_check_of_a_secret_lands_at_its_field(page: Page, portal: Portal) -> None:
    """The page keeps the secret when host, login, tenant, client and token URL look unchanged; the server,
    whose settings another admin has meanwhile pointed at another client, refuses: the error is at the field."""
    sign_in(page, portal)
    choose_oauth2(page, "Microsoft 365")
    fill_common(page)
    field(page, "Tenant ID").fill(TENANT)
    field(page, "Client ID").fill(CLIENT_ID)
    field(page, "Client secret value").fill(CLIENT_SECRET)
    save(page)
    # Another admin, another tab: the same settings for another client, with its own secret.
    stored = get_via_api(portal)
    other = {**stored, "oauth2": {"provider": "microsoft", "tenantId": TENANT, "clientId": "other-client", "clientSecret": "other-secret"}}
    with portal.client(Role.ADMIN) as c:
        assert c.post(SETTINGS, json=other).status_code == 200

    field(page, "Sender display name").fill("Changed")
    page.get_by_role("button", name="Save").click()
    secret = field(page, "Client secret value")
    expect(secret).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#oauth2-client-secret-error")).to_have_text(re.compile("^Enter the client secret again: the server keeps a stored one"))
    expect(secret).to_be_focused()
    expect(page.get_by_role("alert").filter(has_text="correct the highlighted fields")).to_be_visible()
    assert get_via_api(portal)["oauth2"]["clientId"] == "other-client"

    secret.fill(CLIENT_SECRET)
    expect(secret).not_to_have_attribute("aria-invalid", "true")
    save(page)
    assert get_via_api(portal)["oauth2"]["clientId"] == CLIENT_ID


def test_a_certificate_is_read_from_files_in_the_browser_and_replaces_the_secret(page: Page, portal: Portal, tmp_path: Path) -> None:
    certificate, key = certificate_and_key()
    (tmp_path / "cert.pem").write_text(certificate)
    (tmp_path / "key.pem").write_text(key)
    bodies = posted_settings(page)
    sign_in(page, portal)
    choose_oauth2(page, "Microsoft 365")
    fill_common(page)
    field(page, "Tenant ID").fill(TENANT)
    field(page, "Client ID").fill(CLIENT_ID)
    field(page, "Client secret value").fill(CLIENT_SECRET)
    save(page)
    assert get_via_api(portal)["oauth2"]["clientSecretStored"] is True

    field(page, "Certificate").check()
    pem = field(page, "Certificate and private key (PEM)")
    expect(pem).to_have_attribute("aria-invalid", "true")  # no certificate stored yet
    expect(page.locator("#oauth2-certificate-error")).to_have_text("Enter the certificate.")
    carrying_the_key: list[str] = []
    page.on("request", lambda r: carrying_the_key.append(r.url) if "PRIVATE KEY" in (r.post_data or "") else None)
    field(page, "Or read them from files").set_input_files([tmp_path / "cert.pem", tmp_path / "key.pem"])
    expect(pem).to_have_value(certificate.strip() + "\n" + key.strip())
    expect(page.locator("#announcer")).to_have_text("Read cert.pem and key.pem.")
    assert carrying_the_key == []  # read here: nothing has left the page yet
    expect(pem).not_to_have_attribute("aria-invalid", "true")
    save(page)

    assert bodies[-1]["oauth2"] == {
        "provider": "microsoft",
        "tenantId": TENANT,
        "clientId": CLIENT_ID,
        "certificate": certificate.strip() + "\n" + key.strip(),
        "tokenUrl": "",
        "scope": "",
    }
    stored = get_via_api(portal)["oauth2"]
    assert (stored["certificateStored"], stored["clientSecretStored"], stored["certificate"]) == (True, False, "")
    expect(pem).to_have_value("")
    expect(pem).to_have_accessible_description(re.compile("A certificate is stored. Leave the field empty to keep it."))
    page.reload()
    expect(field(page, "Certificate")).to_be_checked()  # the stored credential is the one shown
    expect(field(page, "Certificate and private key (PEM)")).to_have_attribute("placeholder", "Stored certificate (unchanged)")


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("just text", re.compile("^Include the certificate")),
        ("{cert}", re.compile("^Include the private key too")),
        ("{cert}\n-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----", "The private key is protected by a passphrase: export it without one."),
    ],
    ids=["no-certificate", "no-key", "encrypted-key"],
)
def test_a_certificate_without_its_key_is_explained(page: Page, portal: Portal, text: str, error: str | re.Pattern[str]) -> None:
    certificate, _ = certificate_and_key()
    sign_in(page, portal)
    choose_oauth2(page, "Microsoft 365")
    field(page, "Certificate").check()
    field(page, "Certificate and private key (PEM)").fill(text.replace("{cert}", certificate))
    expect(page.locator("#oauth2-certificate-error")).to_have_text(error)
    expect(page.get_by_role("button", name="Save")).to_be_disabled()


def test_a_key_that_does_not_fit_the_certificate_is_refused_by_the_server_at_the_field(page: Page, portal: Portal) -> None:
    """What only the server can check (the key belongs to the certificate) still ends at the right field."""
    certificate, _ = certificate_and_key()
    _, other_key = certificate_and_key()
    sign_in(page, portal)
    choose_oauth2(page, "Microsoft 365")
    fill_common(page)
    field(page, "Tenant ID").fill(TENANT)
    field(page, "Client ID").fill(CLIENT_ID)
    field(page, "Certificate").check()
    field(page, "Certificate and private key (PEM)").fill(certificate + other_key)
    page.get_by_role("button", name="Save").click()
    expect(page.locator("#oauth2-certificate-error")).to_have_text(re.compile("^The field Oauth2.Certificate .*does not belong to"))
    expect(field(page, "Certificate and private key (PEM)")).to_be_focused()
    assert get_via_api(portal)["isDefaultSettings"] is True


def test_google_with_a_service_account_key_file(page: Page, portal: Portal, tmp_path: Path) -> None:
    key_json = make_service_account_key().json
    (tmp_path / "smtp-test-0123.json").write_text(key_json)
    bodies = posted_settings(page)
    sign_in(page, portal)
    choose_oauth2(page, "Google Workspace")
    field(page, "Sender email address").fill("noreply@example.com")
    field(page, "Host login").fill("noreply")
    expect(page.locator("#smtp-login-error")).to_have_text(re.compile("^Enter the mailbox's email address"))
    field(page, "Host login").fill("noreply@example.com")
    expect(page.locator("#smtp-login-error")).to_have_text("")

    key_field = field(page, "Service account key (JSON)")
    key_field.fill('{"client_email": "x"}')
    expect(page.locator("#oauth2-key-error")).to_have_text('This is not a service account key (its "type" is "service_account").')
    field(page, "Or read it from a file").set_input_files(tmp_path / "smtp-test-0123.json")
    expect(key_field).to_have_value(key_json)
    expect(page.locator("#oauth2-key-error")).to_have_text("")
    save(page)

    assert bodies[-1]["oauth2"] == {"provider": "google", "serviceAccountKey": key_json, "tokenUrl": "", "scope": ""}
    assert (bodies[-1]["host"], bodies[-1]["port"], bodies[-1]["enableSSL"]) == ("smtp.gmail.com", 587, True)
    stored = get_via_api(portal)
    assert stored["oauth2"]["serviceAccountKeyStored"] is True and stored["oauth2"]["serviceAccountKey"] == ""
    expect(key_field).to_have_accessible_description(re.compile("A service account key is stored"))


def test_another_token_endpoint_needs_its_url_https_or_loopback(page: Page, portal: Portal) -> None:
    bodies = posted_settings(page)
    sign_in(page, portal)
    choose_oauth2(page, "Other token endpoint")
    field(page, "Host login").fill("mailer")
    field(page, "Client ID").fill("smtp-client")
    field(page, "Client secret value").fill("s3cret")
    url = field(page, "Token URL")
    url.fill("https://")
    url.fill("")
    expect(page.locator("#oauth2-token-url-error")).to_have_text("Enter the token URL: other providers have no default.")
    url.fill("http://idp.example.com/token")
    expect(page.locator("#oauth2-token-url-error")).to_have_text("The token URL must start with https:// (plain http only to this machine).")
    url.fill("idp.example.com/token")
    expect(page.locator("#oauth2-token-url-error")).to_have_text(re.compile("^Enter the full address"))
    field(page, "Scope").fill('smtp "send"')
    expect(page.locator("#oauth2-scope-error")).to_have_text(re.compile("^Give scope names separated by single spaces"))
    field(page, "Scope").fill("smtp.send offline")
    url.fill("http://127.0.0.1:9/token")
    expect(page.locator("#oauth2-token-url-error")).to_have_text("")
    save(page)
    assert bodies[-1]["oauth2"] == {
        "provider": "generic",
        "clientId": "smtp-client",
        "clientSecret": "s3cret",
        "tokenUrl": "http://127.0.0.1:9/token",
        "scope": "smtp.send offline",
    }
    stored = get_via_api(portal)["oauth2"]
    assert (stored["tokenUrl"], stored["scope"], stored["clientSecretStored"]) == ("http://127.0.0.1:9/token", "smtp.send offline", True)

    # Another token URL would send the stored secret elsewhere: it is asked for again.
    page.reload()
    field(page, "Token URL").fill("https://idp.example.com/token")
    expect(page.locator("#oauth2-client-secret-error")).to_have_text(re.compile("^Enter the client secret again"))


def test_a_docspace_shaped_save_switches_the_page_back_to_password(page: Page, portal: Portal) -> None:
    sign_in(page, portal)
    choose_oauth2(page, "Other token endpoint")
    fill_common(page)
    field(page, "Client ID").fill("smtp-client")
    field(page, "Client secret value").fill("s3cret")
    field(page, "Token URL").fill("https://idp.example.com/token")
    save(page)
    expect(page.get_by_text("DocSpace and its SDK do not know OAuth 2.0")).to_be_visible()

    # A DocSpace client saves its ten fields, with a password: no authMethod, no oauth2.
    save_via_api(portal, credentialsUserName=MAILBOX, host="smtp.example.com")
    page.reload()
    expect(field(page, "Login and password")).to_be_checked()
    expect(field(page, "Host password")).to_have_accessible_description(re.compile("A password is stored"))
    expect_shown(page, ["Host password"], OAUTH2_LABELS)
    # Going back to OAuth 2.0 starts from nothing: the credentials went with the DocSpace save.
    field(page, "OAuth 2.0").check()
    expect(field(page, "Other token endpoint")).not_to_be_checked()
    field(page, "Other token endpoint").check()
    expect(field(page, "Client ID")).to_have_value("")
    expect(page.locator("#oauth2-client-secret-error")).to_have_text("Enter the client secret.")
    expect(page.locator("#history-list > li").first).to_contain_text("Sign-in method")


# ------------------------------------------------------------------------------------------- test mail


def point_at(page: Page, smtp: XOAuth2Smtp, provider: OAuthProvider, mailbox: str) -> None:
    """After a provider's preset: the loopback XOAUTH2 server and token endpoint instead of the real ones."""
    field(page, "Host").fill(smtp.host)
    field(page, "Port").fill(str(smtp.port))
    field(page, "Enable SSL").uncheck()  # plain text to loopback only
    field(page, "Sender email address").fill(mailbox)
    field(page, "Host login").fill(mailbox)
    field(page, "Token URL").fill(provider.token_url)


def send_test_mail(page: Page) -> None:
    expect(page.get_by_role("button", name="Send test mail")).to_be_enabled()
    page.get_by_role("button", name="Send test mail").click()
    expect(page.locator("#test-result")).to_be_visible()


@pytest.mark.parametrize("credential", ["client secret", "certificate files", "service account key file"])
def test_a_test_mail_signs_in_with_a_token_and_shows_the_token_step(
    page: Page, portal: Portal, oauth_provider: OAuthProvider, xoauth2_smtp: XOAuth2Smtp, tmp_path: Path, credential: str
) -> None:
    """Saved on the page, the settings send a real test mail: token from the endpoint, then AUTH XOAUTH2."""
    mailbox = portal.emails[Role.OWNER]  # also where the test mail goes
    sign_in(page, portal)
    if credential == "service account key file":
        account = oauth_provider.add_service_account(subjects={mailbox})
        choose_oauth2(page, "Google Workspace")
        point_at(page, xoauth2_smtp, oauth_provider, mailbox)
        (tmp_path / "key.json").write_text(account.key.json)
        field(page, "Or read it from a file").set_input_files(tmp_path / "key.json")
        secret = json.loads(account.key.json)["private_key"].splitlines()[1]
    else:
        choose_oauth2(page, "Microsoft 365")
        point_at(page, xoauth2_smtp, oauth_provider, mailbox)
        field(page, "Tenant ID").fill(TENANT)
        if credential == "client secret":
            client = oauth_provider.add_secret_client()
            field(page, "Client ID").fill(client.client_id)
            field(page, "Client secret value").fill(client.secret)
            secret = client.secret
        else:
            cert_client = oauth_provider.add_certificate_client()
            certificate = cert_client.certificate
            (tmp_path / "cert.pem").write_text(certificate.certificate_pem)
            (tmp_path / "key.pem").write_text(certificate.pem[len(certificate.certificate_pem) :])
            field(page, "Client ID").fill(cert_client.client_id)
            field(page, "Certificate").check()
            field(page, "Or read them from files").set_input_files([tmp_path / "cert.pem", tmp_path / "key.pem"])
            secret = certificate.pem.splitlines()[-2]  # a line of the private key
    save(page)

    send_test_mail(page)
    expect(page.locator("#test-result")).to_have_text(f"The test mail was sent to {mailbox}. Check the inbox.")
    assert len(xoauth2_smtp.messages) == 1 and xoauth2_smtp.inbox.logins == [mailbox]
    assert oauth_provider.hits == 1
    page.get_by_text("Step-by-step diagnostics").click()
    steps = page.locator("#test-detail-list .diag__step")
    expect(steps.filter(has_text="Get OAuth 2.0 token").first).to_be_visible()
    transcript = page.locator("#test-transcript")
    expect(transcript).to_contain_text("AUTH XOAUTH2 ***")
    shown = page.locator("#test-panel").inner_text()
    token = oauth_provider.issued[-1].value
    assert secret not in shown and token not in shown and secret not in page.content()


def test_a_refused_token_request_stops_the_test_at_the_token_step(
    page: Page, portal: Portal, oauth_provider: OAuthProvider, xoauth2_smtp: XOAuth2Smtp
) -> None:
    client = oauth_provider.add_secret_client()
    oauth_provider.fail_next("invalid_client", "AADSTS7000215: Invalid client secret provided.", status=401)
    mailbox = portal.emails[Role.OWNER]
    sign_in(page, portal)
    choose_oauth2(page, "Microsoft 365")
    point_at(page, xoauth2_smtp, oauth_provider, mailbox)
    field(page, "Tenant ID").fill(TENANT)
    field(page, "Client ID").fill(client.client_id)
    field(page, "Client secret value").fill(client.secret)
    save(page)

    send_test_mail(page)
    result = page.locator("#test-result")
    expect(result).to_contain_text("The test mail could not be sent")
    expect(result).to_contain_text("AADSTS7000215")
    expect(page.locator("#test-step")).to_have_text("Stopped at: Get OAuth 2.0 token")
    expect(page.locator("#announcer")).to_have_text(re.compile("^The test mail could not be sent"))
    with portal.client(Role.OWNER) as c:
        status = c.get(SETTINGS + "/test/status").json()["response"]
    expect(page.get_by_role("progressbar")).to_have_attribute("aria-valuenow", str(status["percents"]))
    page.get_by_text("Step-by-step diagnostics").click()
    failed = page.locator("#test-detail-list > li.diag--error")
    expect(failed.first).to_contain_text("Get OAuth 2.0 token")
    expect(page.locator("#test-transcript")).to_have_text("(no SMTP dialogue)")  # it never connected
    assert xoauth2_smtp.messages == [] and client.secret not in page.content()


def test_the_oauth2_fields_have_names_and_fit_a_phone(page: Page, portal: Portal) -> None:
    page.set_viewport_size({"width": 360, "height": 740})
    sign_in(page, portal)
    choose_oauth2(page, "Microsoft 365")
    field(page, "Certificate").check()
    field(page, "Certificate and private key (PEM)").fill("-----BEGIN CERTIFICATE-----\n" + "A" * 64 * 8 + "\n")
    field(page, "Token URL").fill("https://" + "very-long-identity-provider-name." * 4 + "example/token")
    assert page.evaluate("document.documentElement.scrollWidth <= document.documentElement.clientWidth")
    for provider in ("Google Workspace", "Other token endpoint"):
        field(page, provider).check()
        assert page.evaluate("document.documentElement.scrollWidth <= document.documentElement.clientWidth")
    unlabelled = page.evaluate(
        """() => [...document.querySelectorAll('#auth-fields input, #auth-fields textarea')]
              .filter(el => !(el.labels && el.labels.length)).map(el => el.outerHTML)"""
    )
    assert unlabelled == []
    # The radio groups are named by their legends, and work with the arrow keys.
    expect(page.get_by_role("group", name="Provider")).to_be_visible()
    expect(page.get_by_role("group", name="Sign-in method")).to_be_visible()
    field(page, "Other token endpoint").focus()
    page.keyboard.press("ArrowLeft")
    expect(field(page, "Google Workspace")).to_be_checked()
    expect(field(page, "Host")).to_have_value("smtp.gmail.com")  # the preset follows the keyboard too
    expect(page.get_by_role("group", name="Provider")).to_have_accessible_description(re.compile("A service account with domain-wide delegation"))


def test_the_page_is_still_served_without_inline_code(portal: Portal) -> None:
    """The new parts keep the CSP: no inline handlers or styles, no external address in the markup."""
    import httpx

    from smtpsettings.web import STATIC_DIR

    with httpx.Client(base_url=portal.server.base_url, headers={"Host": portal.hostname}) as c:
        html = c.get("/").text
        js = "\n".join(c.get(f"/static/{p.name}").text for p in STATIC_DIR.glob("*.js"))
    assert "style=" not in html and not re.search(r"\son[a-z]+=", html)
    assert "innerHTML" not in js and "insertAdjacentHTML" not in js and "eval(" not in js
