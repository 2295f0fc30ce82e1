"""send_message against real aiosmtpd servers on 127.0.0.1."""

from __future__ import annotations

import base64
import email
import email.policy
import errno
import ipaddress
import ssl
import time
from email.message import EmailMessage

import pytest

from smtpsettings.mail import (
    STEP_AUTHENTICATE,
    STEP_CONNECT,
    STEP_SEND,
    AuthenticationError,
    ConfigurationRefused,
    ConnectError,
    MailError,
    MailPolicy,
    MailTimeout,
    SendError,
    SendReport,
    SmtpTarget,
    TLSError,
    build_test_message,
    send_message,
)
from smtpsettings.mail.client import _send, _wire_name

from mailservers import (
    NTLM_DOMAIN,
    NTLM_USER,
    PASSWORD,
    USERNAME,
    CramMd5Sink,
    NtlmSink,
    Sink,
    StartServer,
    XFooSink,
    check_password,
    non_loopback_address,
)

FAST = MailPolicy(connect_timeout=2, command_timeout=2, total_timeout=10, helo_name="client.test")

SECRET_FORMS = [
    PASSWORD,
    base64.b64encode(PASSWORD.encode()).decode(),
    base64.b64encode(b"\0" + USERNAME.encode() + b"\0" + PASSWORD.encode()).decode(),
]


def message() -> EmailMessage:
    return build_test_message(
        sender_address="noreply@example.com", sender_display_name="Jörg, Admin", recipient="admin@example.org"
    )


def target(port: int, *, host: str = "127.0.0.1", ssl_: bool = False, auth: bool = False, **kw: object) -> SmtpTarget:
    return SmtpTarget(host=host, port=port, enable_ssl=ssl_, enable_auth=auth, **kw)  # type: ignore[arg-type]


def everything(result: SendReport | MailError) -> str:
    lines = [d.message for d in result.details] + list(result.transcript)
    if isinstance(result, MailError):
        lines.append(str(result))
    return "\n".join(lines)


def assert_no_secrets(result: SendReport | MailError) -> None:
    text = everything(result)
    for secret in SECRET_FORMS:
        assert secret not in text


class Steps:
    def __init__(self) -> None:
        self.seen: list[str] = []

    async def __call__(self, step: str) -> None:
        self.seen.append(step)


# -- plain delivery ---------------------------------------------------------------------------


async def test_plain_delivery_headers_details_and_steps(start_server: StartServer) -> None:
    server = await start_server()
    steps = Steps()
    report = await send_message(target(server.port), message(), FAST, on_step=steps)

    assert steps.seen == [STEP_CONNECT, STEP_SEND]
    [envelope] = server.handler.messages
    assert envelope.mail_from == "noreply@example.com"
    assert envelope.rcpt_tos == ["admin@example.org"]
    assert isinstance(envelope.content, bytes)
    received = email.message_from_bytes(envelope.content, policy=email.policy.default)
    assert isinstance(received, EmailMessage)
    sender = received["From"].addresses[0]
    assert (sender.display_name, sender.addr_spec) == ("Jörg, Admin", "noreply@example.com")
    assert received["To"].addresses[0].addr_spec == "admin@example.org"
    assert received["Subject"] == "SMTP test message"
    assert received["Auto-Submitted"] == "auto-generated"
    assert received["Date"].datetime is not None
    assert received["Message-ID"].endswith("@example.com>")
    assert "verify the SMTP settings" in received.get_content()

    messages = [d.message for d in report.details]
    assert any(m.startswith("Resolved 127.0.0.1 to 127.0.0.1") for m in messages)
    connect = next(d for d in report.details if d.message.startswith("Connected to 127.0.0.1:"))
    assert connect.elapsed_ms is not None and connect.step == STEP_CONNECT
    assert any(m.startswith("Server greeting: 220 mail.test") for m in messages)
    assert any(m.startswith("EHLO: 250 mail.test") and "8BITMIME" in m for m in messages)
    assert any(m.startswith("MAIL FROM:<noreply@example.com>: 250") for m in messages)
    assert any(m.startswith("RCPT TO:<admin@example.org>: 250") for m in messages)
    assert any(m.startswith("Message accepted: 250 2.0.0") for m in messages)
    assert report.transcript[0].startswith("S: 220 mail.test")
    assert "C: EHLO client.test" in report.transcript
    assert "C: QUIT" in report.transcript
    assert all(isinstance(d["step"], str) for d in report.to_list())


