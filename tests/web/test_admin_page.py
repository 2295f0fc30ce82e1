"""The admin page in a real browser (Debian's Chromium via Playwright) against the real server process.

Every test uses a fresh portal of the shared server; the page is opened on the portal's own hostname.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.sync_api import BrowserContext, Page, expect
from serverkit import PASSWORD, Portal, Server, make_portal, start_server
from smtp_peers import closed_port, smtp_peer, tarpit

from smtpsettings.domain.accounts import Role
from smtpsettings.web import STATIC_DIR

SETTINGS = "/api/2.0/smtpsettings/smtp"
# The page's script: ES modules loaded by the browser as they are, no build step.
SCRIPTS = sorted(f"/static/{p.name}" for p in STATIC_DIR.glob("*.js"))
SMTP_PASSWORD = "smtp-Pass-7c1e"
# Every input of the SMTP form, by its visible label.
SMTP_LABELS = [
    "Host",
    "Port",
    "Sender email address",
    "Sender display name",
    "Authentication",
    "Host login",
    "Host password",
    "NTLM",
    "Enable SSL",
]

# ------------------------------------------------------------------------------------------- helpers


def url_of(portal: Portal) -> str:
    """The page's address for a portal: its own hostname (resolved to 127.0.0.1 by Chromium), the server's port."""
    return f"http://{portal.hostname}:{urlsplit(portal.server.base_url).port}/"


def field(page: Page, label: str):  # noqa: ANN201 - a Locator
    return page.get_by_label(label, exact=True)


def sign_in(page: Page, portal: Portal, role: Role = Role.OWNER) -> None:
    page.goto(url_of(portal))
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    field(page, "Email").fill(portal.emails[role])
    field(page, "Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    if role in (Role.OWNER, Role.ADMIN):
        expect(page.get_by_role("heading", name="SMTP settings")).to_be_visible()


def save_via_api(portal: Portal, **settings: Any) -> dict[str, Any]:
    body = {
        "host": "smtp.example.com",
        "port": 587,
        "senderAddress": "noreply@example.com",
        "senderDisplayName": "Example Portal",
        "credentialsUserName": "mailer",
        "credentialsUserPassword": SMTP_PASSWORD,
        "enableSSL": True,
        "enableAuth": True,
        "useNtlm": False,
        **settings,
    }
    with portal.client(Role.ADMIN) as c:
        r = c.post(SETTINGS, json=body)
    assert r.status_code == 200, r.text
    return r.json()["response"]  # type: ignore[no-any-return]


def get_via_api(portal: Portal) -> dict[str, Any]:
    with portal.client(Role.ADMIN) as c:
        r = c.get(SETTINGS)
    assert r.status_code == 200, r.text
    return r.json()["response"]  # type: ignore[no-any-return]


def expect_field_error(page: Page, label: str, text: str | re.Pattern[str]) -> None:
    """The field is marked invalid and its error, with this text, is part of its accessible description."""
    input_ = field(page, label)
    expect(input_).to_have_attribute("aria-invalid", "true")
    error_id = input_.evaluate("el => el.id") + "-error"
    expect(page.locator(f"#{error_id}")).to_have_text(text)
    expect(page.locator(f"#{error_id}")).to_have_attribute("aria-live", "polite")
    assert error_id in (input_.get_attribute("aria-describedby") or "").split()
    expect(input_).to_have_accessible_description(text if isinstance(text, re.Pattern) else re.compile(re.escape(text)))


def expect_no_field_error(page: Page, label: str) -> None:
    expect(field(page, label)).not_to_have_attribute("aria-invalid", "true")


def no_horizontal_scroll(page: Page) -> bool:
    return bool(page.evaluate("document.documentElement.scrollWidth <= document.documentElement.clientWidth"))


# ------------------------------------------------------------------------------------------- sign-in and roles


def test_sign_in_shows_the_inherited_default_then_saves_and_reloads(page: Page, portal: Portal) -> None:
    sign_in(page, portal)
    badge = page.locator("#source-badge")
    expect(badge).to_have_text("Server default")
    expect(page.get_by_text("This portal uses the server's default SMTP settings")).to_be_visible()
    expect(field(page, "Host")).to_have_value("mail.default.test")
    expect(field(page, "Port")).to_have_value("2525")
    expect(field(page, "Sender email address")).to_have_value("portal@default.test")
    expect(field(page, "Sender display name")).to_have_value("Default Sender")
    expect(field(page, "Authentication")).to_be_checked()
    expect(field(page, "Host login")).to_have_value("default-user")
    expect(field(page, "Host password")).to_have_value("")
    # The server's default password is not the portal's: no "stored" hint, and Save/Restore have nothing to do.
    expect(page.get_by_text("A password is stored")).to_have_count(0)
    expect(page.get_by_role("button", name="Save")).to_be_disabled()
    expect(page.get_by_role("button", name="Restore default")).to_be_disabled()
    expect(page.get_by_text("No changes yet.")).to_be_visible()

    field(page, "Host").fill("smtp.example.com")
    field(page, "Port").fill("587")
    field(page, "Sender email address").fill("noreply@example.com")
    field(page, "Sender display name").fill("Example Portal")
    field(page, "Host login").fill("mailer")
    # Host and login changed with auth on and no password of the portal's own: the password is required.
    expect(page.get_by_role("button", name="Save")).to_be_disabled()
    field(page, "Host password").fill(SMTP_PASSWORD)
    field(page, "Enable SSL").check()
    field(page, "NTLM").check()
    expect(page.get_by_role("button", name="Send test mail")).to_be_disabled()  # unsaved changes
    page.get_by_role("button", name="Save").click()

    expect(page.get_by_role("status").filter(has_text="Settings saved.")).to_be_visible()
    expect(badge).to_have_text("Portal's own settings")
    stored = get_via_api(portal)
    assert stored | {"credentialsUserPassword": ""} == {
        "host": "smtp.example.com",
        "port": 587,
        "senderAddress": "noreply@example.com",
        "senderDisplayName": "Example Portal",
        "credentialsUserName": "mailer",
        "credentialsUserPassword": "",
        "enableSSL": True,
        "enableAuth": True,
        "useNtlm": True,
        "isDefaultSettings": False,
        "authMethod": "ntlm",
        "oauth2": None,
    }

    page.reload()
    expect(badge).to_have_text("Portal's own settings")
    expect(field(page, "Host")).to_have_value("smtp.example.com")
    expect(field(page, "Port")).to_have_value("587")
    expect(field(page, "Sender email address")).to_have_value("noreply@example.com")
    expect(field(page, "Sender display name")).to_have_value("Example Portal")
    expect(field(page, "Host login")).to_have_value("mailer")
    expect(field(page, "Enable SSL")).to_be_checked()
    expect(field(page, "NTLM")).to_be_checked()
    password = field(page, "Host password")
    expect(password).to_have_value("")
    expect(password).to_have_accessible_description(re.compile("A password is stored. Leave the field empty to keep it."))
    expect(page.get_by_role("button", name="Save")).to_be_disabled()
    expect(page.get_by_role("button", name="Restore default")).to_be_enabled()
    expect(page.get_by_role("button", name="Send test mail")).to_be_enabled()

    # Leaving the password empty keeps it: a change of the display name alone saves.
    field(page, "Sender display name").fill("Renamed Portal")
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_role("status").filter(has_text="Settings saved.")).to_be_visible()
    assert get_via_api(portal)["senderDisplayName"] == "Renamed Portal"


def test_the_change_history_appears_under_the_form(page: Page, portal: Portal) -> None:
    sign_in(page, portal)
    field(page, "Authentication").uncheck()
    field(page, "Host").fill("smtp.history.test")
    page.get_by_role("button", name="Save").click()
    history = page.locator("#history-list > li")
    expect(history).to_have_count(1)
    row = history.first
    expect(row).to_contain_text("Saved")
    expect(row).to_contain_text("Host")
    expect(row).to_contain_text(portal.emails[Role.OWNER])
    expect(row).to_contain_text("127.0.0.1")
    expect(row.locator("time")).to_have_attribute("datetime", re.compile(r"^\d{4}-\d\d-\d\dT"))
    # The history sits below the form.
    form_box = page.locator("#smtp-form").bounding_box()
    history_box = page.get_by_role("heading", name="Change history").bounding_box()
    assert form_box and history_box and history_box["y"] > form_box["y"] + form_box["height"]

    field(page, "Sender display name").fill("Second")
    page.get_by_role("button", name="Save").click()
    expect(history).to_have_count(2)
    expect(history.first).to_contain_text("Sender display name")  # newest first


def test_a_wrong_password_and_too_many_attempts_are_explained(page: Page, portal: Portal) -> None:
    page.goto(url_of(portal))
    field(page, "Email").fill(portal.emails[Role.OWNER])
    field(page, "Password").fill("not the password")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_have_text("The email or password is incorrect.")
    for _ in range(6):
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_load_state("networkidle")
    expect(page.get_by_role("alert")).to_have_text(re.compile(r"Too many failed sign-in attempts\. Try again in \d+ (second|minute)s?\."))
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()


def test_sign_in_fields_are_required(page: Page, portal: Portal) -> None:
    page.goto(url_of(portal))
    page.get_by_role("button", name="Sign in").click()
    expect_field_error(page, "Email", "Enter your email.")
    expect_field_error(page, "Password", "Enter your password.")
    expect(field(page, "Email")).to_be_focused()


def test_a_plain_user_sees_access_denied_explained(page: Page, portal: Portal) -> None:
    sign_in(page, portal, Role.USER)
    expect(page.get_by_role("heading", name="Access denied")).to_be_visible()
    explanation = page.locator("#view-denied")
    expect(explanation).to_contain_text("You are signed in as " + portal.emails[Role.USER])
    expect(explanation).to_contain_text("only the portal owner and portal administrators may view or change the SMTP settings")
    # No broken form: the settings are not on the page.
    expect(page.locator("#smtp-form")).to_be_hidden()
    expect(field(page, "Host")).to_be_hidden()
    page.locator("#view-denied").get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    expect(page.get_by_text("You have signed out.")).to_be_visible()


def test_an_admin_may_manage_and_sign_out(page: Page, portal: Portal) -> None:
    sign_in(page, portal, Role.ADMIN)
    expect(page.locator("#account-email")).to_have_text(portal.emails[Role.ADMIN])
    page.locator("header").get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    expect(page.get_by_text("You have signed out.")).to_be_visible()
    # The token is gone on the server too: a reload stays on the sign-in form, without the "expired" message.
    page.reload()
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    expect(page.get_by_text("Your session has expired")).to_have_count(0)


def test_a_revoked_session_returns_to_the_sign_in_form(page: Page, context: BrowserContext, portal: Portal) -> None:
    sign_in(page, portal)
    token = next(c["value"] for c in context.cookies() if c["name"] == "asc_auth_key")
    # Signed out elsewhere (another tab, another device): the token no longer works.
    with portal.client(headers={"Authorization": f"Bearer {token}"}) as c:
        assert c.post("/api/2.0/authentication/logout").status_code == 200
    field(page, "Authentication").uncheck()
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    expect(page.get_by_role("status").filter(has_text="Your session has expired, sign in again.")).to_be_visible()
    expect(field(page, "Email")).to_be_focused()
    assert get_via_api(portal)["isDefaultSettings"] is True  # nothing was saved


def test_a_deleted_cookie_returns_to_the_sign_in_form_on_reload(page: Page, context: BrowserContext, portal: Portal) -> None:
    sign_in(page, portal)
    context.clear_cookies()
    page.reload()
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    expect(page.get_by_text("Your session has expired, sign in again.")).to_be_visible()
    # Signing in again brings the settings back.
    field(page, "Email").fill(portal.emails[Role.OWNER])
    field(page, "Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(field(page, "Host")).to_have_value("mail.default.test")


# ------------------------------------------------------------------------------------------- validation


def test_client_side_validation_shows_errors_next_to_fields(page: Page, portal: Portal) -> None:
    sign_in(page, portal)
    save = page.get_by_role("button", name="Save")

    field(page, "Port").fill("70000")
    expect_field_error(page, "Port", "The port must be between 1 and 65535.")
    expect(save).to_be_disabled()
    field(page, "Port").fill("25x")
    expect_field_error(page, "Port", "The port must be a whole number from 1 to 65535.")
    field(page, "Port").fill("")
    expect_field_error(page, "Port", re.compile("^Enter the port"))
    field(page, "Port").fill("465")
    expect_no_field_error(page, "Port")

    field(page, "Sender email address").fill("not an address")
    expect_field_error(page, "Sender email address", "Enter a valid email address, like noreply@example.com.")
    field(page, "Sender email address").fill("")
    expect_field_error(page, "Sender email address", "Enter the sender email address.")
    field(page, "Sender email address").fill("ok@example.com")
    expect_no_field_error(page, "Sender email address")

    field(page, "Host").fill("")
    expect_field_error(page, "Host", "Enter the SMTP host.")
    field(page, "Host").fill("h" * 256)
    expect_field_error(page, "Host", "Host must be at most 255 characters.")
    field(page, "Host").fill("mail\u0007.example.com")
    expect_field_error(page, "Host", re.compile("must not contain control characters"))
    field(page, "Host").fill("smtp://mail.example.com")
    expect_field_error(page, "Host", "Give only the server's name, not a URL.")
    field(page, "Host").fill("mail.example.com:587")
    expect_field_error(page, "Host", "Give the port in the Port field, not in the host.")
    field(page, "Host").fill(".".join(["h" * 63] * 3 + ["h" * 61]))  # 253 characters, the longest name
    expect_no_field_error(page, "Host")

    field(page, "Sender display name").fill("Name\twith a tab")
    expect_field_error(page, "Sender display name", re.compile("must not contain control characters"))
    field(page, "Sender display name").fill("x" * 256)
    expect_field_error(page, "Sender display name", "Sender display name must be at most 255 characters.")
    field(page, "Sender display name").fill("Fine")
    expect_no_field_error(page, "Sender display name")

    field(page, "Host login").fill("")
    expect_field_error(page, "Host login", "Enter the login: it is required when authentication is on.")
    field(page, "Host login").fill("l" * 256)
    expect_field_error(page, "Host login", "Host login must be at most 255 characters.")
    # Authentication off: login, password and NTLM are disabled and no longer required.
    field(page, "Authentication").uncheck()
    for label in ("Host login", "Host password", "NTLM"):
        expect(field(page, label)).to_be_disabled()
    expect_no_field_error(page, "Host login")
    expect(save).to_be_enabled()
    field(page, "Authentication").check()
    for label in ("Host login", "Host password", "NTLM"):
        expect(field(page, label)).to_be_enabled()
    expect(save).to_be_disabled()
    expect(page.locator("#form-hint")).to_have_text(re.compile("Correct Host login, Host password to save"))


def test_a_server_400_is_shown_at_the_field(page: Page, portal: Portal) -> None:
    """The page allows an empty password (host, port and login look unchanged); the server, which has meanwhile
    been pointed at another host by another admin, disagrees: "Empty password." appears at the password."""
    save_via_api(portal)
    sign_in(page, portal)
    expect(field(page, "Host password")).to_have_accessible_description(re.compile("A password is stored"))
    save_via_api(portal, host="smtp.elsewhere.test")  # another admin, another tab

    field(page, "Sender display name").fill("Changed Name")
    page.get_by_role("button", name="Save").click()
    expect_field_error(page, "Host password", re.compile(r"^Empty password\. Enter the password again"))
    expect(field(page, "Host password")).to_be_focused()
    expect(page.get_by_role("alert").filter(has_text="The server refused the settings")).to_be_visible()
    assert get_via_api(portal)["senderDisplayName"] == "Example Portal"

    # Typing the password clears the server's complaint and the save goes through.
    field(page, "Host password").fill(SMTP_PASSWORD)
    expect_no_field_error(page, "Host password")
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_role("status").filter(has_text="Settings saved.")).to_be_visible()
    assert get_via_api(portal)["host"] == "smtp.example.com"  # what the form showed, now saved


def test_server_validation_errors_are_shown_field_by_field(page: Page, portal: Portal) -> None:
    """DocSpace's validation envelope (PascalCase keys) maps onto the form's fields."""
    sign_in(page, portal)
    answer = {
        "error": {"message": "One or more validation errors occurred.", "type": "ValidationFailed", "stack": None, "hresult": 0},
        "response": {
            "title": "One or more validation errors occurred.",
            "status": 400,
            "errors": {
                "Host": ["The field Host must be a string with a maximum length of 255."],
                "SenderAddress": ["The field SenderAddress must be a valid email address."],
                "Port": ["The field Port must be between 1 and 65535."],
            },
        },
        "status": 1,
        "statusCode": 400,
    }

    def refuse(route) -> None:  # type: ignore[no-untyped-def]
        if route.request.method == "POST":
            route.fulfill(status=400, content_type="application/json", body=json.dumps(answer))
        else:
            route.continue_()

    page.route(f"**{SETTINGS}", refuse)
    field(page, "Authentication").uncheck()
    page.get_by_role("button", name="Save").click()
    expect_field_error(page, "Host", "The field Host must be a string with a maximum length of 255.")
    expect_field_error(page, "Sender email address", "The field SenderAddress must be a valid email address.")
    expect_field_error(page, "Port", "The field Port must be between 1 and 65535.")
    expect(field(page, "Host")).to_be_focused()
    expect_no_field_error(page, "Sender display name")

    # DocSpace's single sentences land on their fields too.
    answer = {"error": {"message": "Empty sender address."}, "status": 1, "statusCode": 400}
    field(page, "Host").fill("smtp.example.com")
    page.get_by_role("button", name="Save").click()
    expect_field_error(page, "Sender email address", "Empty sender address.")


# ------------------------------------------------------------------------------------------- restore default


def test_restore_default_asks_to_confirm(page: Page, portal: Portal) -> None:
    save_via_api(portal)
    sign_in(page, portal)
    expect(page.locator("#source-badge")).to_have_text("Portal's own settings")
    restore = page.get_by_role("button", name="Restore default")

    restore.click()
    dialog = page.get_by_role("dialog", name="Restore default settings?")
    expect(dialog).to_be_visible()
    expect(dialog.get_by_role("button", name="Cancel")).to_be_focused()
    dialog.get_by_role("button", name="Cancel").click()
    expect(dialog).to_be_hidden()
    expect(restore).to_be_focused()
    assert get_via_api(portal)["isDefaultSettings"] is False

    restore.click()
    page.keyboard.press("Escape")  # Escape cancels too
    expect(dialog).to_be_hidden()
    assert get_via_api(portal)["isDefaultSettings"] is False

    restore.click()
    dialog.get_by_role("button", name="Yes, restore").click()
    expect(page.get_by_role("status").filter(has_text="Default settings restored.")).to_be_visible()
    expect(page.locator("#source-badge")).to_have_text("Server default")
    expect(field(page, "Host")).to_have_value("mail.default.test")
    expect(restore).to_be_disabled()
    expect(page.get_by_text("A password is stored")).to_have_count(0)
    assert get_via_api(portal)["isDefaultSettings"] is True
    expect(page.locator("#history-list > li").first).to_contain_text("Restored default")


# ------------------------------------------------------------------------------------------- test mail


def test_send_test_mail_shows_progress_then_success(page: Page, portal: Portal) -> None:
    status_polls: list[float] = []
    page.on(
        "request",
        lambda r: status_polls.append(time.monotonic()) if r.url.endswith("/smtp/test/status") else None,
    )
    with smtp_peer() as (port, inbox):
        save_via_api(portal, host="127.0.0.1", port=port, enableSSL=False, enableAuth=False, credentialsUserName="")
        sign_in(page, portal)
        test_button = page.get_by_role("button", name="Send test mail")
        # Unsaved changes disable the test (it would test the stored settings, not what is shown).
        field(page, "Host").fill("other.example.com")
        expect(test_button).to_be_disabled()
        expect(page.get_by_text("Save the changes first")).to_be_visible()
        field(page, "Host").fill("127.0.0.1")
        expect(test_button).to_be_enabled()

        polls_before = len(status_polls)
        test_button.click()
        progress = page.get_by_role("progressbar")
        expect(progress).to_be_visible()
        expect(test_button).to_be_disabled()  # one test at a time
        result = page.locator("#test-result")
        expect(result).to_have_text(f"The test mail was sent to {portal.emails[Role.OWNER]}. Check the inbox.")
        expect(page.locator("#announcer")).to_have_text(re.compile("^The test mail was sent"))  # aria-live
        expect(progress).to_have_attribute("aria-valuenow", "100")
        assert progress.evaluate("el => el.value") == 100
        assert inbox.received.wait(5) and len(inbox.messages) == 1
        assert inbox.messages[0]["Subject"] == "SMTP test message"

    # Polled at about once a second (not hammering the server).
    polls = status_polls[polls_before:]
    assert all(b - a >= 0.8 for a, b in zip(polls, polls[1:])), polls
    # The diagnostics are there, folded.
    details = page.locator("details#test-details")
    expect(details).not_to_have_attribute("open", "")
    details.locator("summary").click()
    expect(page.locator("#test-detail-list > li").first).to_be_visible()
    expect(page.locator("#test-transcript")).to_contain_text("250")
    expect(test_button).to_be_enabled()


def test_send_test_mail_to_a_closed_port_shows_the_error_and_diagnostics(page: Page, portal: Portal) -> None:
    port = closed_port()
    save_via_api(portal, host="127.0.0.1", port=port, enableSSL=False, enableAuth=False, credentialsUserName="")
    sign_in(page, portal)
    page.get_by_role("button", name="Send test mail").click()
    result = page.locator("#test-result")
    expect(result).to_have_text(re.compile(r"^The test mail could not be sent: \S.+"))
    expect(page.locator("#announcer")).to_have_text(re.compile("^The test mail could not be sent"))  # aria-live
    # The server's sentence, exactly as the API reports it.
    with portal.client(Role.OWNER) as c:
        error = c.get(SETTINGS + "/test/status").json()["response"]["error"]
    assert error
    expect(result).to_contain_text(error)
    expect(page.locator("#test-step")).to_contain_text("Connect to host")
    expect(page.get_by_role("progressbar")).to_have_attribute("aria-valuenow", "40")

    summary = page.get_by_text("Step-by-step diagnostics")
    steps = page.locator("#test-detail-list > li")
    expect(steps.first).to_be_hidden()  # folded until asked for
    summary.focus()
    page.keyboard.press("Enter")  # keyboard-operable
    expect(steps.first).to_be_visible()
    expect(page.locator("#test-detail-list")).to_contain_text(str(port))
    expect(page.locator("#test-transcript")).to_be_visible()


def test_the_last_test_result_is_shown_after_a_reload(page: Page, portal: Portal) -> None:
    """The server keeps the last result readable; the page shows it (and would resume polling a running one)."""
    port = closed_port()
    save_via_api(portal, host="127.0.0.1", port=port, enableSSL=False, enableAuth=False, credentialsUserName="")
    sign_in(page, portal)
    page.get_by_role("button", name="Send test mail").click()
    expect(page.locator("#test-result")).to_be_visible()
    page.reload()
    expect(page.get_by_role("heading", name="Last test mail")).to_be_visible()
    expect(page.locator("#test-result")).to_contain_text("could not be sent")


@pytest.fixture(scope="module")
def slow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server of our own whose SMTP deadlines leave time to watch a test run (the shared one gives up in 2 s)."""
    srv = start_server(
        tmp_path_factory.mktemp("slow") / "data",
        {"SMTPSETTINGS_SMTP_CONNECT_TIMEOUT": "5", "SMTPSETTINGS_SMTP_COMMAND_TIMEOUT": "5", "SMTPSETTINGS_SMTP_JOB_TIMEOUT": "10"},
    )
    yield srv
    srv.stop()


