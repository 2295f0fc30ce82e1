"""Unit tests of the submission rules: who a message may come from, and what is changed of it (Bcc, Message-ID)."""

from __future__ import annotations

import pytest

from smtpsettings.domain.errors import BadArgument
from smtpsettings.domain.submission import allowed_sender, read_submitted, sender_refusal

SENDERS = ("noreply@example.com", "ann@example.org")
NEW_ID = "<new.1@example.com>"


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
        (b"From: Boss <boss@example.com>\r\n", "The From address boss@example.com is not allowed here: send as"),
        (b'From: "noreply@example.com" <boss@example.com>\r\n', "The From address boss@example.com is not allowed"),
        (b"From: boss@example.com (noreply@example.com)\r\n", "The From address boss@example.com is not allowed"),
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
