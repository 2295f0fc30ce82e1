from __future__ import annotations

import email
import email.policy
import email.utils
import random
import string

import pytest

from smtpsettings.mail import (
    TEST_SUBJECT,
    build_message,
    build_test_message,
    envelope_of,
    flatten,
    new_message_id,
)
from smtpsettings.mail.message import HeaderInjection, check_header_lines


def _reparse(message: email.message.EmailMessage) -> email.message.EmailMessage:
    parsed = email.message_from_bytes(message.as_bytes(policy=email.policy.SMTP), policy=email.policy.default)
    assert isinstance(parsed, email.message.EmailMessage)
    return parsed


def test_headers_and_body() -> None:
    message = _reparse(
        build_test_message(
            sender_address="noreply@example.com", sender_display_name="Jörg, Admin", recipient="admin@example.org"
        )
    )
    sender = message["From"].addresses[0]
    assert sender.display_name == "Jörg, Admin"
    assert sender.addr_spec == "noreply@example.com"
    assert message["To"].addresses[0].addr_spec == "admin@example.org"
    assert message["Subject"] == TEST_SUBJECT == "SMTP test message"
    assert message["Auto-Submitted"] == "auto-generated"
    assert message["Date"].datetime is not None
    assert message["Message-ID"].endswith("@example.com>")
    assert "test message sent to verify the SMTP settings" in message.get_content()


def test_empty_display_name_is_just_the_address() -> None:
    message = build_test_message(sender_address="a@example.com", sender_display_name="", recipient="b@example.com")
    assert str(message["From"]) == "a@example.com"


def test_idn_sender_domain_gives_ascii_message_id() -> None:
    message = build_test_message(sender_address="a@bücher.example", sender_display_name="", recipient="b@x.org")
    assert message["Message-ID"].isascii()
    assert "xn--bcher-kva.example" in message["Message-ID"]


@pytest.mark.parametrize("bad", ["", "no-at-sign", "a@"])
def test_invalid_addresses_raise_value_error(bad: str) -> None:
    with pytest.raises(ValueError, match="sender"):
        build_test_message(sender_address=bad, sender_display_name="", recipient="b@example.com")
    with pytest.raises(ValueError, match="recipient"):
        build_test_message(sender_address="a@example.com", sender_display_name="", recipient=bad)


# -- header injection --------------------------------------------------------------------------------

BUILT_HEADERS = ["auto-submitted", "content-transfer-encoding", "content-type", "date", "from", "message-id", "mime-version", "subject", "to"]


def _header_names(flat: bytes) -> list[str]:
    head = flat.split(b"\r\n\r\n", 1)[0]
    return sorted(line.split(b":", 1)[0].decode().lower() for line in head.split(b"\r\n") if line[:1] not in (b" ", b"\t"))


@pytest.mark.parametrize(
    "display_name",
    [
        "=?utf-8?q?Support=0D=0ABcc:_attacker@evil.test=0D=0AX-Injected:_1?=",  # the reported one
        "=?UTF-8?Q?Support=0D=0ABcc:_attacker@evil.test?=",
        "=?utf-8?b?U3VwcG9ydA0KQmNjOiBhdHRhY2tlckBldmlsLnRlc3QNClgtSW5qZWN0ZWQ6IDE=?=",  # base64
        "=?utf-8?B?U3VwcG9ydA0KQmNjOiBhdHRhY2tlckBldmlsLnRlc3Q?=",  # base64 without padding
        "Team =?utf-8?q?Support=0D=0ABcc:_attacker@evil.test?= Desk",
        '"=?utf-8?q?Support=0D=0ABcc:_attacker@evil.test?="',  # inside quotes the package decodes it too
        "=?utf-8?q?=3D=3Futf-8=3Fq=3FSupport=3D0D=3D0ABcc:_x@evil.test=3F=3D?=",  # encoded twice
        "=?utf-8?q?Support =0D=0ABcc:_attacker@evil.test?=",  # a space inside, which the package tolerates
        "=?x-unknown?q?Support=0D=0ABcc:_attacker@evil.test?=",  # a charset nobody knows
        "=?utf-8?q?J=C3=B6rg=0D=0ABcc:_attacker@evil.test?=",  # raw only when sent as SMTPUTF8
        "=?iso-8859-1?q?Support=0ABcc:_attacker@evil.test?=",  # a bare LF
        "=?utf-8?q?Support=0D=0A=0D=0Ainjected_body?=",  # a blank line would end the header block early
        "=?utf-8?q?Support=00?=",  # NUL
        "Support\r\nBcc: attacker@evil.test",  # raw, as a caller that skips validation might pass it
        "Support\nBcc: attacker@evil.test",
        "Support\x0bBcc: attacker@evil.test",  # vertical tab: a line break to str.splitlines
        "Support\x85Bcc: attacker@evil.test",  # NEL
        "Support\u2028Bcc: attacker@evil.test",  # Unicode line separator
    ],
)
def test_a_display_name_that_would_add_header_lines_is_refused(display_name: str) -> None:
    with pytest.raises(HeaderInjection, match="^Refusing to build the message: "):
        build_test_message(sender_address="support@example.com", sender_display_name=display_name, recipient="admin@example.org")


