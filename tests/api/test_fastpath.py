"""The fast path (api/fastpath.py) answers exactly as Litestar does, and the access log line is unchanged.

The same application is driven in-process twice per request: once as served (``RequestLog`` with the fast
path in front of Litestar) and once with Litestar alone behind the same ``RequestLog``, on the same database
and services. Status, every header (the request id aside) and the body must be the same bytes, and so must
the access log line (its request id, duration and timestamp aside).
"""

from __future__ import annotations

import asyncio
import json
import re
import warnings
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import structlog
from litestar.exceptions import LitestarDeprecationWarning

from serverkit import PASSWORD, VALID_SETTINGS, _password_hash
from smtpsettings import logs
from smtpsettings.api.fastpath import FastPath
from smtpsettings.app import HOT_ROUTES, RequestLog, create_app
from smtpsettings.config import load_settings
from smtpsettings.domain.accounts import Role
from smtpsettings.store import accounts as store_accounts

PATH = "/api/2.0/smtpsettings/smtp"
LIVE = "/api/2.0/health/live"
MESSAGES = "/api/2.0/smtpsettings/messages"
HOST = "fast.test"
JSON = "application/json"


@dataclass
class Answer:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes


@dataclass
class Apps:
    served: RequestLog
    litestar_only: RequestLog
    fast: FastPath
    tokens: dict[Role, str]
    fell_back: list[tuple[str, str]]


async def call(app: Any, method: str, path: str, headers: list[tuple[str, str]], body: bytes = b"", query: bytes = b"") -> Answer:
    """One request through an ASGI app, as granian would hand it over; the raw answer."""
    raw = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers]
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": query,
        "headers": raw,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 80),
        "state": {},
    }
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            await asyncio.sleep(3600)  # a disconnect would come only when the client goes away
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    messages: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        messages.append(message)

    await app(scope, receive, send)
    start = messages[0]
    assert start["type"] == "http.response.start"
    return Answer(start["status"], list(start["headers"]), b"".join(m.get("body", b"") for m in messages[1:]))


# What differs between two messages accepted alike: their queue id, Message-ID and times.
_PER_MESSAGE = re.compile(rb'"(id|messageId|createdAt|nextAttemptAt)":"[^"]*"')


def _normalized(answer: Answer) -> Answer:
    """The answer with its request id (random per request; also a validation 400's traceId) and a new
    message's own values replaced."""
    request_id = dict(answer.headers)[b"x-request-id"]
    body = _PER_MESSAGE.sub(rb'"\1":"<x>"', answer.body.replace(request_id, b"<id>"))
    # A new message's values (a timestamp's digits) may differ in length: its own length is checked here, and
    # the normalized body's length compared.
    if b"content-length" in dict(answer.headers):
        assert int(dict(answer.headers)[b"content-length"]) == len(answer.body)
    replaced = {b"x-request-id": b"<id>", b"content-length": str(len(body)).encode()}
    headers = [(k, replaced.get(k, v)) for k, v in answer.headers]
    return Answer(answer.status, headers, body)


@pytest.fixture
async def apps(tmp_path: Path) -> AsyncIterator[Apps]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LitestarDeprecationWarning)  # the API docs' routes; not tested here
        served = create_app(load_settings({
            "SMTPSETTINGS_DATA_DIR": str(tmp_path / "data"),
            "SMTPSETTINGS_MAX_BODY_BYTES": "4096",
            "SMTPSETTINGS_OUTBOX_MAX_MESSAGE_BYTES": "8192",
            # Settings to accept mail with (nothing is delivered: the dispatcher runs in the lifespan, not started here).
            "SMTPSETTINGS_DEFAULT_SMTP_HOST": "mail.fast.test",
            "SMTPSETTINGS_DEFAULT_SMTP_SENDER_ADDRESS": "noreply@fast.test",
        }))
    assert isinstance(served, RequestLog) and isinstance(served.http, FastPath)
    litestar_only = RequestLog(served.app, served.max_body_bytes, served.body_timeout, served.body_limits)
    services = served.app.state.services

    def create(conn: Any) -> None:
        portal = store_accounts.create_portal(conn, HOST, is_default=False)
        for role in Role:
            store_accounts.create_user(
                conn, portal.id, email=f"{role.value}@{HOST}", display_name=role.value, role=role, password_hash=_password_hash()
            )

    services.db.write_sync(create)
    tokens = {}
    for role in (Role.ADMIN, Role.USER):
        signed_in = await call(
            litestar_only,
            "POST",
            "/api/2.0/authentication",
            [("host", HOST), ("content-type", JSON)],
            json.dumps({"userName": f"{role.value}@{HOST}", "password": PASSWORD}).encode(),
        )
        assert signed_in.status == 200, signed_in.body
        tokens[role] = json.loads(signed_in.body)["response"]["token"]
    fast = served.http
    fell_back: list[tuple[str, str]] = []
    litestar = fast.fallback

    async def recording(scope: Any, receive: Any, send: Any) -> None:
        fell_back.append((scope["method"], scope["path"]))
        await litestar(scope, receive, send)

    fast.fallback = recording
    try:
        yield Apps(served, litestar_only, fast, tokens, fell_back)
    finally:
        await services.close()