def test_a_slow_test_shows_live_progress_and_is_followed_after_a_reload(page: Page, slow_server: Server) -> None:
    """A server that accepts and never greets: the job sits at "Connect to host" until the command timeout."""
    portal = make_portal(slow_server)
    with tarpit() as port:
        save_via_api(portal, host="127.0.0.1", port=port, enableSSL=False, enableAuth=False, credentialsUserName="")
        sign_in(page, portal)
        started = time.monotonic()
        page.get_by_role("button", name="Send test mail").click()
        progress = page.get_by_role("progressbar")
        expect(progress).to_have_attribute("aria-valuenow", "40")
        expect(page.locator("#test-step")).to_have_text("Connect to host…")
        expect(page.locator("#test-percent")).to_have_text("40%")
        expect(page.get_by_role("button", name="Send test mail")).to_be_disabled()
        expect(page.locator("#test-result")).to_be_hidden()
        page.reload()  # the page picks the running job up again
        expect(page.locator("#test-step")).to_have_text("Connect to host…")
        assert time.monotonic() - started < 5, "the job ended before the page could be seen following it"
        expect(page.get_by_role("heading", name="Test mail", exact=True)).to_be_visible()
        expect(page.get_by_role("button", name="Send test mail")).to_be_disabled()
        expect(page.locator("#test-result")).to_contain_text("No answer from 127.0.0.1 within 5 s", timeout=20_000)
        expect(page.get_by_role("button", name="Send test mail")).to_be_enabled()