def test_an_encoded_comma_does_not_split_the_sender_into_two_addresses() -> None:
    # Python writes a comma decoded from an encoded word back out unquoted when sending SMTPUTF8.
    message = build_test_message(
        sender_address="support@example.com", sender_display_name="=?utf-8?b?SsO2cmcsIEFkbWlu?=", recipient="admin@example.org"
    )
    for policy in (email.policy.SMTP, email.policy.SMTPUTF8):
        parsed = email.message_from_string(message.as_bytes(policy=policy).decode("utf-8"), policy=email.policy.default)
        [sender] = parsed["From"].addresses
        assert (sender.display_name, sender.addr_spec) == ("Jörg, Admin", "support@example.com")


def test_header_injection_is_a_value_error_so_the_job_reports_it() -> None:
    assert issubclass(HeaderInjection, ValueError)


@pytest.mark.parametrize(
    ("display_name", "shown"),
    [
        ("=?utf-8?q?Support_Team?=", "Support Team"),  # a harmless encoded word is decoded, as before
        ("=?utf-8?b?SsO2cmcsIEFkbWlu?=", "Jörg, Admin"),
        ("Jörg, Admin", "Jörg, Admin"),  # raw text that the email package writes as encoded words
        ("Überweisung — Büro (Zürich) <Team>", "Überweisung — Büro (Zürich) <Team>"),
        ("Support Team " * 19, ("Support Team " * 19).strip()),  # folded over several lines
        ("ü " * 120, ("ü " * 120).strip()),
        ('"quoted" name', '"quoted" name'),
        ("=?utf-8?q?x=2C_attacker@evil.test=2C?=", "x, attacker@evil.test,"),  # commas stay in the name
        ("Tab\tinside", "Tab inside"),
    ],
)
def test_display_names_that_need_encoding_or_folding_are_built_with_only_the_builders_headers(display_name: str, shown: str) -> None:
    message = build_test_message(sender_address="support@example.com", sender_display_name=display_name, recipient="admin@example.org")
    for policy in (email.policy.SMTP, email.policy.SMTPUTF8):
        flat = message.as_bytes(policy=policy)
        assert _header_names(flat) == BUILT_HEADERS
        parsed = email.message_from_string(flat.decode("utf-8"), policy=email.policy.default)
        assert " ".join(parsed["From"].addresses[0].display_name.split()) == " ".join(shown.split())


def test_many_ordinary_display_names_pass_the_check() -> None:
    # No false alarms: printable text of every kind, specials and spaces included, folds cleanly.
    rng = random.Random(2047)
    pool = string.ascii_letters + string.digits + " " * 8 + string.punctuation + "äöüßéèçñøåÄÖÜ—–…€你好мир"
    for _ in range(300):
        name = "".join(rng.choice(pool) for _ in range(rng.randint(1, 200))).strip()
        message = build_test_message(sender_address="support@example.com", sender_display_name=name, recipient="admin@example.org")
        assert _header_names(message.as_bytes(policy=email.policy.SMTPUTF8)) == BUILT_HEADERS