def _cookie(apps: Apps, role: Role = Role.ADMIN) -> tuple[str, str]:
    return ("cookie", f"asc_auth_key={apps.tokens[role]}")


BODY = json.dumps(VALID_SETTINGS).encode()
MAIL = json.dumps({"to": ["someone@example.test"], "subject": "Hello", "text": "A plain message."}).encode()

# (name, method, path, headers(apps) -> list, body, query, served by the fast path?)
CASES: list[tuple[str, str, str, Any, bytes, bytes, bool]] = [
    ("get", "GET", PATH, lambda a: [("host", HOST), _cookie(a)], b"", b"", True),
    ("get bearer", "GET", PATH, lambda a: [("host", HOST), ("authorization", "Bearer " + a.tokens[Role.ADMIN])], b"", b"", True),
    ("get query", "GET", PATH, lambda a: [("host", HOST), _cookie(a)], b"", b"a=1&b=%20", True),
    ("get text/plain", "GET", PATH, lambda a: [("host", HOST), ("accept", "text/plain"), _cookie(a)], b"", b"", True),
    ("get text/json", "GET", PATH, lambda a: [("host", HOST), ("accept", "text/json;q=1, */*;q=0.1"), _cookie(a)], b"", b"", True),
    ("get quoted cookie", "GET", PATH, lambda a: [("host", HOST), ("cookie", f'asc_auth_key="{a.tokens[Role.ADMIN]}"')], b"", b"", True),
    ("401 none", "GET", PATH, lambda a: [("host", HOST)], b"", b"", True),
    ("401 bad token", "GET", PATH, lambda a: [("host", HOST), ("cookie", "asc_auth_key=nope")], b"", b"", True),
    ("401 basic", "GET", PATH, lambda a: [("host", HOST), ("authorization", "Basic !!!")], b"", b"", True),
    ("403 user", "GET", PATH, lambda a: [("host", HOST), _cookie(a, Role.USER)], b"", b"", True),
    ("404 unknown host", "GET", PATH, lambda a: [("host", "nowhere.test"), _cookie(a)], b"", b"", True),
    ("404 no host", "GET", PATH, lambda a: [_cookie(a)], b"", b"", True),
    ("406", "GET", PATH, lambda a: [("host", HOST), ("accept", "text/html"), _cookie(a)], b"", b"", False),
    ("post", "POST", PATH, lambda a: [("host", HOST), ("content-type", JSON), _cookie(a)], BODY, b"", True),
    ("post charset", "POST", PATH, lambda a: [("host", HOST), ("content-type", "application/json; charset=UTF-8"), _cookie(a)], BODY, b"", True),
    ("post 406", "POST", PATH, lambda a: [("host", HOST), ("accept", "image/png"), ("content-type", JSON), _cookie(a)], BODY, b"", False),
    ("post 415", "POST", PATH, lambda a: [("host", HOST), ("content-type", "text/plain"), _cookie(a)], BODY, b"", True),
    ("post 415 none", "POST", PATH, lambda a: [("host", HOST), _cookie(a)], BODY, b"", True),
    ("post 415 latin1", "POST", PATH, lambda a: [("host", HOST), ("content-type", "application/json; charset=latin1"), _cookie(a)], BODY, b"", True),
    ("post 400 validation", "POST", PATH, lambda a: [("host", HOST), ("content-type", JSON), _cookie(a)], json.dumps({**VALID_SETTINGS, "port": "x"}).encode(), b"", True),
    ("post 400 empty", "POST", PATH, lambda a: [("host", HOST), ("content-type", JSON), _cookie(a)], b"", b"", True),
    ("post 400 malformed", "POST", PATH, lambda a: [("host", HOST), ("content-type", JSON), _cookie(a)], b'{"host": ', b"", True),
    ("post 400 not utf-8", "POST", PATH, lambda a: [("host", HOST), ("content-type", JSON), _cookie(a)], b'{"host": "\xff"}', b"", True),
    ("post 400 deep", "POST", PATH, lambda a: [("host", HOST), ("content-type", JSON), _cookie(a)], b"[" * 100 + b"]" * 100, b"", True),
    ("post 400 array", "POST", PATH, lambda a: [("host", HOST), ("content-type", JSON), _cookie(a)], b"[1]", b"", True),
    ("post 413", "POST", PATH, lambda a: [("host", HOST), ("content-type", JSON), ("content-length", "5000"), _cookie(a)], b"{" + b" " * 4998 + b"}", b"", True),
    ("post 413 unannounced", "POST", PATH, lambda a: [("host", HOST), ("content-type", JSON), _cookie(a)], b'{"a":"' + b"x" * 5000 + b'"}', b"", True),
    ("post 401", "POST", PATH, lambda a: [("host", HOST), ("content-type", JSON)], BODY, b"", True),
    ("post 403", "POST", PATH, lambda a: [("host", HOST), ("content-type", JSON), _cookie(a, Role.USER)], BODY, b"", True),
    ("head", "HEAD", PATH, lambda a: [("host", HOST), _cookie(a)], b"", b"", False),
    ("options", "OPTIONS", PATH, lambda a: [("host", HOST)], b"", b"", False),
    ("delete 401", "DELETE", PATH, lambda a: [("host", HOST)], b"", b"", False),
    ("put 405", "PUT", PATH, lambda a: [("host", HOST), _cookie(a)], b"", b"", False),
    ("trailing slash", "GET", PATH + "/", lambda a: [("host", HOST), _cookie(a)], b"", b"", False),
    ("live", "GET", LIVE, lambda a: [("host", "anything")], b"", b"", True),
    ("live any accept", "GET", LIVE, lambda a: [("accept", "text/html")], b"", b"", False),
    ("live head", "HEAD", LIVE, lambda a: [], b"", b"", False),
    ("other route", "GET", PATH + "/audit", lambda a: [("host", HOST), _cookie(a)], b"", b"", False),
    ("send", "POST", MESSAGES, lambda a: [("host", HOST), ("content-type", JSON), _cookie(a)], MAIL, b"", True),
    ("send 400 field", "POST", MESSAGES, lambda a: [("host", HOST), ("content-type", JSON), _cookie(a)], b'{"to": []}', b"", True),
    ("send 400 key", "POST", MESSAGES, lambda a: [("host", HOST), ("content-type", JSON), ("idempotency-key", "a b"), _cookie(a)], MAIL, b"", True),
    ("send 401", "POST", MESSAGES, lambda a: [("host", HOST), ("content-type", JSON)], MAIL, b"", True),
    ("send 403", "POST", MESSAGES, lambda a: [("host", HOST), ("content-type", JSON), _cookie(a, Role.USER)], MAIL, b"", True),
    ("send 413", "POST", MESSAGES, lambda a: [("host", HOST), ("content-type", JSON), _cookie(a)], b'{"text":"' + b"x" * 9000 + b'"}', b"", True),
    ("send 415", "POST", MESSAGES, lambda a: [("host", HOST), ("content-type", "text/plain"), _cookie(a)], MAIL, b"", True),
    ("send 406", "POST", MESSAGES, lambda a: [("host", HOST), ("accept", "image/png"), ("content-type", JSON), _cookie(a)], MAIL, b"", False),
    ("messages list", "GET", MESSAGES, lambda a: [("host", HOST), _cookie(a)], b"", b"", False),
]