def test_the_test_mail_limit_is_explained(page: Page, portal: Portal) -> None:
    """5 tests per 15 minutes per user: the 6th start is refused with 429 and the page says when to retry."""
    save_via_api(portal, host="127.0.0.1", port=closed_port(), enableSSL=False, enableAuth=False, credentialsUserName="")
    with portal.client(Role.OWNER) as c:
        for _ in range(5):
            assert c.get(SETTINGS + "/test").status_code == 200
    sign_in(page, portal)
    page.get_by_role("button", name="Send test mail").click()
    expect(page.get_by_role("alert").filter(has_text="Too many test messages")).to_contain_text(
        re.compile(r"You can send the next one in \d+ (second|minute)s?\.")
    )
    expect(page.get_by_role("button", name="Send test mail")).to_be_enabled()


# ------------------------------------------------------------------------------------------- accessibility


def test_every_input_has_an_accessible_name(page: Page, portal: Portal) -> None:
    page.goto(url_of(portal))
    for label in ("Email", "Password"):
        expect(field(page, label)).to_be_visible()
    sign_in(page, portal)
    for label in SMTP_LABELS:
        expect(field(page, label)).to_have_count(1)
        expect(field(page, label)).to_be_visible()
    expect(page.get_by_role("switch", name="Authentication")).to_be_checked()
    unlabelled = page.evaluate(
        """() => [...document.querySelectorAll('input, button, select, textarea')]
              .filter(el => !(el.labels && el.labels.length) && !el.getAttribute('aria-label') && !el.textContent.trim())
              .map(el => el.outerHTML)"""
    )
    assert unlabelled == []
    # Visible focus: a text field draws a ring, a button reached with Tab an outline.
    field(page, "Host").focus()
    assert field(page, "Host").evaluate("el => getComputedStyle(el).boxShadow") not in ("", "none")
    field(page, "Enable SSL").focus()
    page.keyboard.press("Tab")  # Save and Restore default are disabled (nothing to do): skipped
    expect(page.get_by_role("button", name="Send test mail")).to_be_focused()
    assert page.evaluate("getComputedStyle(document.activeElement).outlineStyle") == "solid"


