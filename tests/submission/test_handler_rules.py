"""The submission port's decisions one command at a time: the reply table, and the handler's AUTH and RCPT
rules driven over a real socket by aiosmtplib, with the real services on a SQLite database in this process.

No TLS certificate is configured and the client is on loopback (trusted by default), so AUTH works in plain
text here; TLS and everything across processes is in ``tests/e2e/test_submission.py``.
"""

from __future__ import annotations

import base64
import json
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiosmtplib
import pytest
import sqlalchemy as sa

from smtpsettings.config import load_settings
from smtpsettings.crypto import DecryptionError
from smtpsettings.domain.accounts import Role
from smtpsettings.domain.errors import (
    AccessDenied,
    BadArgument,
    Conflict,
    NotAuthenticated,
    NotConfigured,
    NotFound,
    SenderInFlux,
    TooLarge,
    TooManyRequests,
    ValidationFailed,
)
from smtpsettings.domain.smtp import SmtpSettings
from smtpsettings.domain.submission import NULL_SENDER_REFUSAL, SENDER_GRACE
from smtpsettings.services.accounts import AccountsService
from smtpsettings.store import ratelimit
from smtpsettings.store import smtp as smtp_store
from smtpsettings.store.database import StoreUnavailable
from smtpsettings.store.tables import api_keys, audit_log, outbox_messages, portals
from smtpsettings.submission.replies import reply_for
from smtpsettings.submission.server import SubmissionServer
from smtpsettings.wiring import Services

SENDER = "noreply@example.com"

# -- the reply table --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "prefix"),
    [
        (NotAuthenticated("User authentication failed"), "535 5.7.8 "),
        (AccessDenied(), "535 5.7.8 "),
        (TooLarge("The message is larger than 10 MiB."), "552 5.3.4 "),
        (NotFound("no such portal"), "550 5.1.1 "),
        (BadArgument("The sender x@y is not allowed here."), "550 5.7.1 "),
        (ValidationFailed({"To": ["bad"]}), "550 5.7.1 "),
        (StoreUnavailable("The database did not answer in time."), "451 4.3.0 "),
        (DecryptionError("cannot decrypt"), "451 4.3.0 "),
        (Conflict("busy"), "451 4.3.0 "),
        (NotConfigured("The portal has no SMTP settings to send with: save them first."), "451 4.3.5 "),
        (SenderInFlux("The sender x@y is not allowed here; the settings just changed."), "451 4.7.1 "),
    ],
)
def test_each_error_has_its_code_and_enhanced_status(error: Exception, prefix: str) -> None:
    reply = reply_for(error)
    assert reply.startswith(prefix) and len(reply) > len(prefix)


def test_a_rate_limit_is_454_and_says_when_to_retry() -> None:
    assert reply_for(TooManyRequests("Too many failed sign-in attempts.", 42)) == (
        "454 4.7.0 Too many failed sign-in attempts. Retry in 42 s."
    )


def test_a_reply_is_one_line_whatever_the_message() -> None:
    reply = reply_for(BadArgument("first line\r\nsecond\tline\n"))
    assert reply == "550 5.7.1 first line second line"


def test_an_unexpected_error_says_nothing_of_itself() -> None:
    reply = reply_for(RuntimeError("password=hunter2 at /srv/secret"))
    assert reply.startswith("451 4.3.0 ") and "hunter2" not in reply and "/srv" not in reply


# -- the handler, in this process -------------------------------------------------------------------------


@dataclass
class Port:
    port: int
    hostname: str
    key: str
    services: Services

    def client(self) -> aiosmtplib.SMTP:
        return aiosmtplib.SMTP(hostname="127.0.0.1", port=self.port, start_tls=False, timeout=10)

    def stored(self) -> list[dict[str, object]]:
        def read(conn: sa.Connection) -> list[dict[str, object]]:
            return [dict(r._mapping) for r in conn.execute(sa.select(outbox_messages))]

        return self.services.db.read_sync(read)