def _log_lines(err: str) -> list[dict[str, Any]]:
    return [line for line in map(json.loads, err.splitlines()) if line.get("event") == "request"]


@pytest.mark.parametrize(("method", "path", "headers", "body", "query", "fast"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
async def test_fast_path_answers_byte_for_byte_as_litestar(
    capsys: pytest.CaptureFixture[str], apps: Apps, method: str, path: str, headers: Any, body: bytes, query: bytes, fast: bool
) -> None:
    capsys.readouterr()
    by_litestar = await call(apps.litestar_only, method, path, headers(apps), body, query)
    assert apps.fell_back == []
    served = await call(apps.served, method, path, headers(apps), body, query)
    assert apps.fell_back == ([] if fast else [(method, path)])  # the hot routes never reach Litestar's router
    assert _normalized(served) == _normalized(by_litestar)
    assert served.status < 500
    # One access log line each, alike but for what differs between any two requests.
    lines = _log_lines(capsys.readouterr().err)
    assert len(lines) == 2
    for line in lines:
        assert list(line) == [
            "request_id", "method", "path", "status", "duration_ms", "client", "portal", "user_id", "event", "level", "timestamp"
        ]
        del line["request_id"], line["duration_ms"], line["timestamp"]
    assert lines[0] == lines[1]


async def test_request_ids_keep_their_form(apps: Apps) -> None:
    """16 hex digits, the 13th the version digit of the uuid4 they were once cut from; all different."""
    ids = set()
    for _ in range(200):
        answer = await call(apps.served, "GET", LIVE, [])
        ids.add(dict(answer.headers)[b"x-request-id"].decode())
    assert len(ids) == 200
    assert all(re.fullmatch(r"[0-9a-f]{12}4[0-9a-f]{3}", i) for i in ids)


async def test_a_message_sent_through_the_fast_path_is_accepted_and_repeats_by_its_key(apps: Apps) -> None:
    """The byte-for-byte cases above would also agree on a refusal: here the message is really queued."""
    headers = [("host", HOST), ("content-type", JSON), ("idempotency-key", "k-1"), _cookie(apps)]
    first = await call(apps.served, "POST", MESSAGES, headers, MAIL)
    again = await call(apps.served, "POST", MESSAGES, headers, MAIL)
    too_large = await call(apps.served, "POST", MESSAGES, headers[:2] + [_cookie(apps)], b'{"text":"' + b"x" * 9000 + b'"}')
    assert apps.fell_back == []
    assert (first.status, again.status, too_large.status) == (202, 200, 413)
    sent = json.loads(first.body)["response"]
    assert sent["status"] == "queued" and sent["to"] == ["someone@example.test"]
    assert json.loads(again.body)["response"]["id"] == sent["id"]


def test_every_hot_route_is_served_by_the_fast_path(apps: Apps) -> None:
    assert set(apps.fast.routes) == set(HOT_ROUTES)
    served = {(c[1], c[2]) for c in CASES if c[6]}
    assert served == {(m, p) for p, m in HOT_ROUTES}


@pytest.fixture
def structlog_restored() -> Iterator[None]:
    yield
    logs.configure_logging("json", "info")


def test_access_line_is_the_line_structlog_writes(capsys: pytest.CaptureFixture[str], structlog_restored: None) -> None:
    """The direct JSON line has the keys, order and value types of structlog's chain for the same event."""
    logs.configure_logging("json", "info")
    capsys.readouterr()
    fields = {
        "request_id": "abc", "method": "GET", "path": "/x", "status": 200,
        "duration_ms": 0.25, "client": "::1", "portal": "p.test", "user_id": 7,
    }
    logs.log_request(*fields.values())  # type: ignore[arg-type]
    structlog.get_logger("smtpsettings.access").info("request", **fields)
    direct, via_structlog = (json.loads(line) for line in capsys.readouterr().err.splitlines())
    assert list(direct) == list(via_structlog)
    assert direct.pop("timestamp").endswith("Z") and via_structlog.pop("timestamp").endswith("Z")
    assert direct == via_structlog


@pytest.mark.parametrize(("fmt", "level", "written"), [("console", "info", True), ("json", "warning", False), ("json", "debug", True)])
def test_access_line_follows_the_configured_format_and_level(
    capsys: pytest.CaptureFixture[str], structlog_restored: None, fmt: str, level: str, written: bool
) -> None:
    logs.configure_logging(fmt, level)
    capsys.readouterr()
    logs.log_request("abc", "GET", "/x", 200, 0.25, "::1", None, None)
    err = capsys.readouterr().err
    assert ("request" in err) is written
    if written and fmt == "console":
        assert not err.lstrip().startswith("{")
