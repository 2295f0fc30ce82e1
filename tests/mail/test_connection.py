"""SmtpConnection against real aiosmtpd servers on 127.0.0.1: many messages over one session."""

from __future__ import annotations

import asyncio
import email
import email.policy
import ssl
import time

import pytest
from mailservers import NTLM_DOMAIN, NTLM_USER, PASSWORD, USERNAME, NtlmSink, Recorder, StartServer, check_password

from smtpsettings.mail import (
    STEP_AUTHENTICATE,
    STEP_DELIVER,
    AuthenticationError,
    ConnectError,
    MailPolicy,
    MailTimeout,
    SendError,
    SmtpConnection,
    SmtpTarget,
    build_message,
    flatten,
    new_message_id,
)

FAST = MailPolicy(connect_timeout=2, command_timeout=2, total_timeout=10, helo_name="client.test")
SENDER = "noreply@example.com"


def target(port: int, *, host: str = "127.0.0.1", ssl_: bool = False, auth: bool = False) -> SmtpTarget:
    return SmtpTarget(
        host=host,
        port=port,
        enable_ssl=ssl_,
        enable_auth=auth,
        username=USERNAME if auth else "",
        password=PASSWORD if auth else "",
    )


def content(subject: str = "Hello", to: str = "ann@example.org") -> bytes:
    message = build_message(
        sender_address=SENDER,
        sender_display_name="DocSpace",
        to=[to],
        subject=subject,
        text="Body text\n",
        message_id=new_message_id("example.com"),
    )
    return flatten(message)[0]


async def opened(server_port: int, policy: MailPolicy = FAST, **kw: object) -> SmtpConnection:
    connection = SmtpConnection(target(server_port, **kw), policy)  # type: ignore[arg-type]
    await connection.open()
    return connection


async def test_several_messages_share_one_connection(start_server: StartServer) -> None:
    sink = Recorder()
    server = await start_server(sink)
    connection = await opened(server.port)
    assert connection.usable
    replies = [
        (await connection.send(SENDER, [f"user{i}@example.org"], content(f"Message {i}"))).reply for i in range(3)
    ]
    await connection.quit()

    assert replies == ["250 2.0.0 Message accepted for delivery"] * 3
    assert len(sink.peers) == 1
    subjects = [email.message_from_bytes(e.content, policy=email.policy.default)["Subject"] for e in sink.messages]
    assert subjects == ["Message 0", "Message 1", "Message 2"]
    assert [e.rcpt_tos for e in sink.messages] == [["user0@example.org"], ["user1@example.org"], ["user2@example.org"]]
    assert connection.messages_sent == 3
    assert not connection.usable


async def test_each_message_has_its_own_transcript(start_server: StartServer) -> None:
    server = await start_server(Recorder())
    connection = await opened(server.port)
    assert "C: EHLO client.test" in connection.transcript  # open()'s own dialogue
    await connection.send(SENDER, ["first@example.org"], content())
    await connection.send(SENDER, ["second@example.org"], content())
    transcript = connection.transcript
    assert transcript[0] == f"C: MAIL FROM:<{SENDER}>"
    assert "C: RCPT TO:<second@example.org>" in transcript
    assert not any("first@example.org" in line or "EHLO" in line for line in transcript)
    assert any(d.message.startswith("Message accepted: 250") for d in connection.details)
    connection.close()


async def test_a_refused_recipient_fails_only_itself(start_server: StartServer) -> None:
    sink = Recorder(rcpt_replies={"gone@example.org": "550 5.1.1 No such user", "busy@example.org": "450 4.2.1 Busy"})
    server = await start_server(sink)
    connection = await opened(server.port)

    delivery = await connection.send(
        SENDER, ["ok@example.org", "gone@example.org", "busy@example.org", "also@example.org"], content()
    )
    assert delivery.reply == "250 2.0.0 Message accepted for delivery"
    assert delivery.accepted == ("ok@example.org", "also@example.org")
    assert [(r.address, r.code, r.reply, r.permanent) for r in delivery.refusals] == [
        ("gone@example.org", 550, "550 5.1.1 No such user", True),
        ("busy@example.org", 450, "450 4.2.1 Busy", False),
    ]
    [delivered] = sink.messages
    assert delivered.rcpt_tos == ["ok@example.org", "also@example.org"]
    assert any(d.message == "RCPT TO:<gone@example.org>: 550 5.1.1 No such user" for d in connection.details)
    assert connection.messages_sent == 1 and connection.usable
    await connection.quit()