async def test_default_helo_name_works(start_server: StartServer) -> None:
    server = await start_server()
    policy = MailPolicy(connect_timeout=2, command_timeout=2, total_timeout=10)
    report = await send_message(target(server.port), message(), policy)
    assert any(line.startswith("C: EHLO ") for line in report.transcript)


async def test_host_name_resolution_is_reported(start_server: StartServer) -> None:
    server = await start_server()
    report = await send_message(target(server.port, host="localhost"), message(), FAST)
    resolved = next(d.message for d in report.details if d.message.startswith("Resolved localhost to"))
    assert "127.0.0.1" in resolved
    assert server.handler.messages


async def test_sender_rejected(start_server: StartServer) -> None:
    server = await start_server(Sink(reject_sender="550 5.7.1 Sender not allowed"))
    with pytest.raises(SendError) as info:
        await send_message(target(server.port), message(), FAST)
    assert str(info.value) == "Sender rejected: 550 5.7.1 Sender not allowed"
    assert info.value.step == STEP_SEND
    assert info.value.details[-1].level == "error"


async def test_recipient_rejected(start_server: StartServer) -> None:
    server = await start_server(Sink(reject_recipient="550 5.1.1 No such user"))
    with pytest.raises(SendError) as info:
        await send_message(target(server.port), message(), FAST)
    assert str(info.value) == "Recipient rejected: 550 5.1.1 No such user"
    assert not server.handler.messages


async def test_on_step_exception_propagates_unchanged(start_server: StartServer) -> None:
    server = await start_server()

    async def boom(step: str) -> None:
        raise RuntimeError("job cancelled by admin")

    with pytest.raises(RuntimeError, match="job cancelled by admin"):
        await send_message(target(server.port), message(), FAST, on_step=boom)


# -- connect failures -------------------------------------------------------------------------


async def test_closed_port(closed_port: int) -> None:
    steps = Steps()
    with pytest.raises(ConnectError) as info:
        await send_message(target(closed_port), message(), FAST, on_step=steps)
    assert str(info.value) == f"Could not connect to 127.0.0.1:{closed_port}: connection refused"
    assert info.value.step == STEP_CONNECT
    assert steps.seen == [STEP_CONNECT]


async def test_unresolvable_host() -> None:
    # ConnectError normally; MailTimeout if a slow resolver hits the connect deadline.
    with pytest.raises((ConnectError, MailTimeout)) as info:
        await send_message(target(25, host="nosuch.invalid"), message(), FAST)
    assert str(info.value).startswith("Could not resolve host nosuch.invalid")
    assert info.value.step == STEP_CONNECT


@pytest.mark.parametrize(
    ("host", "a_label"),
    [("bücher.invalid", "xn--bcher-kva.invalid"), ("faß.invalid", "xn--fa-hia.invalid"), ("Bücher.INVALID", "xn--bcher-kva.invalid")],
)
async def test_an_international_name_is_resolved_as_its_idna_2008_a_label(host: str, a_label: str) -> None:
    # IDNA 2003 (Python's own codec) would look up fass.invalid for faß.invalid: another host.
    with pytest.raises((ConnectError, MailTimeout)) as info:
        await send_message(target(25, host=host), message(), FAST)
    assert str(info.value).startswith(f"Could not resolve host {host} ({a_label})")