def test_keyboard_only_sign_in_and_save(page: Page, portal: Portal) -> None:
    page.goto(url_of(portal))
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    for _ in range(5):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.id") == "signin-email":
            break
    expect(field(page, "Email")).to_be_focused()
    page.keyboard.type(portal.emails[Role.OWNER])
    page.keyboard.press("Tab")
    expect(field(page, "Password")).to_be_focused()
    page.keyboard.type(PASSWORD)
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="SMTP settings")).to_be_focused()

    page.keyboard.press("Tab")
    expect(field(page, "Host")).to_be_focused()
    page.keyboard.press("Control+a")
    page.keyboard.type("smtp.keyboard.test")
    page.keyboard.press("Tab")
    expect(field(page, "Port")).to_be_focused()
    page.keyboard.press("Control+a")
    page.keyboard.type("587")
    for _ in range(3):
        page.keyboard.press("Tab")
    expect(field(page, "Authentication")).to_be_focused()
    page.keyboard.press("Space")  # the switch: authentication off
    expect(field(page, "Authentication")).not_to_be_checked()
    page.keyboard.press("Tab")  # login, password and NTLM are disabled: skipped
    expect(field(page, "Enable SSL")).to_be_focused()
    page.keyboard.press("Space")
    expect(field(page, "Enable SSL")).to_be_checked()
    page.keyboard.press("Tab")
    expect(page.get_by_role("button", name="Save")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.get_by_role("status").filter(has_text="Settings saved.")).to_be_visible()
    stored = get_via_api(portal)
    assert (stored["host"], stored["port"], stored["enableAuth"], stored["enableSSL"]) == ("smtp.keyboard.test", 587, False, True)

    # Space on a focused button works too (Restore default → dialog → Escape).
    page.get_by_role("button", name="Restore default").focus()
    page.keyboard.press("Space")
    expect(page.get_by_role("dialog")).to_be_visible()
    page.keyboard.press("Escape")
    expect(page.get_by_role("dialog")).to_be_hidden()