async def test_no_data_when_every_recipient_is_refused_and_the_session_stays_usable(start_server: StartServer) -> None:
    sink = Recorder(rcpt_replies={"gone@example.org": "550 5.1.1 No such user", "busy@example.org": "451 4.3.0 Later"})
    server = await start_server(sink)
    connection = await opened(server.port)

    delivery = await connection.send(SENDER, ["gone@example.org", "busy@example.org"], content())
    assert delivery.reply is None and delivery.accepted == ()
    assert [r.code for r in delivery.refusals] == [550, 451]
    assert "C: DATA" not in connection.transcript
    assert "C: RSET" in connection.transcript  # the open MAIL is withdrawn
    assert connection.usable and connection.messages_sent == 0

    second = await connection.send(SENDER, ["ok@example.org"], content("Second"))
    assert second.reply == "250 2.0.0 Message accepted for delivery"
    [delivered] = sink.messages
    assert delivered.rcpt_tos == ["ok@example.org"]  # the refused transaction left nothing behind
    assert len(sink.peers) == 1
    await connection.quit()


@pytest.mark.parametrize(
    "address",
    ["ann@example.org", "o'brien+news.tag@mail.example.org", "a.b-c_d=e!f#g$h%i&j*k/l?m^n`o{p|q}r~s@x-y.example", '"ann lee"@example.org', "Ann <ann@example.org>"],
)
def test_an_address_sent_as_is_is_one_aiosmtplib_would_send_unchanged(address: str) -> None:
    from aiosmtplib.email import quote_address

    from smtpsettings.mail.client import _PLAIN_ADDRESS

    if _PLAIN_ADDRESS.fullmatch(address):
        assert quote_address(address) == f"<{address}>"
    else:  # the others take aiosmtplib's own path
        assert address.startswith(('"', "Ann"))


async def test_plain_and_other_addresses_reach_the_server_as_aiosmtplib_quotes_them(start_server: StartServer) -> None:
    sink = Recorder()
    server = await start_server(sink)
    connection = await opened(server.port)
    odd = ["o'brien+tag@example.org", '"ann lee"@example.org', "Bob <bob@example.org>"]
    delivery = await connection.send(SENDER, odd, content())
    assert delivery.accepted == tuple(odd) and not delivery.refusals
    [delivered] = sink.messages
    assert delivered.mail_from == SENDER
    assert delivered.rcpt_tos == ["o'brien+tag@example.org", '"ann lee"@example.org', "bob@example.org"]
    assert f"C: MAIL FROM:<{SENDER}>" in connection.transcript
    assert "C: RCPT TO:<bob@example.org>" in connection.transcript
    await connection.quit()


async def test_temporary_refusal_of_data_has_code_451(start_server: StartServer) -> None:
    sink = Recorder(data_replies=["451 4.3.0 Try again later"])
    server = await start_server(sink)
    connection = await opened(server.port)
    with pytest.raises(SendError) as info:
        await connection.send(SENDER, ["ann@example.org"], content())
    assert info.value.code == 451
    assert str(info.value) == "Message rejected: 451 4.3.0 Try again later"
    assert connection.usable
    await connection.send(SENDER, ["ann@example.org"], content())
    assert len(sink.messages) == 1
    await connection.quit()


async def test_refused_sender_has_code_553(start_server: StartServer) -> None:
    from mailservers import Sink

    server = await start_server(Sink(reject_sender="553 5.7.1 Sender not allowed"))
    connection = await opened(server.port)
    with pytest.raises(SendError) as info:
        await connection.send(SENDER, ["ann@example.org"], content())
    assert info.value.code == 553
    assert connection.usable
    connection.close()