async def test_an_invalid_international_name_is_a_connect_error() -> None:
    with pytest.raises(ConnectError) as info:
        await send_message(target(25, host="☃.example"), message(), FAST)
    assert str(info.value).startswith("Could not resolve host ☃.example: not a valid international name")
    assert info.value.step == STEP_CONNECT


@pytest.mark.parametrize(
    ("host", "wire"),
    [
        ("mail.example.com", "mail.example.com"),
        ("Mail.Example.COM", "Mail.Example.COM"),
        ("bücher.example", "xn--bcher-kva.example"),
        ("faß.de", "xn--fa-hia.de"),
        ("127.0.0.1", "127.0.0.1"),
        ("[::1]", "::1"),
        ("::1", "::1"),
    ],
)
def test_the_name_used_for_the_resolver_sni_and_certificate_check(host: str, wire: str) -> None:
    assert _wire_name(host) == wire


async def test_tarpit_times_out_at_connect_step(tarpit: int) -> None:
    policy = MailPolicy(connect_timeout=2, command_timeout=0.5, total_timeout=10, helo_name="c.test")
    started = time.monotonic()
    with pytest.raises(MailTimeout) as info:
        await send_message(target(tarpit), message(), policy)
    assert time.monotonic() - started < 2
    assert info.value.step == STEP_CONNECT
    assert str(info.value) == "No answer from 127.0.0.1 within 0.5 s at step Connect to host"


async def test_total_timeout(tarpit: int) -> None:
    policy = MailPolicy(connect_timeout=5, command_timeout=5, total_timeout=0.3, helo_name="c.test")
    started = time.monotonic()
    with pytest.raises(MailTimeout) as info:
        await send_message(target(tarpit), message(), policy)
    assert time.monotonic() - started < 2
    assert "0.3 s (total timeout) at step Connect to host" in str(info.value)


async def test_denied_network_is_refused_before_connecting() -> None:
    policy = MailPolicy(connect_timeout=0.5, command_timeout=0.5, total_timeout=2)
    started = time.monotonic()
    with pytest.raises(ConfigurationRefused) as info:
        await send_message(target(25, host="169.254.169.254"), message(), policy)
    assert time.monotonic() - started < 0.4  # no connect attempt was made
    assert str(info.value) == (
        "Refusing to connect to 169.254.169.254: address is in a denied network (169.254.0.0/16)"
    )
    assert not any(d.message.startswith("Connected to") for d in info.value.details)


@pytest.mark.parametrize(
    "host",
    ["64:ff9b::a9fe:a9fe", "[64:ff9b::a9fe:a9fe]", "::169.254.169.254", "2002:a9fe:a9fe::1", "::ffff:169.254.169.254"],
)
async def test_an_ipv6_spelling_of_a_denied_ipv4_address_is_refused_before_connecting(host: str) -> None:
    policy = MailPolicy(connect_timeout=0.5, command_timeout=0.5, total_timeout=2)
    with pytest.raises(ConfigurationRefused) as info:
        await send_message(target(25, host=host), message(), policy)
    literal = ipaddress.ip_address(host.strip("[]"))
    assert str(info.value) == (
        f"Refusing to connect to {literal}: it embeds the IPv4 address 169.254.169.254, "
        "which is in a denied network (169.254.0.0/16)"
    )
    assert info.value.step == STEP_CONNECT
    assert not any(d.message.startswith(("Connected to", "TCP connect")) for d in info.value.details)