# ------------------------------------------------------------------------------------------- layout and origin


@pytest.mark.parametrize("viewport", [{"width": 360, "height": 740}, {"width": 1280, "height": 900}], ids=["phone", "desktop"])
def test_no_horizontal_scroll(page: Page, portal: Portal, viewport: dict[str, int]) -> None:
    page.set_viewport_size(viewport)
    page.goto(url_of(portal))
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    assert no_horizontal_scroll(page)
    save_via_api(portal, host="127.0.0.1", port=closed_port(), enableSSL=False, enableAuth=False, credentialsUserName="")
    sign_in(page, portal)
    assert no_horizontal_scroll(page)
    # The widest states: errors shown, the test diagnostics opened, a long value.
    page.get_by_role("button", name="Send test mail").click()
    expect(page.locator("#test-result")).to_be_visible()
    page.get_by_text("Step-by-step diagnostics").click()
    field(page, "Host").fill("a-very-long-host-name-without-any-break." * 6)
    field(page, "Port").fill("70000")
    field(page, "Sender email address").fill("x")
    assert no_horizontal_scroll(page)
    page.get_by_role("button", name="Restore default").click()
    expect(page.get_by_role("dialog")).to_be_visible()
    assert no_horizontal_scroll(page)
    box = page.get_by_role("dialog").bounding_box()
    assert box and box["x"] >= 0 and box["x"] + box["width"] <= viewport["width"]


