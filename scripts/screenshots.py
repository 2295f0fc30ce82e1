"""Screenshots of the admin page's main states for docs/images/, taken from a real server in Chromium.

    python scripts/screenshots.py               # into docs/images/
    python scripts/screenshots.py --out DIR     # elsewhere (a test runs it so, to keep it working)

Needs Chromium (/usr/bin/chromium, or --chromium PATH) and the test extras (playwright, aiosmtpd). It starts
a throwaway server and SMTP peers on loopback, drives the page as an admin would, and writes the PNGs named
in ``SHOTS`` (the README shows them). They are taken into a scratch directory and moved into place only
once every one of them succeeded: a failure leaves the previous set whole. Nothing is left running.

The page is found by what a user sees, which survives changes to its markup: headings ("Sign in", "SMTP
settings", "Access denied"), field labels ("Email", "Password", "Port", "Sender display name"), button
names ("Sign in", "Send test mail"), the "Outgoing mail" region and its table cells, the "Step-by-step
diagnostics" summary; and two ids, ``#test-result`` (the test mail's outcome) and ``#view-settings``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "e2e")]

import httpx  # noqa: E402
from playwright.sync_api import Browser, Page, sync_playwright  # noqa: E402
from serverkit import PASSWORD, Portal, Server, make_portal, start_server  # noqa: E402
from smtp_peers import smtp_peer  # noqa: E402

from smtpsettings.domain.accounts import Role  # noqa: E402

SHOTS = (
    "sign-in.png",
    "server-default.png",
    "test-mail-sent.png",
    "test-mail-failed.png",
    "field-error.png",
    "phone.png",
    "access-denied.png",
    "outgoing-mail.png",
    "oauth2-microsoft.png",
)
ARGS = ["--no-sandbox", "--disable-gpu", "--host-resolver-rules=MAP *.test 127.0.0.1", "--disable-features=HttpsUpgrades"]
DESKTOP = {"width": 1280, "height": 900}
SETTINGS = "/api/2.0/smtpsettings/smtp"
MESSAGES = "/api/2.0/smtpsettings/messages"


def page_url(portal: Portal) -> str:
    """The admin page on the portal's own host name (Chromium maps ``*.test`` to 127.0.0.1): each portal's
    accounts sign in only on its own Host."""
    return f"http://{portal.hostname}:{urlsplit(portal.server.base_url).port}/"


def open_page(browser: Browser, portal: Portal, role: Role, viewport: dict[str, int] = DESKTOP) -> Page:
    """A new tab on the portal's page, signed in as ``role``."""
    page = browser.new_page(viewport=viewport)
    page.goto(page_url(portal))
    sign_in(page, portal.emails[role])
    return page


def sign_in(page: Page, email: str) -> None:
    page.get_by_role("heading", name="Sign in").wait_for()
    page.get_by_label("Email", exact=True).fill(email)
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_role("button", name="Sign in", exact=True).click()


def settings_shown(page: Page) -> None:
    page.get_by_role("heading", name="SMTP settings", exact=True).wait_for()


def run_test_mail(page: Page) -> None:
    """Press "Send test mail", wait for the outcome and open the diagnostics."""
    page.reload()
    settings_shown(page)
    page.get_by_role("button", name="Send test mail", exact=True).click()
    page.locator("#test-result").wait_for()
    page.get_by_text("Step-by-step diagnostics").click()


def test_mail_shots(browser: Browser, portal: Portal, out: Path) -> None:
    """Sign-in, the server default, a test mail sent and failed, a field error, the phone and access denied."""
    page = browser.new_page(viewport=DESKTOP)
    page.goto(page_url(portal))
    page.get_by_role("heading", name="Sign in").wait_for()
    page.screenshot(path=str(out / "sign-in.png"))
    sign_in(page, portal.emails[Role.OWNER])
    settings_shown(page)
    page.screenshot(path=str(out / "server-default.png"), full_page=True)

    with smtp_peer(auth=("mailer", "right-password")) as (port, _), portal.client(Role.ADMIN) as api:
        settings = {
            "host": "127.0.0.1",
            "port": port,
            "senderAddress": "noreply@example.com",
            "senderDisplayName": "Example Portal",
            "enableAuth": True,
            "authMethod": "password",
            "credentialsUserName": "mailer",
            "credentialsUserPassword": "right-password",
            "enableSSL": False,
        }
        api.post(SETTINGS, json=settings).raise_for_status()
        run_test_mail(page)
        page.screenshot(path=str(out / "test-mail-sent.png"), full_page=True)

        api.post(SETTINGS, json={**settings, "credentialsUserPassword": "wrong-password"}).raise_for_status()
        run_test_mail(page)
        page.screenshot(path=str(out / "test-mail-failed.png"), full_page=True)

    page.reload()  # a form without the test's outcome below it
    settings_shown(page)
    page.get_by_label("Port", exact=True).fill("70000")
    page.get_by_label("Sender display name", exact=True).click()
    page.screenshot(path=str(out / "field-error.png"))
    page.close()

    phone = open_page(browser, portal, Role.ADMIN, {"width": 360, "height": 740})
    settings_shown(phone)
    phone.screenshot(path=str(out / "phone.png"), full_page=True)
    phone.close()

    denied = open_page(browser, portal, Role.USER, {"width": 1280, "height": 600})
    denied.get_by_role("heading", name="Access denied").wait_for()
    denied.screenshot(path=str(out / "access-denied.png"))
    denied.close()


