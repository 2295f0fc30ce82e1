"""Bad input of every kind gets the right 4xx envelope, and the stored settings stay byte-identical."""

from __future__ import annotations

import pytest
from serverkit import VALID_SETTINGS, Portal

from smtpsettings.domain.accounts import Role

PATH = "/api/2.0/smtpsettings/smtp"
JSON = {"Content-Type": "application/json"}


def _settings_row(portal: Portal) -> bytes:
    """The portal's stored settings row, as bytes, so that 'unchanged' means unchanged to the byte."""
    rows = portal.server.query(
        "SELECT s.* FROM smtp_settings s JOIN portals p ON p.id = s.portal_id WHERE p.hostname = :host", host=portal.hostname
    )
    return repr(rows).encode()


def _audit_count(portal: Portal) -> int:
    rows = portal.server.query(
        "SELECT count(*) FROM audit_log a JOIN portals p ON p.id = a.portal_id WHERE p.hostname = :host", host=portal.hostname
    )
    return int(rows[0][0])  # type: ignore[call-overload]


def _long(n: int) -> str:
    return "a" * n


CASES: list[tuple[str, bytes, dict[str, str], int, str | None]] = [
    # (case, raw body, extra headers, status, PascalCase key expected in response.errors or None)
    ("malformed JSON", b'{"host": "smtp.example.com",', JSON, 400, None),
    ("not an object", b'["smtp.example.com"]', JSON, 400, None),
    ("empty body", b"", JSON, 400, None),
    ("JSON null body", b"null", JSON, 400, None),
    ("non-UTF-8 bytes", b'{"host": "smtp\xff\xfe.example.com", "senderAddress": "a@example.com"}', JSON, 400, None),
    ("host wrong type", b'{"host": 12, "senderAddress": "a@example.com"}', JSON, 400, "Host"),
    ("host null", b'{"host": null, "senderAddress": "a@example.com"}', JSON, 400, None),
    ("port as string", b'{"host": "h.example.com", "port": "25", "senderAddress": "a@example.com"}', JSON, 400, "Port"),
    ("port as float", b'{"host": "h.example.com", "port": 25.5, "senderAddress": "a@example.com"}', JSON, 400, "Port"),
    ("port 0", b'{"host": "h.example.com", "port": 0, "senderAddress": "a@example.com"}', JSON, 400, "Port"),
    ("port 65536", b'{"host": "h.example.com", "port": 65536, "senderAddress": "a@example.com"}', JSON, 400, "Port"),
    ("port huge", b'{"host": "h.example.com", "port": 99999999999999999999999, "senderAddress": "a@example.com"}', JSON, 400, "Port"),
    ("enableSSL as string", b'{"host": "h.example.com", "senderAddress": "a@example.com", "enableSSL": "yes"}', JSON, 400, "EnableSSL"),
    ("enableAuth null", b'{"host": "h.example.com", "senderAddress": "a@example.com", "enableAuth": null}', JSON, 400, "EnableAuth"),
    ("host 256 chars", ('{"host": "%s", "senderAddress": "a@example.com"}' % _long(256)).encode(), JSON, 400, "Host"),
    ("display name 10k chars", ('{"host": "h.example.com", "senderAddress": "a@example.com", "senderDisplayName": "%s"}' % _long(10_000)).encode(), JSON, 400, "SenderDisplayName"),
    ("sender not an address", b'{"host": "h.example.com", "senderAddress": "not an address"}', JSON, 400, "SenderAddress"),
    ("header injection in display name", b'{"host": "h.example.com", "senderAddress": "a@example.com", "senderDisplayName": "x\\r\\nBcc: victim@example.net"}', JSON, 400, "SenderDisplayName"),
    ("NUL in host", b'{"host": "h.example.com\\u0000", "senderAddress": "a@example.com"}', JSON, 400, "Host"),
    ("missing sender", b'{"host": "h.example.com"}', JSON, 400, None),
    ("missing everything", b"{}", JSON, 400, None),
    ("unknown field", b'{"host": "h.example.com", "senderAddress": "a@example.com", "enableSsl": true}', JSON, 400, "EnableSsl"),
    ("form content type", b"host=h.example.com", {"Content-Type": "application/x-www-form-urlencoded"}, 415, None),
    ("text/plain content type", b'{"host": "h.example.com", "senderAddress": "a@example.com"}', {"Content-Type": "text/plain"}, 415, None),
    ("no content type", b'{"host": "h.example.com", "senderAddress": "a@example.com"}', {}, 415, None),
    ("oversized body", b'{"host": "h.example.com", "senderAddress": "a@example.com", "senderDisplayName": "' + b"x" * 70_000 + b'"}', JSON, 413, None),
    ("unacceptable Accept", b'{"host": "h.example.com", "senderAddress": "a@example.com"}', {**JSON, "Accept": "application/xml"}, 406, None),
]


@pytest.fixture
def saved_portal(portal: Portal) -> Portal:
    with portal.client(Role.ADMIN) as c:
        assert c.post(PATH, json=VALID_SETTINGS).status_code == 200
    return portal


@pytest.mark.parametrize(("case", "body", "headers", "status", "error_key"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_refused_and_nothing_changes(
    saved_portal: Portal, case: str, body: bytes, headers: dict[str, str], status: int, error_key: str | None
) -> None:
    before = _settings_row(saved_portal)
    audit_before = _audit_count(saved_portal)
    with saved_portal.client(Role.ADMIN) as c:
        # httpx would add a JSON content type for json=; send raw bytes with exactly these headers.
        r = c.post(PATH, content=body, headers=headers)
        after = c.get(PATH).json()["response"]
    assert r.status_code == status, r.text
    envelope = r.json()
    assert envelope["status"] == 1 and envelope["statusCode"] == status
    assert envelope["error"]["stack"] is None and envelope["error"]["message"]
    assert "Traceback" not in r.text
    if error_key:
        assert envelope["response"]["title"] == "One or more validation errors occurred."
        assert error_key in envelope["response"]["errors"], envelope
    assert _settings_row(saved_portal) == before
    assert after["host"] == VALID_SETTINGS["host"]
    assert _audit_count(saved_portal) == audit_before


def test_validation_message_for_length_matches_docspace(portal: Portal) -> None:
    with portal.client(Role.ADMIN) as c:
        r = c.post(PATH, json={**VALID_SETTINGS, "host": "h" * 256})
    assert r.json()["response"]["errors"] == {"Host": ["The field Host must be a string with a maximum length of 255."]}
    assert r.json()["response"]["status"] == 400


def test_exactly_255_characters_are_accepted(portal: Portal) -> None:
    with portal.client(Role.ADMIN) as c:
        r = c.post(PATH, json={**VALID_SETTINGS, "senderDisplayName": "n" * 255})
    assert r.status_code == 200
    assert r.json()["response"]["senderDisplayName"] == "n" * 255


@pytest.mark.parametrize("content_type", ["application/json; charset=utf-8", "text/json", "application/merge-patch+json"])
def test_json_content_types_are_accepted(portal: Portal, content_type: str) -> None:
    import json

    with portal.client(Role.ADMIN) as c:
        r = c.post(PATH, content=json.dumps(VALID_SETTINGS).encode(), headers={"Content-Type": content_type})
    assert r.status_code == 200, r.text
