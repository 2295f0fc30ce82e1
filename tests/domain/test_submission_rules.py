"""Unit tests of the submission rules: who a message may come from, and what is changed of it (Bcc, Message-ID,
Received), with header field names read as RFC 5322's obsolete syntax allows."""

from __future__ import annotations

import email.errors
import email.header
import email.utils
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smtpsettings.domain.errors import BadArgument, MailLoop, SenderInFlux
from smtpsettings.domain.submission import (
    MAX_RECEIVED,
    NULL_SENDER_REFUSAL,
    SENDER_GRACE,
    Received,
    Trace,
    allowed_sender,
    check_envelope_sender,
    read_submitted,
    sender_refusal,
)

SENDERS = ("noreply@example.com", "ann@example.org")
NEW_ID = "<new.1@example.com>"
OK_FROM = b"From: noreply@example.com\r\n"


def read(content: bytes, senders: tuple[str, ...] = SENDERS):  # type: ignore[no-untyped-def]
    return read_submitted(content, allowed_senders=senders, new_message_id=NEW_ID)


def test_a_sender_is_compared_without_case_and_surrounding_space() -> None:
    assert allowed_sender(" NoReply@Example.COM ", SENDERS)
    assert allowed_sender("ann@example.org", ("", "ann@example.org"))
    assert not allowed_sender("noreply@example.com.evil.test", SENDERS)
    assert not allowed_sender("", SENDERS) and not allowed_sender("", ("",))  # the null sender never


def test_the_refusal_names_each_allowed_address_once() -> None:
    assert sender_refusal("x@y.test", ("noreply@example.com", "NoReply@example.com", "ann@example.org")) == (
        "The sender x@y.test is not allowed here: send as noreply@example.com or ann@example.org."
    )
    assert sender_refusal("", ()) == "The sender <> is not allowed here: this portal has no sender address."


def test_a_message_with_a_message_id_and_no_bcc_is_kept_byte_for_byte() -> None:
    content = (
        b"From: Example <noreply@example.com>\r\nTo: Ann <a@x.test>, b@x.test\r\nCc: c@x.test\r\n"
        b"Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\n and more\r\nMessage-ID: <given@app.test>\r\n\r\n"
        b"Bcc: this line is body text\r\n.\r\n\xc3\xbc 8-bit\r\n"
    )
    submitted = read(content)
    assert submitted.content == content
    assert submitted.to == ("a@x.test", "b@x.test") and submitted.cc == ("c@x.test",)
    assert submitted.subject == "Grüße and more"  # decoded and unfolded for lists
    assert submitted.message_id == "<given@app.test>" and not submitted.added_message_id


def test_a_missing_message_id_is_added_first() -> None:
    submitted = read(b"From: noreply@example.com\r\nSubject: hi\r\n\r\nbody\r\n")
    assert submitted.content == b"Message-ID: " + NEW_ID.encode() + b"\r\nFrom: noreply@example.com\r\nSubject: hi\r\n\r\nbody\r\n"
    assert submitted.message_id == NEW_ID and submitted.added_message_id


def test_a_message_id_in_other_case_counts() -> None:
    submitted = read(b"message-id: <lower@app.test>\r\nFrom: noreply@example.com\r\n\r\nx")
    assert submitted.message_id == "<lower@app.test>" and submitted.content.count(b"<lower@app.test>") == 1


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        # first, folded over two lines, in lower case
        (
            b"bcc: h1@x.test,\r\n h2@x.test\r\nFrom: noreply@example.com\r\nTo: a@x.test\r\n\r\nbody",
            b"From: noreply@example.com\r\nTo: a@x.test\r\n\r\nbody",
        ),
        # between others, twice
        (
            b"From: noreply@example.com\r\nBcc: h1@x.test\r\nTo: a@x.test\r\nBCC: h2@x.test\r\nSubject: s\r\n\r\nb",
            b"From: noreply@example.com\r\nTo: a@x.test\r\nSubject: s\r\n\r\nb",
        ),
        # last before the body, folded with a tab; the body's own "Bcc:" line stays
        (
            b"From: noreply@example.com\r\nBcc: h1@x.test,\r\n\th2@x.test\r\n\r\nBcc: not a header\r\n",
            b"From: noreply@example.com\r\n\r\nBcc: not a header\r\n",
        ),
        # empty, and fields that only start alike stay
        (
            b"From: noreply@example.com\r\nBcc:\r\nX-Bcc: kept\r\nBcc-Note: kept\r\n\r\nb",
            b"From: noreply@example.com\r\nX-Bcc: kept\r\nBcc-Note: kept\r\n\r\nb",
        ),
        # bare line feeds
        (b"From: noreply@example.com\nBcc: h@x.test\nSubject: s\n\nbody\n", b"From: noreply@example.com\nSubject: s\n\nbody\n"),
        # RFC 5322's obsolete syntax: white space before the colon, which receiving servers still read
        (
            b"Bcc : h1@x.test\r\nFrom: noreply@example.com\r\nBcc\t: h2@x.test\r\nBCC \t : h3@x.test\r\n\r\nb",
            b"From: noreply@example.com\r\n\r\nb",
        ),
        # Resent-Bcc too, in any spelling, folded
        (
            b"From: noreply@example.com\r\nResent-Bcc: h1@x.test\r\nresent-bcc :\r\n h2@x.test\r\nTo: a@x.test\r\n\r\nb",
            b"From: noreply@example.com\r\nTo: a@x.test\r\n\r\nb",
        ),
    ],
)
def test_bcc_fields_are_removed_and_nothing_else(content: bytes, expected: bytes) -> None:
    submitted = read(b"Message-ID: <m@app.test>\r\n" + content)
    assert submitted.content == b"Message-ID: <m@app.test>\r\n" + expected