async def test_a_421_reply_closes_the_connection(start_server: StartServer) -> None:
    sink = Recorder(rcpt_replies={"ann@example.org": "421 4.3.2 Shutting down"})
    server = await start_server(sink)
    connection = await opened(server.port)
    with pytest.raises(SendError) as info:
        await connection.send(SENDER, ["ann@example.org"], content())
    assert info.value.code == 421
    assert not connection.usable


async def test_a_dropped_connection_is_a_connect_error_and_unusable(start_server: StartServer) -> None:
    sink = Recorder(drop_on_data=True)
    server = await start_server(sink)
    connection = await opened(server.port)
    with pytest.raises(ConnectError) as info:
        await connection.send(SENDER, ["ann@example.org"], content())
    assert str(info.value) == "127.0.0.1 closed the connection unexpectedly at step Send message"
    assert info.value.code is None
    assert not connection.usable
    with pytest.raises(RuntimeError):
        await connection.send(SENDER, ["ann@example.org"], content())
    await connection.quit()  # never raises, even on a dead connection


async def test_a_server_that_never_answers_data_times_out(start_server: StartServer) -> None:
    stall = asyncio.Event()
    server = await start_server(Recorder(stall_data=stall))
    policy = MailPolicy(connect_timeout=2, command_timeout=0.5, total_timeout=10, helo_name="client.test")
    connection = await opened(server.port, policy)
    started = time.monotonic()
    try:
        with pytest.raises(MailTimeout) as info:
            await connection.send(SENDER, ["ann@example.org"], content())
    finally:
        stall.set()
    assert time.monotonic() - started < 5
    assert str(info.value) == "No answer from 127.0.0.1 within 0.5 s at step Send message"
    assert not connection.usable


async def test_send_is_bounded_by_the_total_timeout(start_server: StartServer) -> None:
    stall = asyncio.Event()
    server = await start_server(Recorder(stall_data=stall))
    policy = MailPolicy(connect_timeout=2, command_timeout=30, total_timeout=0.5, helo_name="client.test")
    connection = await opened(server.port, policy)
    started = time.monotonic()
    try:
        with pytest.raises(MailTimeout) as info:
            await connection.send(SENDER, ["ann@example.org"], content())
    finally:
        stall.set()
    assert time.monotonic() - started < 5
    assert str(info.value) == "Sending did not finish within 0.5 s (total timeout) at step Send message"
    assert not connection.usable


async def test_open_is_bounded_by_the_total_timeout(tarpit: int) -> None:
    policy = MailPolicy(connect_timeout=30, command_timeout=30, total_timeout=0.5, helo_name="client.test")
    connection = SmtpConnection(target(tarpit), policy)
    started = time.monotonic()
    with pytest.raises(MailTimeout, match=r"0\.5 s \(total timeout\) at step Connect to host"):
        await connection.open()
    assert time.monotonic() - started < 5
    assert not connection.usable


async def test_open_failure_closed_port(closed_port: int) -> None:
    connection = SmtpConnection(target(closed_port), FAST)
    with pytest.raises(ConnectError):
        await connection.open()
    assert not connection.usable


async def test_refused_auth_has_its_code(start_server: StartServer) -> None:
    server = await start_server(Recorder(), authenticator=check_password, auth_require_tls=False)
    wrong = SmtpTarget("127.0.0.1", server.port, False, True, USERNAME, PASSWORD + "-wrong")
    with pytest.raises(AuthenticationError) as info:
        await SmtpConnection(wrong, FAST).open()
    assert info.value.code == 535
    assert info.value.step == STEP_AUTHENTICATE
    assert PASSWORD not in "\n".join(info.value.transcript)


async def test_starttls_and_auth_then_several_messages(
    start_server: StartServer, server_tls_context: ssl.SSLContext, ca_file: str
) -> None:
    sink = Recorder()
    server = await start_server(sink, tls_context=server_tls_context, require_starttls=True, authenticator=check_password)
    policy = MailPolicy(connect_timeout=2, command_timeout=2, ca_file=ca_file, helo_name="c.test")
    connection = await opened(server.port, policy, host="localhost", ssl_=True, auth=True)
    assert "C: STARTTLS" in connection.transcript
    assert any(d.message.startswith("Authenticated with") for d in connection.details)
    for _ in range(2):
        await connection.send(SENDER, ["ann@example.org"], content())
    await connection.quit()
    assert len(sink.messages) == 2 and len(sink.peers) == 1


