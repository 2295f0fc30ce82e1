"""The SMTP submission port, end to end: a real ``smtpsettings serve`` with the port open, Python's smtplib and
aiosmtplib as the application, aiosmtpd sinks as the portal's mail server, on SQLite and PostgreSQL.

Every test signs in from a loopback address of its own (127.0.x.y, bound as the client's source address):
the server is told that only 127.0.0.1 is trusted for AUTH before TLS, so the others are "remote" clients,
and failed AUTH from one test never uses up another test's per-address limit.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import os
import re
import smtplib
import socket
import ssl
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiosmtplib
import httpx
import pytest
import trustme
from smtp_peers import Inbox, closed_port, smtp_peer

from serverkit import (
    PASSWORD,
    Portal,
    Server,
    backdate_settings_changes,
    free_port,
    make_portal,
    smtpsettings_command,
    start_server,
)
from smtpsettings.domain.accounts import Role
from smtpsettings.domain.submission import SENDER_GRACE
from smtpsettings.services.accounts import AccountsService
from smtpsettings.store.database import Database

SETTINGS = "/api/2.0/smtpsettings/smtp"
MESSAGES = "/api/2.0/smtpsettings/messages"
SENDER = "noreply@example.com"
MAX_BYTES = 20_000
"""The server's SMTPSETTINGS_OUTBOX_MAX_MESSAGE_BYTES: small, so an oversize message is cheap to send."""
FAILURES_PER_ADDRESS = 3
FAILURES_PER_KEY = 2
QUEUED_AS = re.compile(r"Queued as ([0-9a-f]{32})")

BOTH = pytest.mark.parametrize("submission_server", ["sqlite", "postgresql"], indirect=True)
SQLITE = pytest.mark.parametrize("submission_server", ["sqlite"], indirect=True)

_sources = itertools.count(1)


def source() -> str:
    """A loopback address no other connection of this run uses (never 127.0.0.1, the trusted one)."""
    n = next(_sources)
    return f"127.0.{1 + n // 250}.{1 + n % 250}"


@dataclass
class Submission:
    """A server with its submission ports, and what a client needs to trust its certificate."""

    server: Server
    port: int
    tls_port: int
    ca: trustme.CA

    def tls(self) -> ssl.SSLContext:
        context = ssl.create_default_context()
        self.ca.configure_trust(context)
        return context

    def smtp(self, source_address: str) -> smtplib.SMTP:
        """smtplib connected to the STARTTLS port from ``source_address``, before EHLO."""
        return smtplib.SMTP("127.0.0.1", self.port, source_address=(source_address, 0), timeout=30)

    def signed_in(self, source_address: str, portal: Portal, key: str) -> smtplib.SMTP:
        client = self.smtp(source_address)
        client.starttls(context=self.tls())
        client.login(portal.hostname, key)
        return client

    def portal(self, sink_port: int) -> Portal:
        """A new portal of the server whose mail goes to the sink on ``sink_port``."""
        portal = make_portal(self.server)
        with portal.client(Role.ADMIN) as c:
            assert c.post(SETTINGS, json=settings_for(sink_port)).status_code == 200
        return portal

    def key(self, portal: Portal, role: Role = Role.ADMIN, scope: str | None = "mail.send") -> tuple[str, str]:
        """``(key_id, key)``: a new API key of the portal's user with ``role``."""
        db = Database(self.server.database_url)
        try:
            return AccountsService(db).create_api_key(portal.hostname, portal.emails[role], scope)
        finally:
            db.dispose()


def settings_for(port: int, **changes: Any) -> dict[str, Any]:
    return {
        "host": "127.0.0.1",
        "port": port,
        "senderAddress": SENDER,
        "senderDisplayName": "Example Portal",
        "enableSSL": False,
        "enableAuth": False,
        **changes,
    }


def submission_env(tmp: Path, ca: trustme.CA, **extra: str) -> dict[str, str]:
    cert = ca.issue_cert("localhost", "127.0.0.1")
    cert.cert_chain_pems[0].write_to_path(str(tmp / "cert.pem"))
    cert.private_key_pem.write_to_path(str(tmp / "key.pem"))
    return {
        "SMTPSETTINGS_SUBMISSION_PORT": str(free_port()),
        "SMTPSETTINGS_SUBMISSION_TLS_CERT": str(tmp / "cert.pem"),
        "SMTPSETTINGS_SUBMISSION_TLS_KEY": str(tmp / "key.pem"),
        "SMTPSETTINGS_SUBMISSION_PLAINTEXT_AUTH_NETWORKS": "127.0.0.1/32",
        **extra,
    }