def test_a_message_without_a_body_keeps_its_headers() -> None:
    submitted = read(b"From: noreply@example.com\r\nSubject: only headers")
    assert submitted.content.endswith(b"From: noreply@example.com\r\nSubject: only headers")
    assert submitted.subject == "only headers"


@pytest.mark.parametrize(
    ("from_fields", "sentence"),
    [
        (b"", "one From header with one address"),
        (b"From: noreply@example.com, ann@example.org\r\n", "one From header with one address"),
        (b"From: noreply@example.com\r\nFrom: ann@example.org\r\n", "one From header with one address"),
        (b"From: noreply@example.com\r\nFrom : ceo@bank.example\r\n", "one From header with one address"),
        (b"From : ceo@bank.example\r\n", "The From address ceo@bank.example is not allowed here: send as"),
        (b"From\t:\r\n ceo@bank.example\r\n", "The From address ceo@bank.example is not allowed here: send as"),
        (b"From: Boss <boss@example.com>\r\n", "The From address boss@example.com is not allowed here: send as"),
        (b'From: "noreply@example.com" <boss@example.com>\r\n', "The From address boss@example.com is not allowed"),
        (b"From: boss@example.com (noreply@example.com)\r\n", "The From address boss@example.com is not allowed"),
        # every other field naming the sender is held to the same rule
        (OK_FROM + b"Sender: ceo@bank.example\r\n", "The Sender address ceo@bank.example is not allowed here: send as"),
        (OK_FROM + b"Sender : CEO <ceo@bank.example>\r\n", "The Sender address ceo@bank.example is not allowed here"),
        (OK_FROM + b"Resent-From: ann@example.org, ceo@bank.example\r\n", "The Resent-From address ceo@bank.example"),
        (OK_FROM + b"resent-sender\t: ceo@bank.example\r\n", "The Resent-Sender address ceo@bank.example is not allowed"),
        (OK_FROM + b"Sender: noreply@example.com\r\nSender: ann@example.org\r\n", "one Sender header at most"),
        (OK_FROM + b"Sender: <<<\r\n", "The Sender header has no address that can be read"),
    ],
)
def test_a_from_that_is_not_exactly_one_allowed_address_is_refused(from_fields: bytes, sentence: str) -> None:
    with pytest.raises(BadArgument) as refused:
        read(from_fields + b"To: a@x.test\r\nSubject: s\r\n\r\nbody")
    assert sentence in refused.value.message
    if "not allowed" in sentence:
        assert "noreply@example.com or ann@example.org" in refused.value.message


def test_the_from_may_be_any_allowed_address_in_any_case_with_a_name() -> None:
    for field in (b"From: =?utf-8?q?Ann_B=C3=A4r?= <ANN@example.org>", b"From: noreply@example.com"):
        assert read(field + b"\r\n\r\nx").message_id == NEW_ID


@pytest.mark.parametrize(
    "content",
    [
        b"\r\nFrom: noreply@example.com\r\n\r\nbody",  # starts with the empty line
        b"Hello, this is just text\r\n\r\nFrom: noreply@example.com\r\n",
        b"",
    ],
)
def test_content_without_a_header_section_is_refused(content: bytes) -> None:
    with pytest.raises(BadArgument, match="no header section"):
        read(content)


