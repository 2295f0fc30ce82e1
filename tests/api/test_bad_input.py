"""Bad input of every kind gets the right 4xx envelope, and the stored settings stay byte-identical."""

from __future__ import annotations

import time

import pytest
from serverkit import VALID_SETTINGS, Portal

from smtpsettings.api.context import json_too_deep
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
    # Valid settings, but declared in a charset the server would not decode them in.
    ("latin1 charset", b'{"host": "h.example.com", "senderAddress": "a@example.com"}', {"Content-Type": "application/json; charset=latin1"}, 415, None),
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


@pytest.mark.parametrize(
    "content_type",
    [
        "application/json; charset=utf-8",
        "application/json; charset=utf8",
        'application/json; charset="UTF-8"',
        "text/json",
        "application/merge-patch+json",
    ],
)
def test_json_content_types_are_accepted(portal: Portal, content_type: str) -> None:
    import json

    with portal.client(Role.ADMIN) as c:
        r = c.post(PATH, content=json.dumps(VALID_SETTINGS).encode(), headers={"Content-Type": content_type})
    assert r.status_code == 200, r.text


# --- nesting depth -----------------------------------------------------------------------------------

JSON_ROUTES = ["/api/2.0/authentication", PATH, PATH + "/test"]
TOO_DEEP = "The request body nests too deeply: at most 32 levels of arrays and objects are allowed."
MAX_BODY = 65_536


def _nested(depth: int, kind: str) -> bytes:
    if kind == "arrays":
        return b"[" * depth + b"]" * depth
    if kind == "objects":
        return b'{"a":' * depth + b"1" + b"}" * depth
    return b"[" * depth  # unclosed: the decoder descends into every level before it finds the end


@pytest.mark.parametrize("signed_in", [False, True], ids=["anonymous", "admin"])
@pytest.mark.parametrize(
    ("depth", "kind"), [(961, "arrays"), (961, "objects"), (32_000, "arrays"), (60_000, "unclosed"), (100_000, "arrays")]
)
@pytest.mark.parametrize("path", JSON_ROUTES)
def test_deeply_nested_json_is_a_4xx_on_every_json_route(
    portal: Portal, path: str, depth: int, kind: str, signed_in: bool
) -> None:
    # Depth 961 once ended in the decoder's RecursionError: a 500, before any sign-in.
    body = _nested(depth, kind)
    with portal.client(Role.ADMIN if signed_in else None) as c:
        r = c.post(path, content=body, headers=JSON)
    with portal.client() as c:  # a new connection: the server may close one whose body it did not read
        assert c.get("/api/2.0/health/live").status_code == 200  # the worker is still there
    envelope = r.json()
    assert envelope["status"] == 1 and envelope["statusCode"] == r.status_code and envelope["error"]["stack"] is None
    if len(body) > MAX_BODY and (signed_in or path.endswith("authentication")):
        assert r.status_code == 413, r.text
    elif signed_in or path.endswith("authentication"):
        assert r.status_code == 400, r.text
        assert envelope["error"]["message"] == TOO_DEEP
    else:
        assert r.status_code == 401, r.text  # the caller is refused before the body is read


def test_nesting_up_to_the_limit_reaches_the_usual_validation(portal: Portal) -> None:
    with portal.client(Role.ADMIN) as c:
        at_limit = c.post(PATH, content=b'{"host": ' + _nested(31, "arrays") + b"}", headers=JSON)
        beyond = c.post(PATH, content=b'{"host": ' + _nested(32, "arrays") + b"}", headers=JSON)
    assert at_limit.status_code == 400 and "Host" in at_limit.json()["response"]["errors"], at_limit.text
    assert beyond.status_code == 400 and beyond.json()["error"]["message"] == TOO_DEEP


@pytest.mark.parametrize(
    ("body", "too_deep"),
    [
        (_nested(32, "arrays"), False),
        (_nested(33, "arrays"), True),
        (_nested(32, "objects"), False),
        (_nested(33, "objects"), True),
        (b"[" * 33, True),
        (b"[" * 32, False),
        (b'{"a": [{"b": [' + b"[]," * 100 + b"[]]}]}", False),  # many openers, little depth
        (b"[]" * 30_000, False),
        (b'["' + b"[" * 1000 + b'"]', False),  # brackets inside a string are text
        (b'["\\"' + b"{" * 1000 + b'"]', False),  # ...also after an escaped quote
        (b'["\\\\"' + b"[" * 40 + b"]" * 40 + b"]", True),  # an escaped backslash ends the string before them
        (b'"' + b"[" * 1000, False),  # an unterminated string to the end
        (b"[" * 40 + b'"\\', True),  # a lone backslash at the end
        (b'{"host": "smtp.example.com", "port": 587, "enableSSL": true}', False),
    ],
)
def test_json_too_deep_counts_nesting_outside_strings(body: bytes, too_deep: bool) -> None:
    assert json_too_deep(body) is too_deep


@pytest.mark.parametrize(
    "body",
    [
        b"[" * MAX_BODY,
        b"[]" * (MAX_BODY // 2),
        b'[""]' * (MAX_BODY // 4),
        b'"' + b'\\"' * (MAX_BODY // 2),  # one long unterminated string of escaped quotes
        b'"\\' * (MAX_BODY // 2),
        b'"' * MAX_BODY,
    ],
    ids=["deep", "wide", "many strings", "escaped quotes", "backslashes", "quotes"],
)
def test_json_too_deep_is_linear_on_the_largest_bodies(body: bytes) -> None:
    # A backtracking string pattern would take minutes on some of these; the bound is generous.
    started = time.perf_counter()
    json_too_deep(body)
    assert time.perf_counter() - started < 0.5
