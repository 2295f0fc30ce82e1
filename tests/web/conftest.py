"""Fixtures for the admin page tests: Debian's Chromium driven by Playwright, one browser per session.

Each portal is its own hostname (``p….test``); Chromium resolves every ``*.test`` name to 127.0.0.1, so
the page is opened at ``http://{portal.hostname}:{port}/`` with the right Host header and cookies scoped to
that portal, just as a real deployment behind DNS would see it. Playwright's own browser downloads are never
used: the browser is the system's Chromium (``apt-get install chromium``).
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# tests/e2e/smtp_peers.py: real aiosmtpd servers in threads, shared with the end-to-end tests.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))

playwright_sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (no browser download needed)")

CHROMIUM = os.environ.get("SMTPSETTINGS_TEST_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    "--disable-features=HttpsUpgrades,HttpsFirstBalancedModeAutoEnable,MediaRouter,OptimizationHints",
    "--host-resolver-rules=MAP *.test 127.0.0.1",
]
DESKTOP = {"width": 1280, "height": 900}


# Module scope, not session: while Playwright's sync API is open it holds a running event loop in the main
# thread, which would break the asyncio tests of other modules run after these ones.
@pytest.fixture(scope="module")
def browser() -> Iterator[playwright_sync_api.Browser]:
    if not Path(CHROMIUM).is_file():
        reason = f"no Chromium at {CHROMIUM} (apt-get install chromium, or set SMTPSETTINGS_TEST_CHROMIUM)"
        if os.environ.get("SMTPSETTINGS_REQUIRE_CHROMIUM") == "1":  # CI installs it: there, absence is a failure
            pytest.fail(reason)
        pytest.skip(reason)
    with playwright_sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture
def context(browser: playwright_sync_api.Browser) -> Iterator[playwright_sync_api.BrowserContext]:
    context = browser.new_context(viewport=DESKTOP, locale="en-US", timezone_id="UTC")
    context.set_default_timeout(15_000)
    yield context
    context.close()


@pytest.fixture
def page(context: playwright_sync_api.BrowserContext) -> Iterator[playwright_sync_api.Page]:
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" and not _http_status_log(msg.text) else None)
    yield page
    # An uncaught exception or a CSP violation in the page is a bug even when the test passed.
    assert not errors, f"errors in the page: {errors}"


def _http_status_log(text: str) -> bool:
    """Chromium logs every 4xx answer to fetch() ("Failed to load resource: … status of 401"): expected here."""
    return text.startswith("Failed to load resource: the server responded with a status of 4")