@pytest.fixture
async def port(tmp_path: Path) -> AsyncIterator[Port]:
    """A submission port on a free loopback port, its portal sending through the server-wide default."""
    default = {"SMTPSETTINGS_DEFAULT_SMTP_HOST": "127.0.0.1", "SMTPSETTINGS_DEFAULT_SMTP_SENDER_ADDRESS": SENDER}
    async for serving in _serving(tmp_path, default):
        yield serving


@pytest.fixture
async def bare_port(tmp_path: Path) -> AsyncIterator[Port]:
    """As ``port``, but no server-wide default: the portal cannot send until its own settings are stored."""
    async for serving in _serving(tmp_path, {}):
        yield serving


async def _serving(tmp_path: Path, default: dict[str, str]) -> AsyncIterator[Port]:
    settings = load_settings(
        {"SMTPSETTINGS_DATA_DIR": str(tmp_path), "SMTPSETTINGS_LOGIN_MAX_FAILURES_PER_ADDRESS": "1000", **default}
    )
    services = Services(settings)
    services.db.migrate()
    accounts = AccountsService(services.db)
    accounts.create_portal("one.test", is_default=False)
    accounts.create_user("one.test", email="app@one.test", password="correct horse battery", role=Role.ADMIN)
    _, key = accounts.create_api_key("one.test", "app@one.test", "mail.send")
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    server = SubmissionServer(settings, services.auth, services.outbox)
    await server.start([(listener, False)])
    try:
        yield Port(listener.getsockname()[1], "one.test", key, services)
    finally:
        await server.stop()
        await services.db.dispose_async()


async def test_auth_plain_with_and_without_an_initial_response(port: Port) -> None:
    blob = base64.b64encode(f"\0{port.hostname}\0{port.key}".encode()).decode()
    async with port.client() as client:
        await client.ehlo()
        assert (await client.execute_command(b"AUTH", b"PLAIN", blob.encode())).code == 235
    async with port.client() as client:
        await client.ehlo()
        assert (await client.execute_command(b"AUTH", b"PLAIN")).code == 334  # asks for it
        assert (await client.execute_command(blob.encode())).code == 235


async def test_auth_login_answers_both_challenges(port: Port) -> None:
    async with port.client() as client:
        await client.ehlo()
        challenge = await client.execute_command(b"AUTH", b"LOGIN")
        assert challenge.code == 334 and base64.b64decode(challenge.message) == b"Username:"
        challenge = await client.execute_command(base64.b64encode(port.hostname.encode()))
        assert challenge.code == 334 and base64.b64decode(challenge.message) == b"Password:"
        assert (await client.execute_command(base64.b64encode(port.key.encode()))).code == 235


@pytest.mark.parametrize(
    "argument",
    [
        b"not base64!",
        base64.b64encode(b"one.test\0sk-only-two-parts"),  # PLAIN needs authzid NUL user NUL password
        b"=",  # an empty initial response
        base64.b64encode(b"\0\xff\xfe\0sk-x"),  # not UTF-8
    ],
)
async def test_malformed_plain_credentials_are_501_and_the_session_goes_on(port: Port, argument: bytes) -> None:
    async with port.client() as client:
        await client.ehlo()
        assert (await client.execute_command(b"AUTH", b"PLAIN", argument)).code == 501
        await client.login(port.hostname, port.key)  # a correct AUTH afterwards still works


async def test_a_wrong_key_is_535_and_counts_as_a_failed_smtp_sign_in_only(port: Port) -> None:
    async with port.client() as client:
        await client.ehlo()
        blob = base64.b64encode(f"\0{port.hostname}\0sk-{'0' * 40}".encode())
        reply = await client.execute_command(b"AUTH", b"PLAIN", blob)
        assert reply.code == 535 and "authentication failed" in reply.message.lower()
    smtp_counted = port.services.db.read_sync(lambda c: ratelimit.count(c, "smtp:address:127.0.0.1", 900)[0])
    http_counted = port.services.db.read_sync(lambda c: ratelimit.count(c, "login:address:127.0.0.1", 900)[0])
    assert (smtp_counted, http_counted) == (1, 0)