def test_check_header_lines_passes_what_the_builder_made() -> None:
    check_header_lines(build_test_message(sender_address="a@example.com", sender_display_name="A", recipient="b@example.com"))


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("hi\r\nBcc: attacker@evil.test", r"\(bcc\)"),
        ("hi\r\n\r\nbody", r"\(from\)"),  # the header block ends early: a header is missing from it
        ("hi\r\n \r\nX: 1", "line break was not put there"),  # a continuation of nothing but spaces
        ("hi\rthere", "a header line is not a header"),  # the generator turns a lone CR into CR LF
        ("hi\x00", "control character"),
    ],
)
def test_check_header_lines_refuses_a_header_block_with_lines_nobody_set(value: str, problem: str) -> None:
    # The legacy Message class writes header values as given: a generator that lets a line break through.
    message = email.message.Message()
    message["Subject"] = value
    message["From"] = "a@example.com"
    message.set_payload("x")
    with pytest.raises(HeaderInjection, match=problem):
        check_header_lines(message)


def test_the_final_check_catches_what_decoding_in_advance_cannot() -> None:
    # An unknown charset: not decoded in advance, but the email package decodes it as ASCII and writes CR LF.
    with pytest.raises(HeaderInjection, match="a header line is not a header"):
        build_test_message(
            sender_address="a@example.com", sender_display_name="=?x-unknown?q?a=0D=0Ab?=", recipient="b@example.com"
        )


# -- outbox messages -----------------------------------------------------------------------------------


def _outgoing(**overrides: object) -> email.message.EmailMessage:
    fields: dict[str, object] = {
        "sender_address": "docspace@example.com",
        "sender_display_name": "DocSpace",
        "to": ["ann@example.org", "bob@example.org"],
        "cc": ["carol@example.org"],
        "bcc": ["secret@example.org"],
        "reply_to": "help@example.com",
        "subject": "Your report",
        "text": "Plain body\n",
        "html": None,
        "message_id": "<fixed.1@example.com>",
    }
    fields.update(overrides)
    return build_message(**fields)  # type: ignore[arg-type]


def _parse(flat: bytes) -> email.message.EmailMessage:
    parsed = email.message_from_string(flat.decode("utf-8").replace("\r\n", "\n"), policy=email.policy.default)
    assert isinstance(parsed, email.message.EmailMessage)
    return parsed


def test_build_message_headers() -> None:
    flat, smtputf8 = flatten(_outgoing())
    assert not smtputf8
    assert flat.isascii()
    message = _parse(flat)
    [sender] = message["From"].addresses
    assert (sender.display_name, sender.addr_spec) == ("DocSpace", "docspace@example.com")
    assert [a.addr_spec for a in message["To"].addresses] == ["ann@example.org", "bob@example.org"]
    assert [a.addr_spec for a in message["Cc"].addresses] == ["carol@example.org"]
    assert message["Reply-To"].addresses[0].addr_spec == "help@example.com"
    assert message["Subject"] == "Your report"
    assert message["Message-ID"] == "<fixed.1@example.com>"  # as given: a retry carries the same id
    assert message["Date"].datetime is not None
    assert message.get_content_type() == "text/plain"
    assert message.get_content() == "Plain body\n"


def test_bcc_never_appears_in_the_headers() -> None:
    message = _outgoing()
    flat, _ = flatten(message)
    assert b"secret@example.org" not in flat
    assert "Bcc" not in _parse(flat)
    assert _header_names(flat) == sorted(
        ["cc", "content-transfer-encoding", "content-type", "date", "from", "message-id", "mime-version",
         "reply-to", "subject", "to"]
    )


def test_flatten_drops_a_bcc_header_but_envelope_of_keeps_it() -> None:
    message = build_test_message(sender_address="a@example.com", sender_display_name="", recipient="b@example.com")
    message["Bcc"] = "hidden@example.com"
    assert envelope_of(message) == ("a@example.com", ["b@example.com", "hidden@example.com"])
    flat, _ = flatten(message)
    assert b"hidden@example.com" not in flat
    assert "Bcc" in message  # the caller's message is left as it was


