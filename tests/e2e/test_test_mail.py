"""Test mail through the HTTP API to real SMTP servers on loopback: the job, its steps and diagnostics."""

from __future__ import annotations

import email
import email.policy
import signal
import ssl
import threading
import time
from email.utils import parseaddr, parsedate_to_datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import trustme
from serverkit import Portal, Server, make_portal, start_server, wait_for_result
from smtp_peers import closed_port, smtp_peer, tarpit

from smtpsettings.domain.accounts import Role

SETTINGS = "/api/2.0/smtpsettings/smtp"
TEST = "/api/2.0/smtpsettings/smtp/test"
STATUS = TEST + "/status"
SMTP_PASSWORD = "smtp-Pass-7c1e"


def settings_for(port: int, **extra: Any) -> dict[str, Any]:
    return {
        "host": "127.0.0.1",
        "port": port,
        "senderAddress": "noreply@example.com",
        "senderDisplayName": "Example Portal",
        "enableSSL": False,
        "enableAuth": False,
        **extra,
    }


def run_test(portal: Portal, settings: dict[str, Any]) -> dict[str, Any]:
    with portal.client(Role.ADMIN) as c:
        saved = c.post(SETTINGS, json=settings)
        assert saved.status_code == 200, saved.text
        started = c.get(TEST)
        assert started.status_code == 200, started.text
        assert set(started.json()["response"]) >= {"id", "completed", "percents", "status", "error"}
        return wait_for_result(c)


def server_tls_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    return context


def test_status_before_any_test_is_an_envelope_without_response(portal: Portal) -> None:
    with portal.client(Role.ADMIN) as c:
        body = c.get(STATUS).json()
    assert "response" not in body and body["statusCode"] == 200 and body["count"] == 0


def test_a_test_mail_is_delivered_as_docspace_sends_it(portal: Portal) -> None:
    with smtp_peer() as (port, inbox):
        result = run_test(portal, settings_for(port))
    assert result["error"] == "" and result["percents"] == 100 and result["completed"] is True
    assert len(inbox.messages) == 1
    message = inbox.messages[0]
    assert parseaddr(message["From"]) == ("Example Portal", "noreply@example.com")
    assert message["To"] == portal.emails[Role.ADMIN]
    assert inbox.envelopes[0].rcpt_tos == [portal.emails[Role.ADMIN]]
    assert message["Subject"] == "SMTP test message"
    assert message["Auto-Submitted"] == "auto-generated"
    assert parsedate_to_datetime(message["Date"]).tzinfo is not None
    assert message["Message-ID"].startswith("<") and message["Message-ID"].endswith(">")
    assert message.get_payload(decode=True).strip()
    steps = {d["step"] for d in result["details"]}
    assert "Connect to host" in steps
    assert any(line.startswith("S: 250") for line in result["transcript"])


def test_auth_plain_or_login_succeeds_and_the_transcript_hides_the_password(portal: Portal) -> None:
    with smtp_peer(auth=("mailer", SMTP_PASSWORD)) as (port, inbox):
        result = run_test(
            portal, settings_for(port, enableAuth=True, credentialsUserName="mailer", credentialsUserPassword=SMTP_PASSWORD)
        )
    assert result["error"] == "", result
    assert len(inbox.messages) == 1
    text = str(result)
    assert SMTP_PASSWORD not in text
    assert any(line.startswith("C: AUTH") and "***" in line for line in result["transcript"])


def test_rejected_credentials_fail_at_authenticate_with_the_server_reply(portal: Portal) -> None:
    with smtp_peer(auth=("mailer", "the-real-one")) as (port, inbox):
        result = run_test(
            portal, settings_for(port, enableAuth=True, credentialsUserName="mailer", credentialsUserPassword=SMTP_PASSWORD)
        )
    assert result["completed"] is True and result["percents"] == 60 and result["status"] == "Authenticate"
    assert result["error"].startswith("Authentication failed: 535")
    assert not inbox.messages
    assert SMTP_PASSWORD not in str(result)