async def test_a_disabled_users_key_is_refused_until_the_user_is_enabled_and_its_use_is_recorded(port: Port) -> None:
    accounts = AccountsService(port.services.db)
    last_used = sa.select(api_keys.c.last_used_at)
    assert port.services.db.read_sync(lambda c: c.execute(last_used).scalar()) is None
    accounts.disable_user(port.hostname, "app@one.test")
    async with port.client() as client:
        await client.ehlo()
        with pytest.raises(aiosmtplib.SMTPAuthenticationError) as refused:
            await client.login(port.hostname, port.key)
        assert refused.value.code == 535
    assert port.services.db.read_sync(lambda c: c.execute(last_used).scalar()) is None
    accounts.enable_user(port.hostname, "app@one.test")
    async with port.client() as client:
        await client.ehlo()
        await client.login(port.hostname, port.key)
    assert port.services.db.read_sync(lambda c: c.execute(last_used).scalar()) is not None


async def test_mail_before_auth_is_refused(port: Port) -> None:
    async with port.client() as client:
        await client.ehlo()
        with pytest.raises(aiosmtplib.SMTPSenderRefused) as refused:
            await client.mail(SENDER)
        assert refused.value.code == 530


async def test_recipients_are_checked_and_each_is_kept_once(port: Port) -> None:
    async with port.client() as client:
        await client.ehlo()
        await client.login(port.hostname, port.key)
        await client.mail(SENDER)
        with pytest.raises(aiosmtplib.SMTPRecipientRefused) as refused:
            await client.rcpt("not an address")
        assert refused.value.code == 553
        for address in ("a@x.test", "A@X.test", "b@x.test"):
            assert (await client.rcpt(address)).code == 250
        reply = await client.data(b"From: noreply@example.com\r\nTo: a@x.test\r\nSubject: once\r\n\r\nbody\r\n")
        assert reply.code == 250 and reply.message.startswith("2.0.0 Queued as ")
    [row] = port.stored()
    assert json.loads(str(row["recipients"])) == ["a@x.test", "b@x.test"] and row["sender"] == SENDER
    assert row["id"] == reply.message.rsplit(" ", 1)[1] and row["status"] == "queued" and row["subject"] == "once"


async def test_auth_plain_for_another_identity_is_refused_and_for_the_same_one_accepted(port: Port) -> None:
    """RFC 4616: the authorization identity, when given, is who the client acts as; a key acts as its portal only."""
    async with port.client() as client:
        await client.ehlo()
        other = base64.b64encode(f"two.test\0{port.hostname}\0{port.key}".encode())
        reply = await client.execute_command(b"AUTH", b"PLAIN", other)
        assert reply.code == 535 and "authorization identity" in reply.message
        same = base64.b64encode(f"{port.hostname}\0{port.hostname}\0{port.key}".encode())
        assert (await client.execute_command(b"AUTH", b"PLAIN", same)).code == 235


async def test_a_non_ascii_address_needs_the_smtputf8_parameter(port: Port) -> None:
    async with port.client() as client:
        await client.ehlo()
        await client.login(port.hostname, port.key)
        reply = await client.execute_command(b"MAIL FROM:<app@one.test>")
        assert reply.code == 250
        reply = await client.execute_command("RCPT TO:<zoë@x.test>".encode())
        assert reply.code == 553 and reply.message.startswith("5.6.7 ")
        await client.rset()
        reply = await client.execute_command("MAIL FROM:<jörg@one.test>".encode())
        assert reply.code == 553 and reply.message.startswith("5.6.7 ")
        # With SMTPUTF8 the same recipient is taken.
        assert (await client.execute_command(b"MAIL FROM:<app@one.test> SMTPUTF8")).code == 250
        assert (await client.execute_command("RCPT TO:<zoë@x.test>".encode())).code == 250


# -- MAIL: which refusals are temporary -------------------------------------------------------------------


def store_settings(port: Port, sender: str, *, changed_ago: timedelta | None) -> None:
    """The portal's own settings as a save leaves them, its audit entry ``changed_ago`` (None: no entry)."""
    settings = SmtpSettings(
        host="127.0.0.1", port=25, sender_address=sender, sender_display_name="", credentials_user_name="",
        enable_ssl=False, enable_auth=False, use_ntlm=False,
    )

    def write(conn: sa.Connection) -> None:
        portal_id = conn.execute(sa.select(portals.c.id).where(portals.c.hostname == port.hostname)).scalar_one()
        smtp_store.put_settings(conn, portal_id, settings, None)
        if changed_ago is not None:
            smtp_store.add_audit_entry(
                conn, portal_id, user_id=None, user_email="admin@one.test", action="save", changed=["senderAddress"], client_address="127.0.0.1"
            )
            conn.execute(audit_log.update().values(created_at=datetime.now(UTC) - changed_ago))

    port.services.db.write_sync(write)