# -- Internationalised headers and an empty Message-ID -------------------------------------------------------


def test_utf8_header_fields_are_read_as_utf8() -> None:
    """RFC 6532: with SMTPUTF8 (which the port announces) header fields may be raw UTF-8."""
    content = "From: Jörg <jörg@exämple.com>\r\nTo: Zoë <zoë@x.test>\r\nSubject: Grüße\r\n\r\nx".encode()
    submitted = read_submitted(content, allowed_senders=("jörg@exämple.com",), new_message_id=NEW_ID)
    assert submitted.to == ("zoë@x.test",) and submitted.subject == "Grüße"


def test_an_empty_message_id_field_is_replaced_not_doubled() -> None:
    submitted = read(b"From: noreply@example.com\r\nMessage-ID: \r\nSubject: s\r\n\r\nbody")
    assert submitted.content.lower().count(b"message-id:") == 1


# -- Sender, Resent-From and Resent-Sender follow the From rule (refusals: in the test of From above) ----------


def test_allowed_addresses_in_sender_and_resent_fields_are_kept_as_written() -> None:
    content = (
        b"Message-ID: <m@app.test>\r\nFrom: noreply@example.com\r\nSender: Ann <ANN@example.org>\r\n"
        b"Resent-From: noreply@example.com\r\nResent-Sender: ann@example.org\r\n\r\nbody"
    )
    assert read(content).content == content


def test_a_line_of_the_header_section_that_is_not_a_field_is_refused() -> None:
    with pytest.raises(BadArgument, match="Line 2 of the header section is not a header field"):
        read(b"From: noreply@example.com\r\nFrom ceo@bank.example\r\nTo: a@x.test\r\n\r\nbody")


# -- The Received field, and loops --------------------------------------------------------------------------------

TRACE = Trace(by="mail.service.test", client_name="app.example", client_address="192.0.2.7", protocol="ESMTPSA")
AT = datetime(2026, 12, 1, 9, 30, tzinfo=UTC)


def received(trace: Trace = TRACE) -> Received:
    return Received(trace, "0123abcd", AT)


def traced(content: bytes):  # type: ignore[no-untyped-def]
    """``content`` read as the port reads it: with this service's Received field to add."""
    return read_submitted(content, allowed_senders=SENDERS, new_message_id=NEW_ID, received=received())


def test_a_received_field_is_put_on_top_of_the_accepted_message() -> None:
    content = b"Message-ID: <m@app.test>\r\nFrom: noreply@example.com\r\n\r\nbody"
    submitted = traced(content)
    assert submitted.content == (
        b"Received: from app.example ([192.0.2.7])\r\n"
        b"\tby mail.service.test (smtpsettings) with ESMTPSA id 0123abcd;\r\n"
        b"\tTue, 01 Dec 2026 09:30:00 +0000\r\n" + content
    )


def test_the_received_field_names_an_ipv6_client_as_a_literal_and_leaves_out_a_strange_ehlo_name() -> None:
    trace = Trace(
        by="mail.service.test",
        client_name="x (by mail.service.test (smtpsettings))",
        client_address="2001:db8::1",
        protocol="ESMTPA",
    )
    field = received(trace).field()
    assert field.startswith(b"Received: from unknown ([IPv6:2001:db8::1])\r\n\tby mail.service.test (smtpsettings) ")


def test_a_message_that_has_been_through_this_service_is_a_loop() -> None:
    earlier = received().field()
    with pytest.raises(MailLoop, match="already been through this service"):
        traced(earlier + b"From: noreply@example.com\r\n\r\nbody")
    # The same field in other case and folding is recognised too.
    again = earlier.replace(b"mail.service.test", b"MAIL.Service.TEST").replace(b"\r\n\tby", b" by")
    with pytest.raises(MailLoop):
        traced(again + b"From: noreply@example.com\r\n\r\nbody")


def test_received_fields_of_other_servers_are_not_a_loop() -> None:
    others = (
        b"Received: from a.test by mail.service.test.evil (smtpsettings) with ESMTP id 1;\r\n"
        b" Tue, 1 Dec 2026 09:00:00 +0000\r\n"
        b"Received: from b.test by mail.service.test with ESMTP id 2; Tue, 1 Dec 2026 09:00:00 +0000\r\n"
    )
    content = others + b"From: noreply@example.com\r\n\r\nbody"
    submitted = traced(content)
    assert submitted.content.endswith(content) and submitted.content.count(b"Received:") == 3