@pytest.fixture(scope="module")
def submission_server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, ca: trustme.CA) -> Iterator[Submission]:
    """A server with both submission ports, per backend (tests choose theirs with ``BOTH`` or ``SQLITE``)."""
    backend: str = request.param
    tmp = tmp_path_factory.mktemp(f"submission-{backend}")
    env = submission_env(
        tmp,
        ca,
        SMTPSETTINGS_SUBMISSION_TLS_PORT=str(free_port()),
        SMTPSETTINGS_OUTBOX_MAX_MESSAGE_BYTES=str(MAX_BYTES),
        SMTPSETTINGS_LOGIN_MAX_FAILURES_PER_ADDRESS=str(FAILURES_PER_ADDRESS),
        SMTPSETTINGS_SUBMISSION_MAX_FAILURES_PER_ADDRESS=str(FAILURES_PER_ADDRESS),
        SMTPSETTINGS_SUBMISSION_MAX_FAILURES_PER_KEY=str(FAILURES_PER_KEY),
        # Delivery is under test, not the per-portal pace (600 a minute would take 20 s for 200 messages).
        SMTPSETTINGS_OUTBOX_MESSAGES_PER_MINUTE="1000000",
        SMTPSETTINGS_OUTBOX_FIRST_RETRY_SECONDS="0.5",
        SMTPSETTINGS_SMTP_CONNECT_TIMEOUT="2",
    )
    cluster = None
    if backend == "postgresql":
        cluster = request.getfixturevalue("pg_cluster")
        env["SMTPSETTINGS_DATABASE_URL"] = cluster.create_database()
    srv = start_server(tmp / "data", env)
    srv.pg = cluster
    try:
        assert f"SMTP submission on 127.0.0.1:{env['SMTPSETTINGS_SUBMISSION_PORT']} (STARTTLS)" in srv.stdout
        assert f"SMTP submission on 127.0.0.1:{env['SMTPSETTINGS_SUBMISSION_TLS_PORT']} (implicit TLS)" in srv.stdout
        yield Submission(srv, int(env["SMTPSETTINGS_SUBMISSION_PORT"]), int(env["SMTPSETTINGS_SUBMISSION_TLS_PORT"]), ca)
    finally:
        srv.stop()