def test_starttls_with_a_certificate_from_the_configured_ca(portal: Portal, ca: trustme.CA) -> None:
    with smtp_peer(starttls=server_tls_context(ca)) as (port, inbox):
        result = run_test(portal, settings_for(port, enableSSL=True))
    assert result["error"] == "", result
    assert len(inbox.messages) == 1
    tls = " ".join(d["message"] for d in result["details"])
    assert "TLS" in tls


def test_an_untrusted_certificate_fails_with_a_verify_error(portal: Portal) -> None:
    stranger = trustme.CA()
    with smtp_peer(starttls=server_tls_context(stranger)) as (port, inbox):
        result = run_test(portal, settings_for(port, enableSSL=True))
    assert result["error"].startswith("Certificate verify failed"), result["error"]
    assert result["percents"] == 40 and not inbox.messages


def test_implicit_tls_is_refused_politely_when_the_port_speaks_plain(portal: Portal) -> None:
    # SSL on a port that does not offer STARTTLS: never a silent downgrade to plain text.
    with smtp_peer() as (port, inbox):
        result = run_test(portal, settings_for(port, enableSSL=True))
    assert result["error"] == f"STARTTLS is required but 127.0.0.1:{port} does not offer it"
    assert not inbox.messages


def test_a_closed_port_is_a_connect_error(portal: Portal) -> None:
    port = closed_port()
    result = run_test(portal, settings_for(port))
    assert result["percents"] == 40 and result["status"] == "Connect to host"
    assert "connect" in result["error"].lower() and str(port) in result["error"]


def test_a_tarpit_ends_in_a_timeout_naming_the_step_while_the_api_stays_responsive(portal: Portal) -> None:
    with tarpit() as port, portal.client(Role.ADMIN) as c:
        c.post(SETTINGS, json=settings_for(port))
        first = c.get(TEST).json()["response"]
        # While the job waits on the silent server, the API answers at once, and a second
        # call returns the same running job instead of starting another.
        started = time.monotonic()
        assert c.get(SETTINGS).status_code == 200
        assert time.monotonic() - started < 1.0
        again = c.get(TEST).json()["response"]
        assert again["id"] == first["id"] and again["completed"] is False
        result = wait_for_result(c)
    assert result["error"] == "No answer from 127.0.0.1 within 2 s at step Connect to host", result["error"]
    assert result["percents"] == 40


def test_a_denied_network_is_refused_before_connecting(portal: Portal) -> None:
    result = run_test(portal, {**settings_for(25), "host": "169.254.169.254"})
    assert result["error"].startswith("Refusing to connect to 169.254.169.254"), result["error"]


def test_the_test_route_is_rate_limited_per_user(portal: Portal) -> None:
    with smtp_peer() as (port, _), portal.client(Role.ADMIN) as c:
        c.post(SETTINGS, json=settings_for(port))
        statuses = []
        for _ in range(6):
            statuses.append(c.get(TEST).status_code)
            wait_for_result(c)
        limited = c.get(TEST)
    assert statuses == [200] * 5 + [429]
    assert limited.status_code == 429 and int(limited.headers["retry-after"]) > 0
    # Another admin of the same portal has a budget of their own.
    with portal.client(Role.OWNER) as owner:
        assert owner.get(TEST).status_code == 200


def test_unsaved_settings_can_be_tested_without_saving_them(portal: Portal) -> None:
    with smtp_peer() as (port, inbox), portal.client(Role.ADMIN) as c:
        before = c.get(SETTINGS).json()["response"]
        r = c.post(TEST, json=settings_for(port))
        assert r.status_code == 200, r.text
        result = wait_for_result(c)
        assert result["error"] == "" and len(inbox.messages) == 1
        assert c.get(SETTINGS).json()["response"] == before