async def test_denied_network_applies_to_resolved_names(start_server: StartServer) -> None:
    server = await start_server()
    policy = MailPolicy(
        connect_timeout=1,
        command_timeout=1,
        deny_networks=(ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128")),
    )
    with pytest.raises(ConfigurationRefused, match="denied network"):
        await send_message(target(server.port, host="localhost"), message(), policy)
    assert not server.handler.messages


# -- TLS --------------------------------------------------------------------------------------


async def test_starttls_trusted_via_ca_file(
    start_server: StartServer, server_tls_context: ssl.SSLContext, ca_file: str
) -> None:
    server = await start_server(tls_context=server_tls_context, require_starttls=True)
    policy = MailPolicy(connect_timeout=2, command_timeout=2, ca_file=ca_file, helo_name="c.test")
    report = await send_message(target(server.port, host="localhost", ssl_=True), message(), policy)

    assert server.handler.messages
    messages = [d.message for d in report.details]
    assert any(m.startswith("STARTTLS: 220") for m in messages)
    assert any(m.startswith("TLS established: TLSv1.") and "cipher" in m for m in messages)
    assert any(m.startswith("Certificate subject: ") for m in messages)
    assert any(m.startswith("Certificate issuer: ") and "trustme" in m for m in messages)
    assert any(m.startswith("Certificate expires: ") for m in messages)
    assert any("DNS:localhost" in m for m in messages)
    assert "C: STARTTLS" in report.transcript
    assert report.transcript.count("C: EHLO c.test") == 2  # EHLO repeated after TLS


async def test_starttls_untrusted_certificate(
    start_server: StartServer, server_tls_context: ssl.SSLContext
) -> None:
    server = await start_server(tls_context=server_tls_context, require_starttls=True)
    with pytest.raises(TLSError) as info:
        await send_message(target(server.port, host="localhost", ssl_=True), message(), FAST)
    assert str(info.value).startswith("Certificate verify failed: ")
    assert "local issuer" in str(info.value)
    assert info.value.step == STEP_CONNECT
    assert not server.handler.messages


async def test_starttls_hostname_mismatch(
    start_server: StartServer, server_tls_context: ssl.SSLContext, ca_file: str
) -> None:
    # Cert is for "localhost"; connecting by IP must fail verification.
    server = await start_server(tls_context=server_tls_context, require_starttls=True)
    policy = MailPolicy(connect_timeout=2, command_timeout=2, ca_file=ca_file, helo_name="c.test")
    with pytest.raises(TLSError, match=r"^Certificate verify failed: .*mismatch"):
        await send_message(target(server.port, ssl_=True), message(), policy)


async def test_starttls_required_but_not_offered(start_server: StartServer) -> None:
    server = await start_server()
    with pytest.raises(TLSError) as info:
        await send_message(target(server.port, ssl_=True), message(), FAST)
    assert str(info.value) == f"STARTTLS is required but 127.0.0.1:{server.port} does not offer it"
    assert not server.handler.messages
    assert not any(line.startswith(("C: MAIL", "C: AUTH")) for line in info.value.transcript)


async def test_implicit_tls_via_internal_switch(
    start_server: StartServer, server_tls_context: ssl.SSLContext, ca_file: str
) -> None:
    server = await start_server(implicit_tls=server_tls_context)
    policy = MailPolicy(connect_timeout=2, command_timeout=2, ca_file=ca_file, helo_name="c.test")
    report = await _send(target(server.port, host="localhost", ssl_=True), message(), policy, implicit_tls=True)
    assert server.handler.messages
    messages = [d.message for d in report.details]
    assert any(m.startswith("Using implicit TLS") for m in messages)
    assert any(m.startswith("TLS established: TLSv1.") for m in messages)
    assert "C: STARTTLS" not in report.transcript


async def test_implicit_tls_untrusted(start_server: StartServer, server_tls_context: ssl.SSLContext) -> None:
    server = await start_server(implicit_tls=server_tls_context)
    with pytest.raises(TLSError, match="^Certificate verify failed: "):
        await _send(target(server.port, host="localhost", ssl_=True), message(), FAST, implicit_tls=True)


async def test_implicit_tls_on_port_465(
    start_server: StartServer, server_tls_context: ssl.SSLContext, ca_file: str
) -> None:
    try:
        server = await start_server(implicit_tls=server_tls_context, port=465)
    except OSError as exc:
        if exc.errno in (errno.EACCES, errno.EADDRINUSE, errno.EPERM):
            pytest.skip(f"cannot bind 127.0.0.1:465 ({exc.strerror})")
        raise
    policy = MailPolicy(connect_timeout=2, command_timeout=2, ca_file=ca_file, helo_name="c.test")
    report = await send_message(target(server.port, host="localhost", ssl_=True), message(), policy)
    assert server.handler.messages
    assert any(d.message.startswith("Using implicit TLS (port 465)") for d in report.details)


# -- authentication ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("exclude", "mechanism"),
    [([], "PLAIN"), (["PLAIN"], "LOGIN")],
)
async def test_auth_accepted(start_server: StartServer, exclude: list[str], mechanism: str) -> None:
    server = await start_server(
        authenticator=check_password, auth_require_tls=False, auth_exclude_mechanism=exclude
    )
    steps = Steps()
    report = await send_message(
        target(server.port, auth=True, username=USERNAME, password=PASSWORD), message(), FAST, on_step=steps
    )
    assert steps.seen == [STEP_CONNECT, STEP_AUTHENTICATE, STEP_SEND]
    assert any(d.message.startswith(f"Authenticated with {mechanism}: 235") for d in report.details)
    assert f"C: AUTH {mechanism} ***" in report.transcript
    assert server.handler.messages
    assert_no_secrets(report)
    if mechanism == "LOGIN":
        assert "S: 334 ***" in report.transcript
        assert "C: ***" in report.transcript