def test_text_and_html_make_multipart_alternative() -> None:
    message = _parse(flatten(_outgoing(text="Plain\n", html="<p>Rich</p>\n"))[0])
    assert message.get_content_type() == "multipart/alternative"
    parts = list(message.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "text/html"]
    assert parts[0].get_content() == "Plain\n"
    assert parts[1].get_content() == "<p>Rich</p>\n"


def test_html_only() -> None:
    message = _parse(flatten(_outgoing(text=None, html="<p>Only</p>\n"))[0])
    assert message.get_content_type() == "text/html"
    assert message.get_content() == "<p>Only</p>\n"


def test_a_body_is_required() -> None:
    with pytest.raises(ValueError, match="text or an HTML body"):
        _outgoing(text=None, html=None)


def test_only_to_or_only_bcc() -> None:
    message = _parse(flatten(_outgoing(cc=[], reply_to=None, to=[], bcc=["x@example.org"]))[0])
    assert "To" not in message and "Cc" not in message and "Reply-To" not in message


def test_non_ascii_subject_body_and_names_are_encoded_for_plain_smtp() -> None:
    flat, smtputf8 = flatten(
        _outgoing(sender_display_name="Jörg, Büro", subject="Grüße — 你好", text="Größe: 10 €\n" + "ä" * 300 + "\n")
    )
    assert not smtputf8  # the addresses are ASCII: encoded words and a 7-bit body do
    assert flat.isascii()
    assert b"=?utf-8?" in flat
    message = _parse(flat)
    assert message["Subject"] == "Grüße — 你好"
    assert message["From"].addresses[0].display_name == "Jörg, Büro"
    assert message["Content-Transfer-Encoding"] in ("quoted-printable", "base64")
    assert message.get_content() == "Größe: 10 €\n" + "ä" * 300 + "\n"
    assert max(len(line) for line in flat.split(b"\r\n")) <= 998


def test_a_non_ascii_address_needs_smtputf8() -> None:
    flat, smtputf8 = flatten(_outgoing(to=["jörg@example.org"]))
    assert smtputf8
    assert "jörg@example.org".encode() in flat
    assert _parse(flat)["To"].addresses[0].addr_spec == "jörg@example.org"
    # An internationalised domain counts as well: it is written into the headers as given.
    assert flatten(_outgoing(to=["ann@bücher.example"]))[1]


@pytest.mark.parametrize("bad", ["jö rg@example.org", '"jö"@example.org', "jö@", "jö\u2028x@example.org"])
def test_malformed_non_ascii_addresses_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        _outgoing(to=[bad])


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("to", ["ok@example.org", "no-at-sign"]),
        ("cc", ["a@"]),
        ("bcc", [""]),
        ("reply_to", "nobody"),
        ("sender_address", "x"),
    ],
)
def test_invalid_addresses_anywhere_are_refused(field: str, value: object) -> None:
    with pytest.raises(ValueError, match="Invalid"):
        _outgoing(**{field: value})


@pytest.mark.parametrize(
    "overrides",
    [
        {"subject": "Hi\r\nBcc: attacker@evil.test"},
        {"subject": "Hi\nX-Injected: 1"},
        {"sender_display_name": "=?utf-8?q?Support=0D=0ABcc:_attacker@evil.test?="},
        {"sender_display_name": "Support\r\nBcc: attacker@evil.test"},
        {"subject": "Hi\u2028Bcc: attacker@evil.test"},
    ],
)
def test_header_injection_is_refused(overrides: dict[str, str]) -> None:
    with pytest.raises(HeaderInjection, match="^Refusing to build the message: "):
        _outgoing(**overrides)


@pytest.mark.parametrize("bad", ["fixed@example.com", "<no-at-sign>", "<a@b>\r\nBcc: x@evil.test", "<a b@c>", ""])
def test_a_malformed_message_id_is_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="Message-ID"):
        _outgoing(message_id=bad)


def test_new_message_id() -> None:
    first, second = new_message_id("example.com"), new_message_id("example.com")
    assert first != second
    assert first.startswith("<") and first.endswith("@example.com>")
    assert new_message_id("bücher.example").endswith("@xn--bcher-kva.example>")
    _outgoing(message_id=first)  # accepted by build_message as it is
