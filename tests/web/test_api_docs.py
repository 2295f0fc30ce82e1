"""The interactive API page (``/api/2.0/docs``) in a real browser against the real server process.

Swagger UI 4 could not read our OpenAPI 3.1 document and showed "Unable to render this definition"; these
tests check that the page lists every operation of the document and that a call made from the page with a
token works, under the page's strict Content-Security-Policy (a violation is a console error, which the
``page`` fixture turns into a failure).
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.sync_api import Locator, Page, Request, expect
from serverkit import Portal

from smtpsettings.domain.accounts import Role

SETTINGS = "/api/2.0/smtpsettings/smtp"


def docs_url(portal: Portal) -> str:
    """The page on the portal's own hostname (Chromium maps ``*.test`` to 127.0.0.1), so calls carry its Host."""
    return f"http://{portal.hostname}:{urlsplit(portal.server.base_url).port}/api/2.0/docs"


@pytest.fixture
def document(portal: Portal) -> dict[str, Any]:
    with portal.client() as c:
        return c.get("/api/2.0/openapi.json").json()  # type: ignore[no-any-return]


def operation(page: Page, method: str, path: str) -> Locator:
    """One operation's block on the page, by its method and exact path."""
    return page.locator(f".opblock.opblock-{method}").filter(
        has=page.locator(".opblock-summary-path", has_text=re.compile(f"^{re.escape(path)}$"))
    )


def authorize(page: Page, token: str) -> None:
    """Type a sign-in token into the page's "Authorize" dialog, as the Bearer credentials of every call."""
    page.locator(".auth-wrapper").get_by_role("button", name="Authorize").click()
    bearer = page.locator(".auth-container").filter(has_text="(http, Bearer)")
    bearer.locator("#auth-bearer-value").fill(token)
    bearer.get_by_role("button", name="Apply credentials").click()
    expect(bearer.get_by_role("heading", name="Authorized")).to_be_visible()
    bearer.get_by_role("button", name="Close").click()


def execute(block: Locator) -> Locator:
    """Expand an operation, press "Try it out" and "Execute"; the live response row it shows."""
    block.locator(".opblock-summary").click()
    block.get_by_role("button", name="Try it out").click()
    block.get_by_role("button", name="Execute").click()
    return block.locator(".live-responses-table .response")


def test_docs_page_lists_every_operation_of_the_document(page: Page, portal: Portal, document: dict[str, Any]) -> None:
    page.goto(docs_url(portal))
    expected = [(method, path) for path, item in document["paths"].items() for method in item]
    expect(page.locator(".opblock")).to_have_count(len(expected))
    for method, path in expected:
        block = operation(page, method, path)
        expect(block).to_have_count(1)
        expect(block.locator(".opblock-summary-description")).to_have_text(document["paths"][path][method]["summary"])
    expect(page.get_by_text("Unable to render this definition")).to_have_count(0)


def test_a_call_from_the_docs_page_with_a_token_gets_the_settings(page: Page, portal: Portal) -> None:
    token = portal.sign_in(Role.ADMIN)
    sent: list[Request] = []
    page.on("request", lambda r: sent.append(r) if urlsplit(r.url).path == SETTINGS else None)
    page.goto(docs_url(portal))
    authorize(page, token)

    response = execute(operation(page, "get", SETTINGS))
    expect(response.locator(".response-col_status")).to_have_text("200")
    body = response.locator(".response-col_description pre").first
    expect(body).to_contain_text('"isDefaultSettings": true')
    expect(body).to_contain_text('"statusCode": 200')
    # The call went to the portal the page was opened on, with the token typed into the page.
    assert [urlsplit(r.url).hostname for r in sent] == [portal.hostname]
    assert sent[0].headers["authorization"] == f"Bearer {token}"


def test_a_call_from_the_docs_page_without_a_token_is_refused(page: Page, portal: Portal) -> None:
    page.goto(docs_url(portal))
    response = execute(operation(page, "get", SETTINGS))
    expect(response.locator(".response-col_status")).to_have_text("401")


def test_docs_page_loads_everything_from_its_own_origin(page: Page, portal: Portal) -> None:
    origins: set[str] = set()
    page.on("request", lambda r: origins.add(urlsplit(r.url).netloc))
    page.goto(docs_url(portal))
    expect(page.locator(".opblock").first).to_be_visible()
    page.wait_for_load_state("networkidle")
    assert origins == {urlsplit(docs_url(portal)).netloc}


def test_docs_page_has_the_admin_pages_strict_content_security_policy(portal: Portal) -> None:
    with httpx.Client(base_url=portal.server.base_url, headers={"Host": portal.hostname}, timeout=30) as c:
        r = c.get("/api/2.0/docs")
    csp = r.headers["content-security-policy"]
    assert "script-src 'self';" in csp and "default-src 'self';" in csp and "style-src 'self';" in csp
    assert "unsafe" not in csp
    assert r.headers["x-frame-options"] == "DENY"


def test_try_it_out_on_the_save_offers_the_documented_examples_and_the_server_takes_them(
    page: Page, portal: Portal, document: dict[str, Any]
) -> None:
    examples = document["paths"][SETTINGS]["post"]["requestBody"]["content"]["application/json"]["examples"]
    page.goto(docs_url(portal))
    authorize(page, portal.sign_in(Role.ADMIN))
    block = operation(page, "post", SETTINGS)
    block.locator(".opblock-summary").click()
    # The answer's example is realistic too, composed from the settings' own example.
    expect(block.locator(".responses-wrapper")).to_contain_text('"host": "smtp.example.com"')
    block.get_by_role("button", name="Try it out").click()
    body = block.locator("textarea.body-param__text")
    # The first example, not values made up from the schema's patterns.
    expect(body).to_have_value(re.compile(r'"host": "smtp\.example\.com"'))
    assert json.loads(body.input_value()) == examples["password"]["value"]

    chooser = block.locator(".examples-select select").first
    chooser.select_option(label=examples["oauth2"]["summary"])
    expect(body).to_have_value(re.compile(r'"authMethod": "oauth2"'))
    assert json.loads(body.input_value()) == examples["oauth2"]["value"]
    block.get_by_role("button", name="Execute").click()
    response = block.locator(".live-responses-table .response")
    expect(response.locator(".response-col_status")).to_have_text("200")
    expect(response.locator(".response-col_description pre").first).to_contain_text('"clientSecretStored": true')