def test_unsaved_test_uses_the_stored_password_only_for_the_same_target(portal: Portal) -> None:
    with smtp_peer(auth=("mailer", SMTP_PASSWORD)) as (port, inbox), portal.client(Role.ADMIN) as c:
        stored = settings_for(port, enableAuth=True, credentialsUserName="mailer", credentialsUserPassword=SMTP_PASSWORD)
        c.post(SETTINGS, json=stored)
        without_password = {k: v for k, v in stored.items() if k != "credentialsUserPassword"}
        assert c.post(TEST, json={**without_password, "senderDisplayName": "Trying a name"}).status_code == 200
        assert wait_for_result(c)["error"] == ""
        elsewhere = c.post(TEST, json={**without_password, "host": "localhost"})
        assert elsewhere.status_code == 400 and elsewhere.json()["error"]["message"] == "Empty password."
    assert parseaddr(inbox.messages[0]["From"])[0] == "Trying a name"


def test_a_test_mail_goes_to_the_address_given_in_to(portal: Portal) -> None:
    with smtp_peer() as (port, inbox), portal.client(Role.ADMIN) as c:
        c.post(SETTINGS, json=settings_for(port))
        started = c.get(TEST, params={"to": " Ops@Example.org "})
        assert started.status_code == 200, started.text
        assert started.json()["response"]["recipient"] == "Ops@Example.org"
        finished = wait_for_result(c)
        assert finished["error"] == ""
        # The finished status still says where it went (the page shows it after a reload).
        assert finished["recipient"] == c.get(STATUS).json()["response"]["recipient"] == "Ops@Example.org"
    assert inbox.envelopes[0].rcpt_tos == ["Ops@Example.org"]
    assert inbox.messages[0]["To"] == "Ops@Example.org"


def test_an_unsaved_test_goes_to_the_address_given_in_to_with_an_international_domain(portal: Portal) -> None:
    with smtp_peer() as (port, inbox), portal.client(Role.ADMIN) as c:
        r = c.post(TEST, params={"to": "ops@B\u00fccher.example"}, json=settings_for(port))
        assert r.status_code == 200, r.text
        assert wait_for_result(c)["error"] == ""
    # The domain mapped as the outbox maps it (case folded, IDNA 2008 rules).
    assert inbox.envelopes[0].rcpt_tos[0] in ("ops@b\u00fccher.example", "ops@xn--bcher-kva.example")


@pytest.mark.parametrize("to", ["not-an-address", "a@b@c.example", "Ann <ann@example.com>", "ann@[127.0.0.1]"])
def test_a_bad_to_is_a_400_naming_the_field_and_sends_nothing(portal: Portal, to: str) -> None:
    with smtp_peer() as (port, inbox), portal.client(Role.ADMIN) as c:
        c.post(SETTINGS, json=settings_for(port))
        for answer in (c.get(TEST, params={"to": to}), c.post(TEST, params={"to": to}, json=settings_for(port))):
            assert answer.status_code == 400, answer.text
            body = answer.json()
            assert list(body["response"]["errors"]) == ["to"], body
        assert "response" not in c.get(STATUS).json()
    assert not inbox.messages


def test_several_to_are_a_400_not_one_of_them_chosen(portal: Portal) -> None:
    with smtp_peer() as (port, inbox), portal.client(Role.ADMIN) as c:
        c.post(SETTINGS, json=settings_for(port))
        answer = c.get(TEST, params=[("to", "ops@example.org"), ("to", "other@example.org")])
        assert answer.status_code == 400, answer.text
        assert list(answer.json()["response"]["errors"]) == ["to"]
        assert "response" not in c.get(STATUS).json()
    assert not inbox.messages


def test_an_empty_to_is_the_callers_own_address(portal: Portal) -> None:
    with smtp_peer() as (port, inbox):
        with portal.client(Role.ADMIN) as c:
            c.post(SETTINGS, json=settings_for(port))
            assert c.get(TEST + "?to=").status_code == 200
            finished = wait_for_result(c)
            assert finished["error"] == "" and finished["recipient"] == portal.emails[Role.ADMIN]
    assert inbox.envelopes[0].rcpt_tos == [portal.emails[Role.ADMIN]]