async def test_cram_md5_preferred(start_server: StartServer) -> None:
    server = await start_server(CramMd5Sink(), authenticator=check_password, auth_require_tls=False)
    report = await send_message(
        target(server.port, auth=True, username=USERNAME, password=PASSWORD), message(), FAST
    )
    assert "C: AUTH CRAM-MD5" in report.transcript
    assert any(d.message.startswith("Authenticated with CRAM-MD5: 235") for d in report.details)
    assert_no_secrets(report)


@pytest.mark.parametrize("exclude", [[], ["PLAIN"]])
async def test_auth_rejected(start_server: StartServer, exclude: list[str]) -> None:
    server = await start_server(
        authenticator=check_password, auth_require_tls=False, auth_exclude_mechanism=exclude
    )
    steps = Steps()
    wrong = SmtpTarget("127.0.0.1", server.port, False, True, USERNAME, PASSWORD + "-wrong")
    with pytest.raises(AuthenticationError) as info:
        await send_message(wrong, message(), FAST, on_step=steps)
    assert str(info.value) == "Authentication failed: 535 5.7.8 Authentication credentials invalid"
    assert info.value.step == STEP_AUTHENTICATE
    assert steps.seen == [STEP_CONNECT, STEP_AUTHENTICATE]
    assert not server.handler.messages
    text = everything(info.value)
    assert PASSWORD not in text
    assert base64.b64encode((PASSWORD + "-wrong").encode()).decode() not in text
    assert base64.b64encode(f"\0{USERNAME}\0{PASSWORD}-wrong".encode()).decode() not in text


async def test_no_supported_mechanism(start_server: StartServer) -> None:
    server = await start_server(
        XFooSink(), authenticator=check_password, auth_require_tls=False, auth_exclude_mechanism=["PLAIN", "LOGIN"]
    )
    with pytest.raises(AuthenticationError) as info:
        await send_message(target(server.port, auth=True, username=USERNAME, password=PASSWORD), message(), FAST)
    assert str(info.value) == "Server has no AUTH mechanism we support (offered: XFOO)"