# Each message's recipients and what the mail server answers their RCPT: sent, delivered in part, deferred
# (tried again at the first retry, 30 s later by default: after the picture), failed. Listed newest first.
_OUTBOX = (
    ("Your weekly digest", ["ann@example.com"]),
    ("Invitation to the room “Budget 2027”", ["bob@example.com", "former.colleague@example.com"]),
    ("Password reset", ["carol@greylisting.example"]),
    ("Room shared with you", ["no.such.user@example.com"]),
    ("Welcome to DocSpace", ["dave@example.com", "erin@example.com"]),
)
_REPLIES = {
    "former.colleague@example.com": ["550 5.1.1 User unknown"],
    "carol@greylisting.example": ["451 4.7.1 Greylisted, try again later"] * 10,
    "no.such.user@example.com": ["550 5.1.1 User unknown"],
}


def outbox_shot(browser: Browser, portal: Portal, out: Path) -> None:
    """The "Outgoing mail" card with messages sent, sent in part, deferred with the reason, and failed."""
    with smtp_peer(rcpt_replies=_REPLIES) as (port, _), portal.client(Role.ADMIN) as api:
        settings = {
            "host": "127.0.0.1",
            "port": port,
            "senderAddress": "noreply@example.com",
            "senderDisplayName": "Example Portal",
            "enableAuth": False,
            "enableSSL": False,
        }
        api.post(SETTINGS, json=settings).raise_for_status()
        ids = []
        for subject, to in reversed(_OUTBOX):
            sent = api.post(MESSAGES, json={"to": to, "subject": subject, "text": "Hello from the portal."})
            sent.raise_for_status()
            ids.append(sent.json()["response"]["id"])
        for message_id in ids:
            tried(api, message_id)
    page = open_page(browser, portal, Role.OWNER)
    card = page.get_by_role("region", name="Outgoing mail")
    for subject, _ in _OUTBOX:
        card.get_by_role("cell", name=subject, exact=True).wait_for()
    card.screenshot(path=str(out / "outgoing-mail.png"))
    page.close()


def tried(api: httpx.Client, message_id: str, timeout: float = 20) -> None:
    """Wait until the message has been tried: no longer queued or being sent."""
    deadline = time.monotonic() + timeout
    while api.get(f"{MESSAGES}/{message_id}").json()["response"]["status"] in {"queued", "sending"}:
        if time.monotonic() > deadline:
            raise RuntimeError(f"message {message_id} was not tried within {timeout} s")
        time.sleep(0.1)


def oauth2_shot(browser: Browser, portal: Portal, out: Path) -> None:
    """Microsoft 365 over OAuth 2.0 as saved, its client secret stored (and shown only as such)."""
    with portal.client(Role.ADMIN) as api:
        settings: dict[str, Any] = {
            "host": "smtp.office365.com",
            "port": 587,
            "senderAddress": "noreply@contoso.com",
            "senderDisplayName": "Contoso DocSpace",
            "enableAuth": True,
            "credentialsUserName": "noreply@contoso.com",
            "enableSSL": True,
            "authMethod": "oauth2",
            "oauth2": {
                "provider": "microsoft",
                "tenantId": "contoso.onmicrosoft.com",
                "clientId": "6731de76-14a6-49ae-97bc-6eba6914391e",
                "clientSecret": "screenshot-secret",
            },
        }
        api.post(SETTINGS, json=settings).raise_for_status()
    page = open_page(browser, portal, Role.OWNER)
    settings_shown(page)
    page.locator("#view-settings .card").first.screenshot(path=str(out / "oauth2-microsoft.png"))
    page.close()


@contextmanager
def throwaway_server(scratch: Path) -> Iterator[Server]:
    server = start_server(
        scratch / "data",
        {
            "SMTPSETTINGS_DEFAULT_SMTP_HOST": "mail.example.com",
            "SMTPSETTINGS_DEFAULT_SMTP_PORT": "587",
            "SMTPSETTINGS_DEFAULT_SMTP_SENDER_ADDRESS": "docspace@example.com",
            "SMTPSETTINGS_DEFAULT_SMTP_SENDER_DISPLAY_NAME": "DocSpace",
            "SMTPSETTINGS_SMTP_CONNECT_TIMEOUT": "2",
        },
    )
    try:
        yield server
    finally:
        server.stop()


def take(out: Path, chromium: str) -> None:
    """Take every shot into a scratch directory, then move them into ``out`` together."""
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="screenshots-") as scratch_dir:
        scratch = Path(scratch_dir)
        shots = scratch / "shots"
        shots.mkdir()
        with throwaway_server(scratch) as server, sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium, args=ARGS)
            try:
                # One portal each: the shots do not depend on what the others saved or sent.
                test_mail_shots(browser, make_portal(server, hostname="acme.test"), shots)
                outbox_shot(browser, make_portal(server, hostname="globex.test"), shots)
                oauth2_shot(browser, make_portal(server, hostname="contoso.test"), shots)
            finally:
                browser.close()
        taken = sorted(p.name for p in shots.iterdir())
        if taken != sorted(SHOTS):
            raise RuntimeError(f"took {taken}, expected {sorted(SHOTS)}")
        for name in SHOTS:
            shutil.move(shots / name, out / name)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images", help="where the PNGs go (docs/images)")
    parser.add_argument(
        "--chromium",
        default=os.environ.get("SMTPSETTINGS_TEST_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium",
        help="the Chromium executable",
    )
    args = parser.parse_args(argv)
    take(args.out, args.chromium)


if __name__ == "__main__":
    main()