def test_two_portals_test_at_the_same_time(server: Server) -> None:
    portals = [make_portal(server), make_portal(server)]
    with smtp_peer() as (port, inbox):
        results: list[dict[str, Any]] = []
        threads = [threading.Thread(target=lambda p=p: results.append(run_test(p, settings_for(port)))) for p in portals]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
    assert [r["error"] for r in results] == ["", ""]
    assert sorted(m["To"] for m in inbox.messages) == sorted(p.emails[Role.ADMIN] for p in portals)


@pytest.mark.parametrize("role", [Role.USER, Role.GUEST])
def test_only_admins_may_test(portal: Portal, role: Role) -> None:
    with portal.client(role) as c:
        assert c.get(TEST).status_code == 403
        assert c.get(STATUS).status_code == 403
        assert c.post(TEST, json=settings_for(25)).status_code == 403


def test_nothing_to_test_without_settings(tmp_path: Path) -> None:
    # The shared server has a default to inherit; this one has none.
    own = start_server(tmp_path / "data")
    try:
        p = make_portal(own)
        with p.client(Role.ADMIN) as c:
            r = c.get(TEST)
        assert r.status_code == 400 and "save the settings first" in r.json()["error"]["message"]
    finally:
        own.stop()


def test_a_job_left_running_by_a_killed_server_is_reported_failed_after_its_deadline(tmp_path: Path) -> None:
    env = {"SMTPSETTINGS_SMTP_CONNECT_TIMEOUT": "30", "SMTPSETTINGS_SMTP_COMMAND_TIMEOUT": "30", "SMTPSETTINGS_SMTP_JOB_TIMEOUT": "4"}
    first = start_server(tmp_path / "data", env)
    portal = make_portal(first)
    with tarpit() as port:
        with portal.client(Role.ADMIN) as c:
            c.post(SETTINGS, json=settings_for(port))
            job = c.get(TEST).json()["response"]
        first.kill(signal.SIGKILL)
        first.process.wait(10)
        second = start_server(tmp_path / "data", env)
        try:
            portal.server = second
            with portal.client(Role.ADMIN) as c:
                running = c.get(STATUS).json()["response"]
                assert running["id"] == job["id"] and running["completed"] is False
                result = wait_for_result(c, timeout=15)
            assert result["id"] == job["id"]
            assert "did not finish within" in result["error"]
        finally:
            second.stop()


# -- header injection through the display name ----------------------------------------------------------

INJECTION = "=?utf-8?q?Support=0D=0ABcc:_attacker@evil.test=0D=0AX-Injected:_1?="
INJECTION_B64 = "=?utf-8?b?U3VwcG9ydA0KQmNjOiBhdHRhY2tlckBldmlsLnRlc3QNClgtSW5qZWN0ZWQ6IDE=?="
BUILT_HEADERS = ["auto-submitted", "content-transfer-encoding", "content-type", "date", "from", "message-id", "mime-version", "subject", "to"]


def header_names(raw: bytes) -> list[str]:
    head = raw.split(b"\r\n\r\n", 1)[0]
    return sorted(line.split(b":", 1)[0].decode().lower() for line in head.split(b"\r\n") if line[:1] not in (b" ", b"\t"))


@pytest.mark.parametrize("name", [INJECTION, INJECTION_B64])
def test_a_display_name_whose_encoded_word_holds_a_line_break_is_refused_on_save_and_on_test(portal: Portal, name: str) -> None:
    with smtp_peer() as (port, inbox), portal.client(Role.ADMIN) as c:
        before = c.get(SETTINGS).json()["response"]
        for path in (SETTINGS, TEST):
            r = c.post(path, json=settings_for(port, senderDisplayName=name))
            assert r.status_code == 400, (path, r.text)
            body = r.json()
            assert body["error"]["message"] == "The field SenderDisplayName must not contain control characters."
            assert body["response"]["errors"] == {"SenderDisplayName": ["The field SenderDisplayName must not contain control characters."]}
        assert c.get(SETTINGS).json()["response"] == before
        assert "response" not in c.get(STATUS).json()  # no test was started
    assert not inbox.messages