def test_no_request_leaves_the_origin(page: Page, portal: Portal) -> None:
    urls: list[str] = []
    page.on("request", lambda r: urls.append(r.url))
    with smtp_peer() as (port, _inbox):
        sign_in(page, portal)
        field(page, "Host").fill("127.0.0.1")
        field(page, "Port").fill(str(port))
        field(page, "Authentication").uncheck()
        page.get_by_role("button", name="Save").click()
        expect(page.get_by_role("status").filter(has_text="Settings saved.")).to_be_visible()
        page.get_by_role("button", name="Send test mail").click()
        expect(page.locator("#test-result")).to_contain_text("was sent")
    page.reload()
    expect(page.locator("#source-badge")).to_have_text("Portal's own settings")
    origin = urlsplit(url_of(portal)).netloc
    assert urls and {urlsplit(u).netloc for u in urls if not u.startswith("data:")} == {origin}, sorted(set(urls))
    assert all(u.startswith(f"http://{origin}/") for u in urls if not u.startswith("data:"))
    paths = {urlsplit(u).path for u in urls}
    assert {"/", *SCRIPTS, "/static/app.css", SETTINGS, SETTINGS + "/test", SETTINGS + "/test/status", SETTINGS + "/audit"} <= paths


def test_the_page_is_served_with_a_strict_csp_and_no_inline_code(portal: Portal) -> None:
    """The page obeys the CSP it is served with: no inline script or style attribute, assets from /static."""
    with httpx.Client(base_url=portal.server.base_url, headers={"Host": portal.hostname}) as c:
        r = c.get("/")
        assert "script-src 'self'" in r.headers["content-security-policy"]
        html = r.text
        for asset in (*SCRIPTS, "/static/app.css", "/static/favicon.svg"):
            assert c.get(asset).status_code == 200, asset
        # A module script is run only when served as JavaScript.
        for script in SCRIPTS:
            assert c.get(script).headers["content-type"].split(";")[0] in ("text/javascript", "application/javascript")
    assert "style=" not in html and "onclick" not in html.lower()
    assert len(SCRIPTS) > 5  # the page's parts, each a module of its own
    assert re.findall(r"<script[^>]*>", html) == ['<script type="module" src="/static/main.js">']
    assert "<style" not in html and "http://" not in html and "https://" not in html