def wait_status(client: httpx.Client, message_id: str, statuses: set[str], timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        body = client.get(f"{MESSAGES}/{message_id}").json()["response"]
        if body["status"] in statuses:
            return body  # type: ignore[no-any-return]
        if time.monotonic() > deadline:
            raise AssertionError(f"message {message_id} is {body['status']}, not {statuses}, after {timeout} s")
        time.sleep(0.05)


def wait_for(inbox: Inbox, count: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while len(inbox.envelopes) < count:
        if time.monotonic() > deadline:
            raise AssertionError(f"the sink has {len(inbox.envelopes)} of {count} messages after {timeout} s")
        time.sleep(0.05)


def split(content: bytes) -> tuple[list[bytes], bytes]:
    """The header lines (each with its line break) and the body of a message as sent."""
    head, _, body = content.partition(b"\r\n\r\n")
    return head.split(b"\r\n"), body


def queued_id(reply: str) -> str:
    match = QUEUED_AS.search(reply)
    assert match, reply
    return match.group(1)


def simple(sender: str = SENDER, to: str = "a@x.test", subject: str = "Hello") -> bytes:
    return f"From: {sender}\r\nTo: {to}\r\nSubject: {subject}\r\n\r\nHi there\r\n".encode()


# -- 1. Many messages over one session, delivered exactly once and as written ------------------------------


@dataclass(frozen=True)
class Written:
    seq: int
    headers: list[bytes]
    body: bytes
    recipients: list[str]
    message_id: str | None


def compose(seq: int) -> Written:
    """Message ``seq``: every third has a Bcc, every other its own Message-ID, and the body has lines that
    need dot-stuffing on both hops, 8-bit text and a line of 900 characters."""
    to, cc, bcc = f"to{seq}@x.test", f"cc{seq}@x.test", f"hidden{seq}@x.test"
    headers = [
        b"From: Example Portal <noreply@example.com>",
        f"To: Ann <{to}>".encode(),
        f"Subject: Message {seq} =?utf-8?q?gr=C3=BC=C3=9Fe?=".encode(),
        f"X-Seq: {seq}".encode(),
        b"Date: Mon, 30 Nov 2026 10:00:00 +0000",
        b"MIME-Version: 1.0",
        b"Content-Type: text/plain; charset=utf-8",
        b"Content-Transfer-Encoding: 8bit",
        b"X-Folded: first part",
        b"\tsecond part",
    ]
    recipients = [to]
    if seq % 2:
        headers.append(f"Cc: {cc}".encode())
        recipients.append(cc)
    message_id = f"<m{seq}.{uuid.uuid4().hex}@app.test>" if seq % 2 == 0 else None
    if message_id:
        headers.append(f"Message-ID: {message_id}".encode())
    if seq % 3 == 0:
        headers.insert(2, f"Bcc: {bcc}".encode())
        recipients.append(bcc)
    body = (
        f"Hello {seq},\r\n.a line that starts with a dot\r\n..and two\r\n.\r\n"
        f"Grüße, ünïcödé {seq}\r\n{'x' * 900}\r\n\r\nThe end.\r\n"
    ).encode()
    return Written(seq, headers, body, recipients, message_id)


@BOTH
async def test_200_messages_over_one_starttls_session_arrive_once_each_as_written(submission_server: Submission) -> None:
    sub = submission_server
    with smtp_peer() as (sink_port, inbox):
        portal = sub.portal(sink_port)
        created = sub.server.cli(
            "apikey", "create", "--portal", portal.hostname, "--email", portal.emails[Role.ADMIN], "--scope", "mail.send"
        )
        key = created.stdout.strip().splitlines()[-1]
        written = [compose(seq) for seq in range(200)]
        ids: dict[int, str] = {}
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=sub.port, tls_context=sub.tls(), start_tls=True, timeout=30)
        async with client:
            await client.login(portal.hostname, key)
            for w in written:
                errors, reply = await client.sendmail(SENDER, w.recipients, b"\r\n".join(w.headers) + b"\r\n\r\n" + w.body)
                assert errors == {}
                ids[w.seq] = queued_id(reply)
        assert len(set(ids.values())) == 200
        wait_for(inbox, 200)
        with portal.client(Role.ADMIN) as admin:
            shown = {seq: wait_status(admin, ids[seq], {"sent"}) for seq in ids}
        await asyncio.sleep(0.5)  # anything sent twice would have arrived by now
        envelopes = list(inbox.envelopes)
    assert len(envelopes) == 200
    by_seq = {int(re.search(rb"^X-Seq: (\d+)\r$", e.original_content or b"", re.MULTILINE).group(1)): e for e in envelopes}  # type: ignore[union-attr]
    assert sorted(by_seq) == list(range(200)), "a message arrived twice or not at all"
    for w in written:
        envelope = by_seq[w.seq]
        headers, body = split(envelope.original_content or b"")
        assert envelope.mail_from == SENDER
        assert sorted(envelope.rcpt_tos) == sorted(w.recipients)
        assert body == w.body
        for line in w.headers:
            if not line.startswith(b"Bcc:"):
                assert line in headers, (w.seq, line)
        assert not [h for h in headers if h.lower().startswith(b"bcc:")]
        message_ids = [h for h in headers if h.lower().startswith(b"message-id:")]
        assert len(message_ids) == 1
        received_id = message_ids[0].split(b":", 1)[1].strip().decode()
        if w.message_id:
            assert received_id == w.message_id
        assert re.fullmatch(r"<[^<>@\s]+@[^<>@\s]+>", received_id)
        dto = shown[w.seq]
        assert dto["messageId"] == received_id and dto["attempts"] == 1 and dto["smtpReply"].startswith("250")
        assert dto["to"] == [f"to{w.seq}@x.test"] and dto["subject"] == f"Message {w.seq} grüße"
        assert dto["cc"] == ([f"cc{w.seq}@x.test"] if w.seq % 2 else [])
    assert key not in sub.server.log_text()


# -- 2. Refusals ------------------------------------------------------------------------------------------


@BOTH
def test_keys_that_may_not_send_are_refused_with_535(submission_server: Submission) -> None:
    sub = submission_server
    with smtp_peer() as (sink_port, _):
        a, b = sub.portal(sink_port), sub.portal(sink_port)
        _, key_a = sub.key(a)
        revoked_id, revoked = sub.key(a)
        sub.server.cli("apikey", "revoke", revoked_id)
        _, users_full_key = sub.key(a, Role.USER, scope=None)
        _, admins_full_key = sub.key(a, Role.ADMIN, scope=None)
        for user, key in [(b.hostname, key_a), (a.hostname, revoked), (a.hostname, users_full_key)]:
            with sub.smtp(source()) as client:
                client.starttls(context=sub.tls())
                with pytest.raises(smtplib.SMTPAuthenticationError) as refused:
                    client.login(user, key)
                assert refused.value.smtp_code == 535, (user, refused.value)
                # The session stays usable but not signed in.
                assert client.mail(SENDER)[0] == 530
        for key in (key_a, admins_full_key):
            with sub.signed_in(source(), a, key) as client:
                assert client.sendmail(SENDER, ["a@x.test"], simple()) == {}
    log = sub.server.log_text()
    assert not [k for k in (key_a, revoked, users_full_key, admins_full_key) if k in log]


@SQLITE
def test_auth_needs_tls_except_from_the_trusted_networks(submission_server: Submission) -> None:
    sub = submission_server
    with smtp_peer() as (sink_port, inbox):
        portal = sub.portal(sink_port)
        _, key = sub.key(portal)
        plain = base64.b64encode(f"\0{portal.hostname}\0{key}".encode()).decode()
        with sub.smtp(source()) as remote:
            remote.ehlo()
            assert not remote.has_extn("auth") and remote.has_extn("starttls")
            code, text = remote.docmd("AUTH", "PLAIN " + plain)
            assert code == 538, text
            remote.starttls(context=sub.tls())
            remote.ehlo()
            assert set(remote.esmtp_features["auth"].split()) == {"PLAIN", "LOGIN"}
            remote.login(portal.hostname, key)
            assert remote.sendmail(SENDER, ["remote@x.test"], simple(to="remote@x.test")) == {}
        with sub.smtp("127.0.0.1") as local:  # trusted: plaintext AUTH is offered and works
            local.ehlo()
            assert local.has_extn("auth")
            local.login(portal.hostname, key)
            assert local.sendmail(SENDER, ["local@x.test"], simple(to="local@x.test")) == {}
        wait_for(inbox, 2)
    assert sorted(e.rcpt_tos[0] for e in inbox.envelopes) == ["local@x.test", "remote@x.test"]


@SQLITE
async def test_implicit_tls_port_signs_in_and_accepts(submission_server: Submission) -> None:
    sub = submission_server
    with smtp_peer() as (sink_port, inbox):
        portal = sub.portal(sink_port)
        _, key = sub.key(portal)
        client = aiosmtplib.SMTP(
            hostname="127.0.0.1", port=sub.tls_port, use_tls=True, tls_context=sub.tls(), source_address=(source(), 0)
        )
        async with client:
            await client.ehlo()
            assert client.supports_extension("auth") and not client.supports_extension("starttls")
            await client.login(portal.hostname, key)
            errors, reply = await client.sendmail(SENDER, ["a@x.test"], simple(subject="implicit"))
        assert errors == {}
        with portal.client(Role.ADMIN) as admin:
            assert wait_status(admin, queued_id(reply), {"sent"})["subject"] == "implicit"
    assert inbox.messages[0]["Subject"] == "implicit"


@SQLITE
def test_only_the_portals_sender_or_the_keys_user_may_send(submission_server: Submission) -> None:
    sub = submission_server
    with smtp_peer() as (sink_port, inbox):
        portal = sub.portal(sink_port)
        _, key = sub.key(portal)
        own = portal.emails[Role.ADMIN]
        with sub.signed_in(source(), portal, key) as client:
            code, text = client.mail("evil@example.com")
            assert code == 451 and text.startswith(b"4.7.1 ")  # the settings were saved a moment ago
            client.rset()
            backdate_settings_changes(sub.server, SENDER_GRACE)
            code, text = client.mail("evil@example.com")  # on the same connection: read at each MAIL
            assert code == 550 and text.startswith(b"5.7.1 ")
            assert SENDER.encode() in text and own.encode() in text and b"evil@example.com" in text
            client.rset()
            # The envelope is allowed, the From header is not.
            assert client.mail(SENDER)[0] == 250 and client.rcpt("a@x.test")[0] == 250
            code, text = client.data(simple(sender="Boss <boss@example.com>"))
            assert code == 550 and b"boss@example.com" in text and SENDER.encode() in text
            # The key's own user is allowed, as envelope and From, in any case.
            assert client.sendmail(own.upper(), ["b@x.test"], simple(sender=own, to="b@x.test")) == {}
            assert client.sendmail(SENDER, ["c@x.test"], simple(sender=f"Me <{own}>", to="c@x.test")) == {}
        wait_for(inbox, 2)
    assert sorted(e.rcpt_tos[0] for e in inbox.envelopes) == ["b@x.test", "c@x.test"]
    assert {e.mail_from for e in inbox.envelopes} == {SENDER}  # the envelope is always the portal's


@SQLITE
def test_a_portal_without_settings_is_400_over_http_but_451_on_the_port(submission_server: Submission) -> None:
    """The same refusal, two contracts: an HTTP client fixes its request; a relaying MTA keeps the mail."""
    sub = submission_server
    portal = make_portal(sub.server)  # no settings of its own, and this server has no default
    _, key = sub.key(portal)
    with portal.client(Role.ADMIN) as c:
        refused = c.post(MESSAGES, json={"to": ["a@x.test"], "subject": "s", "text": "x"})
    assert refused.status_code == 400
    assert refused.json()["error"]["message"] == "The portal has no SMTP settings to send with: save them first."
    with sub.signed_in(source(), portal, key) as client:
        assert client.mail(SENDER) == (451, b"4.3.5 The portal has no SMTP settings to send with: save them first.")


@SQLITE
def test_size_is_announced_and_enforced(submission_server: Submission) -> None:
    sub = submission_server
    with smtp_peer() as (sink_port, _):
        portal = sub.portal(sink_port)
        _, key = sub.key(portal)
        big = simple()[:-2] + (b"y" * 70 + b"\r\n") * (MAX_BYTES // 72 + 1)
        assert len(big) > MAX_BYTES
        with sub.signed_in(source(), portal, key) as client:
            client.ehlo()
            assert client.esmtp_features["size"] == str(MAX_BYTES)
            code, _ = client.mail(SENDER, [f"SIZE={len(big)}"])  # announced too large: refused at once
            assert code == 552
            client.rset()
            assert client.mail(SENDER)[0] == 250 and client.rcpt("a@x.test")[0] == 250
            code, _ = client.data(big)  # not announced: refused after the data
            assert code == 552
            assert client.sendmail(SENDER, ["a@x.test"], simple()) == {}  # and the session goes on
        with portal.client(Role.ADMIN) as admin:
            assert admin.get(MESSAGES).json()["total"] == 1


@SQLITE
def test_the_101st_recipient_is_452_and_100_are_delivered(submission_server: Submission) -> None:
    sub = submission_server
    with smtp_peer() as (sink_port, inbox):
        portal = sub.portal(sink_port)
        _, key = sub.key(portal)
        recipients = [f"r{i}@x.test" for i in range(101)]
        with sub.signed_in(source(), portal, key) as client:
            assert client.mail(SENDER)[0] == 250
            assert [client.rcpt(r)[0] for r in recipients[:100]] == [250] * 100
            code, text = client.rcpt(recipients[100])
            assert code == 452 and b"100" in text
            code, text = client.data(simple(to="r0@x.test"))
            assert code == 250, text
        wait_for(inbox, 1)
    assert sorted(inbox.envelopes[0].rcpt_tos) == sorted(recipients[:100])


@SQLITE
def test_failed_auth_uses_up_the_addresss_limit_then_454(submission_server: Submission) -> None:
    sub = submission_server
    with smtp_peer() as (sink_port, _):
        portal = sub.portal(sink_port)
        _, key = sub.key(portal)
        guesser = source()
        for attempt in range(FAILURES_PER_ADDRESS + 1):
            with sub.smtp(guesser) as client:
                client.starttls(context=sub.tls())
                client.ehlo()
                # One AUTH per attempt (smtplib's login() would try PLAIN, then LOGIN: two failures).
                # The last attempt has the right key: refused all the same, before it is looked at.
                client.user = portal.hostname
                client.password = key if attempt == FAILURES_PER_ADDRESS else f"sk-guess{attempt}"
                with pytest.raises(smtplib.SMTPAuthenticationError) as refused:
                    client.auth("PLAIN", client.auth_plain)
                if attempt < FAILURES_PER_ADDRESS:
                    assert refused.value.smtp_code == 535
                else:
                    assert refused.value.smtp_code == 454
                    assert re.search(rb"Retry in \d+ s\.", refused.value.smtp_error)
        with sub.signed_in(source(), portal, key) as client:  # another address is not affected
            assert client.noop()[0] == 250


def _auth_code(sub: Submission, source_address: str, portal: Portal, key: str) -> int:
    """The reply code of one AUTH PLAIN (smtplib's login() would try PLAIN, then LOGIN: two attempts)."""
    with sub.smtp(source_address) as client:
        client.starttls(context=sub.tls())
        client.ehlo()
        client.user, client.password = portal.hostname, key
        try:
            return client.auth("PLAIN", client.auth_plain)[0]
        except smtplib.SMTPAuthenticationError as refused:
            return refused.smtp_code


def _http_sign_in(sub: Submission, source_address: str, portal: Portal, password: str) -> int:
    """The status of one HTTP sign-in to the portal's owner, sent from ``source_address``."""
    transport = httpx.HTTPTransport(local_address=source_address)
    with portal.client(transport=transport) as c:
        body = {"userName": portal.emails[Role.OWNER], "password": password}
        return c.post("/api/2.0/authentication", json=body).status_code


@SQLITE
def test_wrong_smtp_auth_past_its_limit_never_stops_an_http_sign_in_from_that_host(submission_server: Submission) -> None:
    sub = submission_server
    with smtp_peer() as (sink_port, _):
        portal = sub.portal(sink_port)
        _, key = sub.key(portal)
        host = source()
        codes = [_auth_code(sub, host, portal, f"sk-guess{n}") for n in range(FAILURES_PER_ADDRESS + 1)]
        assert codes == [535] * FAILURES_PER_ADDRESS + [454]
        assert _auth_code(sub, host, portal, key) == 454  # the host's SMTP clients are locked out...
        assert _http_sign_in(sub, host, portal, PASSWORD) == 200  # ...its administrator's browser is not


@SQLITE
def test_wrong_http_sign_ins_past_their_limit_never_stop_smtp_auth_from_that_host(submission_server: Submission) -> None:
    sub = submission_server
    with smtp_peer() as (sink_port, _):
        portal = sub.portal(sink_port)
        _, key = sub.key(portal)
        host = source()
        statuses = [_http_sign_in(sub, host, portal, f"wrong {n}") for n in range(FAILURES_PER_ADDRESS + 1)]
        assert statuses == [401] * FAILURES_PER_ADDRESS + [429]
        assert _auth_code(sub, host, portal, key) == 235


@SQLITE
def test_a_stale_key_locks_out_itself_while_other_keys_work_until_the_addresss_limit(submission_server: Submission) -> None:
    sub = submission_server
    with smtp_peer() as (sink_port, _):
        portal = sub.portal(sink_port)
        _, stale = sub.key(portal)
        _, other = sub.key(portal)
        host = source()
        mistyped = stale[:-4] + ("AAAA" if not stale.endswith("AAAA") else "BBBB")  # its id, a wrong secret
        codes = [_auth_code(sub, host, portal, mistyped) for _ in range(FAILURES_PER_KEY + 1)]
        assert codes == [535] * FAILURES_PER_KEY + [454]  # the last one refused before it was looked at
        assert _auth_code(sub, host, portal, stale) == 454  # the key itself is locked, from anywhere
        assert _auth_code(sub, source(), portal, stale) == 454
        assert _auth_code(sub, host, portal, other) == 235  # the host is not
        for n in range(FAILURES_PER_ADDRESS - FAILURES_PER_KEY):
            assert _auth_code(sub, host, portal, f"sk-guess{n}") == 535
        assert _auth_code(sub, host, portal, other) == 454  # now the host's limit is used up


@SQLITE
def test_the_key_never_appears_in_the_log(submission_server: Submission) -> None:
    sub = submission_server
    with smtp_peer() as (sink_port, _):
        portal, other = sub.portal(sink_port), sub.portal(sink_port)
        _, key = sub.key(portal)
        for method, initial in (("PLAIN", True), ("LOGIN", False)):  # LOGIN: user name and key answer challenges
            for hostname, expected in ((portal.hostname, 235), (other.hostname, 535)):
                with sub.smtp(source()) as client:
                    client.starttls(context=sub.tls())
                    client.ehlo()
                    client.user, client.password = hostname, key
                    mechanism = getattr(client, "auth_" + method.lower())
                    try:
                        code = client.auth(method, mechanism, initial_response_ok=initial)[0]
                    except smtplib.SMTPAuthenticationError as refused:
                        code = refused.smtp_code
                    assert code == expected, (method, hostname)
    log = sub.server.log_text()
    encoded = [base64.b64encode(key.encode()).decode(), base64.b64encode(f"\0{portal.hostname}\0{key}".encode()).decode()]
    assert key not in log and not [e for e in encoded if e in log]
    assert "submission_signed_in" in log and "submission_auth_refused" in log


@SQLITE
def test_bcc_in_any_spelling_never_arrives_and_a_received_field_does(submission_server: Submission) -> None:
    sub = submission_server
    with smtp_peer() as (sink_port, inbox):
        portal = sub.portal(sink_port)
        _, key = sub.key(portal)
        hidden = ["h1@x.test", "h2@x.test", "h3@x.test", "h4@x.test"]
        content = (
            b"From : noreply@example.com\r\nTo: a@x.test\r\nBcc : h1@x.test\r\nBcc\t: h2@x.test\r\n"
            b"Resent-Bcc: h3@x.test\r\nresent-bcc :\r\n h4@x.test\r\nSubject: hidden\r\n\r\nBcc: body text\r\n"
        )
        client_address = source()
        with sub.signed_in(client_address, portal, key) as client:
            assert client.mail(SENDER)[0] == 250
            assert all(client.rcpt(r)[0] == 250 for r in ["a@x.test", *hidden])
            code, reply = client.data(content)
            assert code == 250
        wait_for(inbox, 1)
    [envelope] = inbox.envelopes
    arrived = envelope.original_content or b""
    headers, body = split(arrived)
    assert sorted(envelope.rcpt_tos) == sorted(["a@x.test", *hidden])
    assert not [h for h in headers if re.match(rb"(?i)(resent-)?bcc[ \t]*:|[ \t]+h4@", h)], headers
    assert b"h1@" not in arrived and b"h3@" not in arrived and b"h4@" not in arrived and body == b"Bcc: body text\r\n"
    # The Received field is on top: who handed it over, from where, and the id the client was given.
    trace = re.match(rb"Received: from (\S+) \(\[([^]]+)\]\)\r\n\tby (\S+) \(smtpsettings\) with (\w+) id (\w+);\r\n\t", arrived)
    assert trace, arrived[:300]
    assert trace.group(2).decode() == client_address and trace.group(4) == b"ESMTPSA"
    assert trace.group(5).decode() == queued_id(reply.decode())


@SQLITE
def test_a_portal_that_sends_through_its_own_submission_port_is_refused_as_a_loop(submission_server: Submission) -> None:
    sub = submission_server
    with smtp_peer() as (sink_port, inbox):
        portal = sub.portal(sink_port)
        _, key = sub.key(portal)
        loop = settings_for(sub.port, enableAuth=True, credentialsUserName=portal.hostname, credentialsUserPassword=key)
        with portal.client(Role.ADMIN) as admin:
            assert admin.post(SETTINGS, json=loop).status_code == 200
            with sub.signed_in(source(), portal, key) as client:
                queued = queued_id(_send(client, "round and round"))
            shown = wait_status(admin, queued, {"failed"})
        assert shown["smtpReply"].startswith("554 5.4.6 ") and shown["attempts"] == 1, shown
        with portal.client(Role.ADMIN) as admin:
            assert admin.get(MESSAGES).json()["total"] == 1  # the message that came back was not accepted again
    assert inbox.envelopes == []


# -- 3. The settings as saved at delivery time ---------------------------------------------------------------


@SQLITE
def test_each_message_leaves_through_the_settings_saved_when_it_is_delivered(submission_server: Submission) -> None:
    sub = submission_server
    relay_login = ("relay-user", "relay-Secret-1")
    with smtp_peer() as (port_a, inbox_a), smtp_peer(auth=relay_login) as (port_b, inbox_b):
        portal = sub.portal(port_a)
        _, key = sub.key(portal)
        with portal.client(Role.ADMIN) as admin, sub.signed_in(source(), portal, key) as client:
            first = queued_id(_send(client, "first"))
            wait_status(admin, first, {"sent"})
            # Nothing listens here: the next message is accepted, tried and deferred.
            assert admin.post(SETTINGS, json=settings_for(closed_port())).status_code == 200
            second = queued_id(_send(client, "second"))
            assert wait_status(admin, second, {"deferred"})["attempts"] >= 1
            # Saved while it waits: its next attempt goes to the new server, with AUTH.
            changed = settings_for(
                port_b, enableAuth=True, credentialsUserName=relay_login[0], credentialsUserPassword=relay_login[1]
            )
            assert admin.post(SETTINGS, json=changed).status_code == 200
            assert wait_status(admin, second, {"sent"})["attempts"] >= 2
            third = queued_id(_send(client, "third"))
            assert wait_status(admin, third, {"sent"})["attempts"] == 1
    assert [m["Subject"] for m in inbox_a.messages] == ["first"]
    assert [m["Subject"] for m in inbox_b.messages] == ["second", "third"]
    assert {e.mail_from for e in inbox_a.envelopes + inbox_b.envelopes} == {SENDER}


def _send(client: smtplib.SMTP, subject: str) -> str:
    """Send one message with smtplib and return the 250 reply to DATA (sendmail does not return it)."""
    assert client.mail(SENDER)[0] == 250 and client.rcpt("a@x.test")[0] == 250
    code, text = client.data(simple(subject=subject))
    assert code == 250, text
    return text.decode()


# -- 4. Idle connections, and the ports at start ---------------------------------------------------------------


def test_an_idle_connection_is_closed_after_the_idle_timeout(tmp_path: Path, ca: trustme.CA) -> None:
    srv = start_server(tmp_path / "data", submission_env(tmp_path, ca, SMTPSETTINGS_SUBMISSION_IDLE_TIMEOUT="1"))
    port = int(srv.env["SMTPSETTINGS_SUBMISSION_PORT"])
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=20) as raw:
            assert raw.recv(1024).startswith(b"220 ")
            assert raw.recv(1024) == b""  # the server closed it; a live connection would block until the timeout
        with smtplib.SMTP("127.0.0.1", port, timeout=20) as client:
            assert client.ehlo()[0] == 250
            time.sleep(3)
            with pytest.raises(smtplib.SMTPServerDisconnected):
                client.noop()
    finally:
        srv.stop()


def test_a_silent_client_of_the_implicit_tls_port_is_closed_after_the_idle_timeout(tmp_path: Path, ca: trustme.CA) -> None:
    """A connection that never starts its handshake holds its slot no longer than an idle session would."""
    env = submission_env(
        tmp_path,
        ca,
        SMTPSETTINGS_SUBMISSION_TLS_PORT=str(free_port()),
        SMTPSETTINGS_SUBMISSION_IDLE_TIMEOUT="1",
        SMTPSETTINGS_SUBMISSION_MAX_CONNECTIONS="1",
    )
    srv = start_server(tmp_path / "data", env)
    tls_port = int(env["SMTPSETTINGS_SUBMISSION_TLS_PORT"])
    try:
        with socket.create_connection(("127.0.0.1", tls_port), timeout=20) as silent:
            assert silent.recv(1024) == b""  # closed by the server; an open one would block until the timeout
        deadline = time.monotonic() + 20
        with _greeted(int(env["SMTPSETTINGS_SUBMISSION_PORT"]), deadline) as raw:  # its only slot is free again
            raw.sendall(b"QUIT\r\n")
    finally:
        srv.stop()
    assert '"reason":"ConnectionAbortedError"' in srv.log_text()


def test_connections_past_the_cap_are_answered_421_and_the_held_ones_still_work(tmp_path: Path, ca: trustme.CA) -> None:
    srv = start_server(tmp_path / "data", submission_env(tmp_path, ca, SMTPSETTINGS_SUBMISSION_MAX_CONNECTIONS="2"))
    port = int(srv.env["SMTPSETTINGS_SUBMISSION_PORT"])
    try:
        held = [socket.create_connection(("127.0.0.1", port), timeout=20) for _ in range(2)]
        for raw in held:
            assert raw.recv(1024).startswith(b"220 ")
        with socket.create_connection(("127.0.0.1", port), timeout=20) as extra:
            assert extra.recv(1024).startswith(b"421 ")
            assert extra.recv(1024) == b""
        held[0].sendall(b"EHLO client.test\r\n")
        assert held[0].recv(1024).startswith(b"250")
        held[1].close()
        time.sleep(0.2)  # its slot is free again once the server has seen the close
        with smtplib.SMTP("127.0.0.1", port, timeout=20) as client:
            assert client.ehlo()[0] == 250
        held[0].close()
    finally:
        srv.stop()


def serve(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("SMTPSETTINGS_")}
    environ.update({"SMTPSETTINGS_DATA_DIR": str(tmp_path / "data"), **env})
    command = [*smtpsettings_command(), "serve", "--port", str(free_port()), *args]
    return subprocess.run(command, env=environ, capture_output=True, text=True, timeout=30, check=False)


def test_a_taken_submission_port_stops_serve_with_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = serve(tmp_path, "--submission-port", str(port))
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1 and f"127.0.0.1:{port}" in result.stderr, result.stderr
    assert "Password" not in result.stdout  # stopped before the first start made an owner


def test_an_implicit_tls_port_without_a_certificate_stops_serve_with_one_line(tmp_path: Path) -> None:
    result = serve(tmp_path, SMTPSETTINGS_SUBMISSION_TLS_PORT=str(free_port()))
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1 and "SMTPSETTINGS_SUBMISSION_TLS_CERT" in result.stderr, result.stderr


@SQLITE
def test_a_sign_in_adds_no_plain_text_line_to_the_json_log(submission_server: Submission) -> None:
    sub = submission_server
    with smtp_peer() as (sink_port, _):
        portal = sub.portal(sink_port)
        _, key = sub.key(portal)
        with sub.signed_in(source(), portal, key) as client:
            assert client.noop()[0] == 250
    # aiosmtpd warns of its deprecated Session.login_data after every AUTH, unless its log is kept to errors.
    assert "Session.login_data is deprecated" not in sub.server.log_text()


# -- 5. The implicit-TLS port under connections that never finish a handshake ------------------------------------


def _bad_connection(port: int, kind: int) -> None:
    """One connection that never becomes a TLS session: closed at once, reset, or plain text instead of TLS."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=20)
    if kind == 1:  # a reset rather than a close (SO_LINGER 0)
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, (1).to_bytes(4, "little") + (0).to_bytes(4, "little"))
    elif kind == 2:
        raw.sendall(b"EHLO client.test\r\n")
    raw.close()


def _greeted(port: int, deadline: float) -> socket.socket:
    """A connection the server greeted with 220, trying again while it answers 421 (slots not yet freed)."""
    while True:
        raw = socket.create_connection(("127.0.0.1", port), timeout=20)
        if raw.recv(1024).startswith(b"220 "):
            return raw
        raw.close()
        assert time.monotonic() < deadline, "no slot became free"
        time.sleep(0.2)


def _hold(sub: Submission, count: int) -> list[ssl.SSLSocket] | None:
    """``count`` TLS sessions on the implicit-TLS port, each greeted with 220; None if any was not let in."""
    held: list[ssl.SSLSocket] = []
    try:
        for _ in range(count):
            raw = socket.create_connection(("127.0.0.1", sub.tls_port), timeout=20)
            held.append(sub.tls().wrap_socket(raw, server_hostname="localhost"))
            if not held[-1].recv(1024).startswith(b"220 "):
                raise ConnectionError("not greeted")
    except (OSError, ConnectionError):
        for conn in held:
            conn.close()
        return None
    return held


def test_a_thousand_failed_handshakes_leave_every_slot_free_and_the_log_json(tmp_path: Path, ca: trustme.CA) -> None:
    cap = 5
    env = submission_env(
        tmp_path, ca, SMTPSETTINGS_SUBMISSION_TLS_PORT=str(free_port()), SMTPSETTINGS_SUBMISSION_MAX_CONNECTIONS=str(cap)
    )
    srv = start_server(tmp_path / "data", env)
    sub = Submission(srv, int(env["SMTPSETTINGS_SUBMISSION_PORT"]), int(env["SMTPSETTINGS_SUBMISSION_TLS_PORT"]), ca)
    try:
        for batch in range(20):  # 50 at a time, so that many are open together
            opened = [(socket.create_connection(("127.0.0.1", sub.tls_port), timeout=20), n) for n in range(50)]
            for raw, n in opened:
                raw.close()
                _bad_connection(sub.tls_port, (batch + n) % 3)
        deadline = time.monotonic() + 30
        for _ in range(30):  # and handshakes after STARTTLS on the other port that fail the same ways
            with _greeted(sub.port, deadline) as raw:
                raw.sendall(b"EHLO client.test\r\n")
                while not re.search(rb"^250 ", raw.recv(4096), re.MULTILINE):
                    pass
                raw.sendall(b"STARTTLS\r\n")
                assert raw.recv(1024).startswith(b"220 ")
                raw.sendall(b"this is not a ClientHello\r\n")
        # The server sees each end shortly after it happens: within a bounded time every slot is free, which
        # is shown by holding all of them at once, and by the next connection being one too many.
        deadline = time.monotonic() + 30
        while (held := _hold(sub, cap)) is None:
            assert time.monotonic() < deadline, "the slots were not given back"
            time.sleep(0.2)
        with socket.create_connection(("127.0.0.1", sub.port), timeout=20) as extra:
            assert extra.recv(1024).startswith(b"421 ")
        with socket.create_connection(("127.0.0.1", sub.tls_port), timeout=20) as extra:
            with pytest.raises(OSError):  # closed before any handshake: no plain-text reply on the TLS port
                sub.tls().wrap_socket(extra, server_hostname="localhost").recv(1024)
        for conn in held:
            conn.close()
        deadline = time.monotonic() + 30
        while True:  # the held sessions' slots come back too, and a STARTTLS client gets in
            try:
                with smtplib.SMTP("127.0.0.1", sub.port, timeout=20) as client:
                    client.starttls(context=sub.tls())
                    assert client.ehlo()[0] == 250
                break
            except smtplib.SMTPConnectError:
                assert time.monotonic() < deadline, "the held sessions' slots were not given back"
                time.sleep(0.2)
    finally:
        srv.stop()
    lines = srv.log_text()[len(srv.stdout) :].splitlines()
    entries = [json.loads(line) for line in lines]  # every line is one JSON object: no traceback, no plain text
    assert all(isinstance(e, dict) for e in entries)
    failed = [e for e in entries if e["event"] == "submission_tls_handshake_failed"]
    assert failed and {e["level"] for e in failed} == {"info"}
    assert not [e for e in entries if e["level"] in ("error", "critical")], entries


def test_a_full_queue_is_452_4_3_1_at_mail_or_at_data_and_keeps_what_it_had(tmp_path: Path, ca: trustme.CA) -> None:
    """2 unsent messages or 6,000 unsent bytes per portal; delivery fails to connect and waits an hour, so the
    accepted mail stays unsent."""
    env = submission_env(
        tmp_path,
        ca,
        SMTPSETTINGS_OUTBOX_MAX_QUEUED_MESSAGES="2",
        SMTPSETTINGS_OUTBOX_MAX_QUEUED_BYTES="6000",
        SMTPSETTINGS_OUTBOX_FIRST_RETRY_SECONDS="3600",
        SMTPSETTINGS_SMTP_CONNECT_TIMEOUT="2",
    )
    srv = start_server(tmp_path / "data", env)
    try:
        sub = Submission(srv, int(env["SMTPSETTINGS_SUBMISSION_PORT"]), 0, ca)
        portal = sub.portal(closed_port())
        _, key = sub.key(portal)
        large = simple()[:-2] + (b"y" * 70 + b"\r\n") * 90  # about 6,500 bytes: past the limit beside anything
        with sub.signed_in(source(), portal, key) as client:
            first = queued_id(_send(client, "first"))
            code, text = client.mail(SENDER, [f"SIZE={len(large)}"])  # declared: refused before the data
            assert code == 452 and text.startswith(b"4.3.1 ") and b"outbox is full" in text, text
            client.rset()
            assert client.mail(SENDER)[0] == 250 and client.rcpt("a@x.test")[0] == 250
            code, text = client.data(large)  # not declared: refused once it is here
            assert code == 452 and text.startswith(b"4.3.1 "), text
            second = queued_id(_send(client, "second"))  # a small one still fits
            code, text = client.mail(SENDER)  # at the message limit: refused at once
            assert code == 452 and text.startswith(b"4.3.1 ") and b"2 messages" in text, text
            client.rset()
            with portal.client(Role.ADMIN) as admin:
                assert {wait_status(admin, i, {"deferred"})["id"] for i in (first, second)} == {first, second}
                assert admin.get(MESSAGES).json()["total"] == 2
                assert admin.delete(f"{MESSAGES}/{first}").status_code == 200
            queued_id(_send(client, "third"))  # room again once one left the queue
    finally:
        srv.stop()
