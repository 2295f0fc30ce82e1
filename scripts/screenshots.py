"""Screenshots of the admin page's main states for docs/images/, taken from a real server in Chromium.

    python scripts/screenshots.py        # needs /usr/bin/chromium and the test extras (playwright, aiosmtpd)

It starts a throwaway server and SMTP peers on loopback, drives the page like an admin would, and writes
PNGs into docs/images/. Nothing is left running.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "e2e")]

from playwright.sync_api import Browser, Page, sync_playwright  # noqa: E402
from serverkit import PASSWORD, Portal, make_portal, start_server  # noqa: E402
from smtp_peers import smtp_peer  # noqa: E402

from smtpsettings.domain.accounts import Role  # noqa: E402

OUT = ROOT / "docs" / "images"
ARGS = ["--no-sandbox", "--disable-gpu", "--host-resolver-rules=MAP *.test 127.0.0.1", "--disable-features=HttpsUpgrades"]


def sign_in(page: Page, email: str) -> None:
    page.get_by_label("Email", exact=True).fill(email)
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()


def oauth2_settings(browser: Browser, url: str, portal: Portal) -> None:
    """Microsoft 365 over OAuth 2.0 as saved, its client secret stored (and shown only as such)."""
    with portal.client(Role.ADMIN) as api:
        settings = {
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
        api.post("/api/2.0/smtpsettings/smtp", json=settings).raise_for_status()
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(url)
    sign_in(page, portal.emails[Role.OWNER])
    page.get_by_role("heading", name="SMTP settings").wait_for()
    page.locator("#view-settings .card").first.screenshot(path=str(OUT / "oauth2-microsoft.png"))
    page.close()


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp())
    server = start_server(
        tmp / "data",
        {
            "SMTPSETTINGS_DEFAULT_SMTP_HOST": "mail.example.com",
            "SMTPSETTINGS_DEFAULT_SMTP_PORT": "587",
            "SMTPSETTINGS_DEFAULT_SMTP_SENDER_ADDRESS": "docspace@example.com",
            "SMTPSETTINGS_DEFAULT_SMTP_SENDER_DISPLAY_NAME": "DocSpace",
            "SMTPSETTINGS_SMTP_CONNECT_TIMEOUT": "2",
        },
    )
    try:
        portal = make_portal(server)
        url = f"http://{portal.hostname}:{urlsplit(server.base_url).port}/"
        with sync_playwright() as pw, smtp_peer(auth=("mailer", "right-password")) as (port, _):
            browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(url)
            page.get_by_role("heading", name="Sign in").wait_for()
            page.screenshot(path=str(OUT / "sign-in.png"))
            sign_in(page, portal.emails[Role.OWNER])
            page.get_by_role("heading", name="SMTP settings").wait_for()
            page.screenshot(path=str(OUT / "server-default.png"), full_page=True)

            with portal.client(Role.ADMIN) as api:
                settings = {
                    "host": "127.0.0.1",
                    "port": port,
                    "senderAddress": "noreply@example.com",
                    "senderDisplayName": "Example Portal",
                    "enableAuth": True,
                    "credentialsUserName": "mailer",
                    "credentialsUserPassword": "right-password",
                    "enableSSL": False,
                }
                api.post("/api/2.0/smtpsettings/smtp", json=settings)
                page.reload()
                page.get_by_role("button", name="Send test mail").click()
                page.locator("#test-result").wait_for()
                page.get_by_text("Step-by-step diagnostics").click()
                page.screenshot(path=str(OUT / "test-mail-sent.png"), full_page=True)

                api.post("/api/2.0/smtpsettings/smtp", json={**settings, "credentialsUserPassword": "wrong-password"})
                page.reload()
                page.get_by_role("button", name="Send test mail").click()
                page.locator("#test-result").wait_for()
                page.get_by_text("Step-by-step diagnostics").click()
                page.screenshot(path=str(OUT / "test-mail-failed.png"), full_page=True)

            page.get_by_label("Port", exact=True).fill("70000")
            page.get_by_label("Sender display name", exact=True).click()
            page.screenshot(path=str(OUT / "field-error.png"))

            phone = browser.new_page(viewport={"width": 360, "height": 740})
            phone.goto(url)
            sign_in(phone, portal.emails[Role.ADMIN])
            phone.get_by_role("heading", name="SMTP settings").wait_for()
            phone.screenshot(path=str(OUT / "phone.png"), full_page=True)

            denied = browser.new_page(viewport={"width": 1280, "height": 600})
            denied.goto(url)
            sign_in(denied, portal.emails[Role.USER])
            denied.get_by_role("heading", name="Access denied").wait_for()
            denied.screenshot(path=str(OUT / "access-denied.png"))

            oauth2_settings(browser, url, make_portal(server))
            browser.close()
    finally:
        server.stop()


if __name__ == "__main__":
    main()