async def test_plaintext_auth_refused_to_non_loopback(start_server: StartServer) -> None:
    address = non_loopback_address()
    if address is None:
        pytest.skip("no non-loopback address on this machine (decision covered in test_policy)")
    try:
        server = await start_server(host=address, authenticator=check_password, auth_require_tls=False)
    except OSError as exc:
        pytest.skip(f"cannot listen on {address}: {exc}")
    plain_target = target(server.port, host=address, auth=True, username=USERNAME, password=PASSWORD)
    with pytest.raises(ConfigurationRefused) as info:
        await send_message(plain_target, message(), FAST)
    assert str(info.value) == (
        f"Refusing to send credentials over an unencrypted connection to {address}; "
        "enable SSL or set SMTPSETTINGS_SMTP_ALLOW_PLAINTEXT_AUTH=true"
    )
    assert info.value.step == STEP_AUTHENTICATE
    assert not any(line.startswith("C: AUTH") for line in info.value.transcript)

    allowed = MailPolicy(connect_timeout=2, command_timeout=2, allow_plaintext_auth=True, helo_name="c.test")
    report = await send_message(plain_target, message(), allowed)
    assert server.handler.messages
    assert_no_secrets(report)


async def test_auth_over_starttls(
    start_server: StartServer, server_tls_context: ssl.SSLContext, ca_file: str
) -> None:
    # aiosmtpd's default auth_require_tls=True: AUTH is only accepted after STARTTLS.
    server = await start_server(tls_context=server_tls_context, require_starttls=True, authenticator=check_password)
    policy = MailPolicy(connect_timeout=2, command_timeout=2, ca_file=ca_file, helo_name="c.test")
    tls_target = target(server.port, host="localhost", ssl_=True, auth=True, username=USERNAME, password=PASSWORD)
    report = await send_message(tls_target, message(), policy)
    assert server.handler.messages
    assert not any("without TLS" in d.message for d in report.details)
    assert_no_secrets(report)


# -- NTLM -------------------------------------------------------------------------------------


@pytest.mark.usefixtures("ntlm_user_file")
async def test_ntlm_accepted(start_server: StartServer) -> None:
    server = await start_server(NtlmSink(), authenticator=check_password, auth_require_tls=False)
    ntlm_target = target(
        server.port, auth=True, username=f"{NTLM_DOMAIN}\\{NTLM_USER}", password=PASSWORD, use_ntlm=True
    )
    report = await send_message(ntlm_target, message(), FAST)
    assert any(d.message.startswith("Authenticated with NTLM: 235") for d in report.details)
    assert report.transcript.count("C: AUTH NTLM ***") == 1
    assert "S: 334 ***" in report.transcript
    assert "C: ***" in report.transcript
    assert server.handler.messages
    assert_no_secrets(report)


@pytest.mark.usefixtures("ntlm_user_file")
async def test_ntlm_rejected(start_server: StartServer) -> None:
    server = await start_server(NtlmSink(), authenticator=check_password, auth_require_tls=False)
    ntlm_target = target(
        server.port, auth=True, username=f"{NTLM_DOMAIN}\\{NTLM_USER}", password="wrong-password", use_ntlm=True
    )
    with pytest.raises(AuthenticationError, match=r"^Authentication failed: 535"):
        await send_message(ntlm_target, message(), FAST)
    assert not server.handler.messages


async def test_ntlm_not_offered(start_server: StartServer) -> None:
    server = await start_server(authenticator=check_password, auth_require_tls=False)
    ntlm_target = target(server.port, auth=True, username="u", password=PASSWORD, use_ntlm=True)
    with pytest.raises(AuthenticationError) as info:
        await send_message(ntlm_target, message(), FAST)
    assert str(info.value).startswith("Server does not offer AUTH NTLM")


async def test_invalid_port_and_helo_name_are_mail_errors(start_server: StartServer) -> None:
    with pytest.raises(ConnectError, match="^Invalid port 70000"):
        await send_message(target(70000), message(), FAST)
    server = await start_server()
    bad_helo = MailPolicy(connect_timeout=2, command_timeout=2, helo_name="bad name\r\nRSET")
    with pytest.raises(MailError, match="^Invalid EHLO name"):
        await send_message(target(server.port), message(), bad_helo)
