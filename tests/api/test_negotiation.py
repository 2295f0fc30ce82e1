"""Content negotiation over HTTP: JSON under the type asked for, 406 when nothing fits."""

from __future__ import annotations

import json

import pytest
from serverkit import VALID_SETTINGS, Portal

from smtpsettings.domain.accounts import Role

PATH = "/api/2.0/smtpsettings/smtp"
AUTH = "/api/2.0/authentication"


@pytest.mark.parametrize(
    ("accept", "content_type"),
    [
        (None, "application/json"),
        ("application/json", "application/json"),
        ("text/json", "text/json"),
        ("text/plain", "text/plain"),
        ("*/*", "application/json"),
        ("text/html, text/plain;q=0.9", "text/plain"),
    ],
)
def test_the_answer_is_json_under_the_asked_type(portal: Portal, accept: str | None, content_type: str) -> None:
    with portal.client(Role.ADMIN, headers={"Accept": accept} if accept else {}) as c:
        r = c.get(PATH)
    assert r.status_code == 200
    assert r.headers["content-type"].split(";")[0] == content_type
    assert r.json()["response"]["isDefaultSettings"] is True


@pytest.mark.parametrize("accept", ["application/xml", "text/html", "image/png, text/csv", "application/json;q=0"])
def test_an_accept_that_admits_no_json_type_is_406(portal: Portal, accept: str) -> None:
    with portal.client(Role.ADMIN, headers={"Accept": accept}) as c:
        r = c.get(PATH)
    assert r.status_code == 406
    assert r.json()["statusCode"] == 406


def test_unknown_routes_and_methods_answer_with_envelopes(portal: Portal) -> None:
    with portal.client(Role.ADMIN) as c:
        missing = c.get("/api/2.0/nothing-here")
        wrong_method = c.put(PATH, json={})
    assert missing.status_code == 404 and missing.json()["status"] == 1
    assert wrong_method.status_code == 405 and wrong_method.json()["statusCode"] == 405


@pytest.mark.parametrize("path", [AUTH, PATH, PATH + "/test"])
def test_a_body_in_another_charset_than_utf8_is_415_naming_it(portal: Portal, path: str) -> None:
    # In Latin-1 "é" is the single byte 0xE9, which a UTF-8 reading would misread or refuse.
    if path == AUTH:
        body = {"userName": portal.emails[Role.ADMIN], "password": "caf\u00e9"}
    else:
        body = {**VALID_SETTINGS, "senderDisplayName": "Caf\u00e9 Portal"}
    with portal.client(Role.ADMIN if path != AUTH else None) as c:
        r = c.post(
            path,
            content=json.dumps(body, ensure_ascii=False).encode("latin-1"),
            headers={"Content-Type": "application/json; charset=latin1"},
        )
    assert r.status_code == 415, r.text
    error = r.json()["error"]
    assert r.json()["statusCode"] == 415 and error["type"] == "UnsupportedMediaTypeException"
    assert error["message"] == "Unsupported charset 'latin1': send the body as UTF-8 (application/json; charset=utf-8)."