async def mail_reply(client: aiosmtplib.SMTP, sender: str) -> tuple[int, str]:
    reply = await client.execute_command(b"MAIL", b"FROM:<" + sender.encode() + b">")
    return reply.code, reply.message


async def test_a_portal_without_settings_is_451_4_3_5_until_they_are_saved_on_the_same_connection(bare_port: Port) -> None:
    async with bare_port.client() as client:
        await client.ehlo()
        await client.login(bare_port.hostname, bare_port.key)
        code, message = await mail_reply(client, "app@one.test")  # the key's user: allowed once there are settings
        assert (code, message) == (451, "4.3.5 The portal has no SMTP settings to send with: save them first.")
        store_settings(bare_port, SENDER, changed_ago=timedelta(0))
        assert (await client.mail(SENDER)).code == 250  # read at MAIL, not at AUTH
    assert bare_port.stored() == []


async def test_a_transaction_sends_with_the_settings_its_mail_read_and_the_next_mail_reads_them_again(bare_port: Port) -> None:
    """One settings read per transaction: a save between MAIL and DATA applies from the next MAIL on."""
    message = b"From: app@one.test\r\nTo: someone@example.test\r\nSubject: hi\r\n\r\nHello.\r\n"
    store_settings(bare_port, "first@one.test", changed_ago=None)
    async with bare_port.client() as client:
        await client.ehlo()
        await client.login(bare_port.hostname, bare_port.key)
        assert (await client.mail("app@one.test")).code == 250
        assert (await client.rcpt("someone@example.test")).code == 250
        store_settings(bare_port, "second@one.test", changed_ago=None)
        assert (await client.data(message)).code == 250
        assert [row["sender"] for row in bare_port.stored()] == ["first@one.test"]
        assert (await client.mail("app@one.test")).code == 250
        assert (await client.rcpt("someone@example.test")).code == 250
        assert (await client.data(message)).code == 250
    assert sorted(row["sender"] for row in bare_port.stored()) == ["first@one.test", "second@one.test"]


IN_FLUX = (
    "4.7.1 The sender old@one.test is not allowed here: send as new@one.test or app@one.test; "
    "the portal's settings changed in the last 10 minutes, so try again later."
)


@pytest.mark.parametrize(
    ("changed_ago", "expected"),
    [
        (None, (550, "5.7.1 The sender old@one.test is not allowed here: send as new@one.test or app@one.test.")),
        (timedelta(minutes=1), (451, IN_FLUX)),
        (SENDER_GRACE + timedelta(seconds=5), (550, "5.7.1 The sender old@one.test is not allowed here: send as new@one.test or app@one.test.")),
    ],
)
async def test_a_sender_not_allowed_is_temporary_only_just_after_the_settings_changed(
    bare_port: Port, changed_ago: timedelta | None, expected: tuple[int, str]
) -> None:
    store_settings(bare_port, "new@one.test", changed_ago=changed_ago)
    async with bare_port.client() as client:
        await client.ehlo()
        await client.login(bare_port.hostname, bare_port.key)
        assert await mail_reply(client, "old@one.test") == expected
        assert (await client.execute_command(b"RSET")).code == 250
        assert (await client.mail("NEW@one.test")).code == 250


async def test_the_null_sender_is_refused_for_good_even_right_after_a_change(bare_port: Port) -> None:
    store_settings(bare_port, SENDER, changed_ago=timedelta(0))
    async with bare_port.client() as client:
        await client.ehlo()
        await client.login(bare_port.hostname, bare_port.key)
        reply = await client.execute_command(b"MAIL", b"FROM:<>")
        assert (reply.code, reply.message) == (550, "5.7.1 " + NULL_SENDER_REFUSAL)
    assert bare_port.stored() == []