async def test_implicit_tls_and_auth_then_several_messages(
    start_server: StartServer, server_tls_context: ssl.SSLContext, ca_file: str
) -> None:
    sink = Recorder()
    server = await start_server(
        sink, implicit_tls=server_tls_context, authenticator=check_password, auth_require_tls=False
    )  # aiosmtpd counts only STARTTLS as TLS
    policy = MailPolicy(connect_timeout=2, command_timeout=2, ca_file=ca_file, helo_name="c.test")
    tls_target = SmtpTarget("localhost", server.port, True, True, USERNAME, PASSWORD)
    connection = SmtpConnection(tls_target, policy, implicit_tls=True)
    await connection.open()
    assert any(d.message.startswith("Using implicit TLS") for d in connection.details)
    for _ in range(2):
        await connection.send(SENDER, ["ann@example.org"], content())
    await connection.quit()
    assert len(sink.messages) == 2 and len(sink.peers) == 1


async def test_smtputf8_is_asked_for(start_server: StartServer) -> None:
    sink = Recorder()
    server = await start_server(sink, enable_SMTPUTF8=True)
    connection = await opened(server.port)
    data, utf8 = flatten(
        build_message(
            sender_address=SENDER,
            sender_display_name="",
            to=["jörg@example.org"],
            subject="Grüße",
            text="Hallo\n",
            message_id=new_message_id("example.com"),
        )
    )
    assert utf8
    await connection.send(SENDER, ["jörg@example.org"], data, smtputf8=utf8)
    [delivered] = sink.messages
    assert "SMTPUTF8" in delivered.mail_options
    assert delivered.rcpt_tos == ["jörg@example.org"]
    received = email.message_from_string(delivered.content.decode("utf-8"), policy=email.policy.default)
    assert received["To"].addresses[0].addr_spec == "jörg@example.org"
    assert received["Subject"] == "Grüße"
    connection.close()


async def test_smtputf8_refused_when_the_server_lacks_it(start_server: StartServer) -> None:
    sink = Recorder()
    server = await start_server(sink)
    connection = await opened(server.port)
    with pytest.raises(SendError, match="does not support SMTPUTF8") as info:
        await connection.send(SENDER, ["ann@example.org"], content(), smtputf8=True)
    assert info.value.code is None
    assert connection.usable  # nothing was sent; the session is as it was
    await connection.send(SENDER, ["ann@example.org"], content())
    assert len(sink.messages) == 1
    connection.close()


async def test_a_target_with_oauth2_needs_the_token_cache() -> None:
    from smtpsettings.mail import OAuth2Grant

    grant = OAuth2Grant(
        provider="generic", token_url="https://t.example/token", scope="", client_id="c", client_secret="s"
    )
    with pytest.raises(ValueError, match="TokenCache"):
        SmtpConnection(SmtpTarget("127.0.0.1", 25, False, True, "u", oauth2=grant), FAST)


@pytest.mark.usefixtures("ntlm_user_file")
async def test_ntlm_then_several_messages(start_server: StartServer) -> None:
    """The outbox's connection signs in with NTLM as the test mail does, once for every message."""
    sink = NtlmSink()
    server = await start_server(sink, authenticator=check_password, auth_require_tls=False)
    ntlm = SmtpTarget(
        host="127.0.0.1",
        port=server.port,
        enable_ssl=False,
        enable_auth=True,
        username=f"{NTLM_DOMAIN}\\{NTLM_USER}",
        password=PASSWORD,
        use_ntlm=True,
    )
    connection = SmtpConnection(ntlm, FAST)
    await connection.open()
    assert any(line.startswith("C: AUTH NTLM") for line in connection.transcript)
    try:
        for subject in ("one", "two"):
            delivery = await connection.send(SENDER, ["ann@example.org"], content(subject))
            assert delivery.reply is not None and delivery.reply.startswith("250")
    finally:
        await connection.quit()
    subjects = [email.message_from_bytes(e.original_content or b"")["Subject"] for e in sink.messages]
    assert subjects == ["one", "two"]