# ------------------------------------------------------------------------------------------- test mail details


@pytest.fixture(scope="module")
def bare_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server without default SMTP settings: a portal that saved none can send no mail at all."""
    srv = start_server(tmp_path_factory.mktemp("bare") / "data")
    yield srv
    srv.stop()


def test_without_a_server_default_the_page_says_no_mail_can_be_sent_and_the_test_error_clears_on_edit(
    page: Page, bare_server: Server
) -> None:
    portal = make_portal(bare_server)
    sign_in(page, portal)
    expect(page.locator("#source-badge")).to_have_text("Not set up")
    expect(page.locator("#source-text")).to_contain_text("No mail can be sent")
    expect(page.locator("#source-text")).to_contain_text("the server has no default")
    expect(page.locator("#source-text")).not_to_contain_text("uses the server's default")
    page.get_by_role("button", name="Send test mail").click()
    alert = page.locator("#form-alert")
    expect(alert).to_contain_text("There are no SMTP settings to test")
    field(page, "Host").fill("smtp.example.com")
    expect(alert).to_have_text("")


def test_the_test_mail_goes_to_the_address_typed_in_send_test_mail_to(page: Page, portal: Portal) -> None:
    with smtp_peer() as (port, inbox):
        save_via_api(portal, host="127.0.0.1", port=port, enableSSL=False, enableAuth=False, credentialsUserName="")
        sign_in(page, portal)
        recipient = field(page, "Send test mail to")
        expect(recipient).to_have_attribute("placeholder", portal.emails[Role.OWNER])
        recipient.fill("not an address")
        page.get_by_role("button", name="Send test mail").click()
        expect(page.locator("#test-to-error")).to_contain_text("valid email address")
        expect(recipient).to_have_attribute("aria-invalid", "true")
        recipient.fill("ops@example.org")
        expect(page.locator("#test-to-error")).to_have_text("")
        recipient.press("Enter")  # sends the test, does not save the form
        expect(page.locator("#test-result")).to_have_text("The test mail was sent to ops@example.org. Check the inbox.")
        assert inbox.received.wait(5)
    assert inbox.envelopes[0].rcpt_tos == ["ops@example.org"]
    # When it was sent: date and time, and how long ago.
    when = page.locator("#test-when")
    expect(when).to_be_visible()
    expect(when).to_have_attribute("datetime", re.compile(r"^\d{4}-\d\d-\d\dT"))
    expect(when).to_contain_text(re.compile(r"\d{1,2}:\d\d (AM|PM) \((just now|1 minute ago)\)"))
    page.reload()
    expect(page.get_by_role("heading", name="Last test mail")).to_be_visible()
    expect(page.locator("#test-when")).to_contain_text(re.compile(r"\d{4}, \d{1,2}:\d\d"))
    # After a reload the page still names the typed address, as the server's status does, not the user's own.
    expect(page.locator("#test-result")).to_have_text("The test mail was sent to ops@example.org. Check the inbox.")


def test_a_recipient_the_server_refuses_is_shown_at_the_field(page: Page, portal: Portal) -> None:
    save_via_api(portal, host="127.0.0.1", port=closed_port(), enableSSL=False, enableAuth=False, credentialsUserName="")
    sign_in(page, portal)
    field(page, "Send test mail to").fill("ann@[127.0.0.1]")  # the page's shape check lets it by
    page.get_by_role("button", name="Send test mail").click()
    expect(page.locator("#test-to-error")).to_contain_text("address literals are not accepted")
    expect(page.locator("#test-panel")).to_be_hidden()


def test_the_history_names_fields_as_the_form_does(page: Page, portal: Portal) -> None:
    save_via_api(portal, host="smtp.history.test")
    with portal.client(Role.ADMIN) as c:
        assert c.delete(SETTINGS).status_code == 200
        audit = c.get(SETTINGS + "/audit").json()["response"]
    raw = {name for row in audit for name in row["changedFields"]}
    assert "isDefaultSettings" in raw, raw  # the field this test is about is in the log
    sign_in(page, portal)
    history = page.locator("#history-list")
    expect(history).to_contain_text("Use server default")
    expect(history).not_to_contain_text("isDefaultSettings")
    named = page.locator(".history__fields").all_text_contents()
    assert named and not any(re.search(r"\b[a-z]+[A-Z]\w*", text) for text in named), named  # no raw camelCase name