def test_a_display_name_stored_before_the_rule_sends_no_injected_header(portal: Portal) -> None:
    # Settings saved by an older version are not validated again: the message builder refuses them itself.
    with smtp_peer() as (port, inbox), portal.client(Role.ADMIN) as c:
        assert c.post(SETTINGS, json=settings_for(port)).status_code == 200
        engine = sa.create_engine(portal.server.database_url.replace("postgresql://", "postgresql+psycopg://", 1), poolclass=sa.NullPool)
        try:
            with engine.begin() as conn:
                conn.execute(
                    sa.text("UPDATE smtp_settings SET sender_display_name = :name WHERE portal_id = (SELECT id FROM portals WHERE hostname = :host)"),
                    {"name": INJECTION, "host": portal.hostname},
                )
        finally:
            engine.dispose()
        assert c.get(SETTINGS).json()["response"]["senderDisplayName"] == INJECTION
        assert c.get(TEST).status_code == 200
        result = wait_for_result(c)
    assert result["error"].startswith("Cannot build the test message: Refusing to build the message"), result["error"]
    assert result["status"] == "Create mime message" and result["percents"] == 20
    assert not inbox.messages and not inbox.envelopes


@pytest.mark.parametrize(
    ("name", "shown"),
    [
        ("=?utf-8?b?SsO2cmcsIEFkbWlu?=", "Jörg, Admin"),  # an encoded word with a comma in it
        ("Jörg — Support (Zürich)", "Jörg — Support (Zürich)"),  # raw text that goes out as encoded words
        ("Support Desk of the Example Portal " * 6, ("Support Desk of the Example Portal " * 6).strip()),  # folded
    ],
)
def test_a_display_name_that_needs_encoding_arrives_with_only_the_headers_the_builder_set(portal: Portal, name: str, shown: str) -> None:
    with smtp_peer() as (port, inbox):
        result = run_test(portal, settings_for(port, senderDisplayName=name))
    assert result["error"] == "", result
    [envelope] = inbox.envelopes
    raw = envelope.original_content or b""
    assert header_names(raw) == BUILT_HEADERS
    assert b"Bcc" not in raw and b"X-Injected" not in raw
    assert envelope.rcpt_tos == [portal.emails[Role.ADMIN]]
    received = email.message_from_bytes(raw, policy=email.policy.default)
    [sender] = received["From"].addresses
    assert (sender.display_name, sender.addr_spec) == (shown, "noreply@example.com")


# -- hosts ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "problem"),
    [
        ("smtp://127.0.0.1", "contains '/' (a URL is not a host name; give only the name)"),
        ("127.0.0.1:25", "includes a port: give the port in the Port field"),
        ("mail example.com", "contains a space"),
        ("x" * 255, "a label is longer than 63 characters"),
    ],
)
def test_a_host_that_is_not_a_host_name_is_refused_on_save_and_on_test(portal: Portal, host: str, problem: str) -> None:
    with portal.client(Role.ADMIN) as c:
        for path in (SETTINGS, TEST):
            r = c.post(path, json={**settings_for(25), "host": host})
            assert r.status_code == 400, (path, r.text)
            [message] = r.json()["response"]["errors"]["Host"]
            assert message.startswith("The field Host must be a host name or IP address: ") and problem in message
            assert r.json()["error"]["message"] == message


def test_a_bracketed_ipv6_host_is_stored_bare_and_reached(portal: Portal) -> None:
    with portal.client(Role.ADMIN) as c:
        r = c.post(SETTINGS, json={**settings_for(25), "host": "[::1]"})
        assert r.status_code == 200 and r.json()["response"]["host"] == "::1"


def test_an_ipv6_spelling_of_the_metadata_address_is_refused_before_connecting(portal: Portal) -> None:
    result = run_test(portal, {**settings_for(80), "host": "64:ff9b::a9fe:a9fe"})
    assert result["error"] == (
        "Refusing to connect to 64:ff9b::a9fe:a9fe: it embeds the IPv4 address 169.254.169.254, "
        "which is in a denied network (169.254.0.0/16)"
    ), result["error"]
    assert result["percents"] == 40