def test_more_than_25_received_fields_is_a_loop() -> None:
    hop = b"Received: from a.test by b.test with ESMTP; Tue, 1 Dec 2026 09:00:00 +0000\r\n"
    tail = b"From: noreply@example.com\r\n\r\nbody"
    assert traced(hop * MAX_RECEIVED + tail)
    with pytest.raises(MailLoop, match="more than 25 mail servers"):
        traced(hop * (MAX_RECEIVED + 1) + tail)


# -- the envelope sender: refused for now or for good -----------------------------------------------------

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("address", "changed_at", "refusal"),
    [
        ("NOREPLY@example.com", None, None),  # allowed whenever
        ("noreply@example.com", NOW, None),
        ("old@example.com", None, BadArgument),  # never changed: for good
        ("old@example.com", NOW - SENDER_GRACE + timedelta(seconds=1), SenderInFlux),  # just changed: for now
        ("old@example.com", NOW - SENDER_GRACE, BadArgument),  # the grace is over
        ("<>", NOW, BadArgument),  # a bounce: for good, even just after a change
        ("", None, BadArgument),
    ],
)
def test_an_envelope_sender_is_refused_for_now_only_within_the_grace_after_a_change(
    address: str, changed_at: datetime | None, refusal: type[Exception] | None
) -> None:
    if refusal is None:
        check_envelope_sender(address, SENDERS, settings_changed_at=changed_at, now=NOW)
        return
    with pytest.raises(refusal) as refused:
        check_envelope_sender(address, SENDERS, settings_changed_at=changed_at, now=NOW)
    assert type(refused.value) is refusal  # SenderInFlux is a BadArgument: the exact class is the point
    if address.strip("<>"):
        assert refused.value.message.startswith(f"The sender {address} is not allowed here: send as noreply@example.com")
    else:
        assert refused.value.message == NULL_SENDER_REFUSAL


_subject_text = st.lists(st.sampled_from(list("aZ é\t;=?_") + ["=?utf-8?q?x_y?=", "=?iso-8859-1?b?6Q==?=", "  "]), max_size=8).map("".join)


@settings(max_examples=300, deadline=None)
@given(subject=st.lists(_subject_text, max_size=4).map("".join))
def test_the_subject_is_read_as_the_email_package_decodes_it(subject: str) -> None:
    # Unfolded to one line, encoded words decoded; plain text (no encoded word) is not run through the decoder.
    content = f"From: a@example.com\r\nSubject: {subject}\r\n\r\nbody\r\n".encode()
    try:
        expected = str(email.header.make_header(email.header.decode_header(subject.strip())))
    except (UnicodeError, LookupError, ValueError, email.errors.HeaderParseError):
        expected = subject.strip()
    assert read_submitted(content, allowed_senders=("a@example.com",), new_message_id=NEW_ID).subject == " ".join(expected.split())


_atom = st.text(alphabet=st.sampled_from(list("aZ09!#$%&'*+/=?^_`{|}~-")), min_size=1, max_size=4)
_plain_address = st.tuples(st.lists(_atom, min_size=1, max_size=2).map(".".join), st.lists(_atom, min_size=1, max_size=2).map(".".join)).map("@".join)
_plain_value = st.one_of(
    _plain_address,
    st.tuples(st.lists(_atom, min_size=1, max_size=3).map(" ".join), _plain_address).map(lambda p: f"{p[0]} <{p[1]}>"),
).flatmap(lambda v: st.sampled_from([v, f" {v}", f"{v} ", f"\t{v}"]))
_tricky_value = st.lists(
    st.sampled_from(["a", "b.c", "@", "x@y.z", "<", ">", " ", '"', ",", "(c)", "é", "Ann", "=?x?=", "..", "\\", ":", ";"]),
    max_size=8,
).map("".join)


@settings(max_examples=400, deadline=None)
@given(values=st.lists(st.one_of(_plain_value, _plain_value, _tricky_value), min_size=1, max_size=3))
def test_recipient_fields_are_read_as_the_email_package_reads_them(values: list[str]) -> None:
    head = "".join(f"To:{v}\r\n" for v in values)
    content = f"From: a@example.com\r\n{head}\r\nbody\r\n".encode()
    expected = tuple(a for _, a in email.utils.getaddresses(values) if a)
    assert read_submitted(content, allowed_senders=("a@example.com",), new_message_id=NEW_ID).to == expected
