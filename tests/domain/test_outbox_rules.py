"""Unit tests of the outbox rules: parse_message, classify and retry_delay."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from smtpsettings.domain.errors import BadArgument, ValidationFailed
from smtpsettings.domain.outbox import (
    MAX_RECIPIENTS,
    Outcome,
    OutgoingMessage,
    RecipientOutcome,
    classify,
    delivery_outcomes,
    parse_message,
    recipient_states,
    retry_delay,
    settle,
)
from smtpsettings.mail.errors import (
    AuthenticationError,
    ConfigurationRefused,
    ConnectError,
    MailError,
    MailTimeout,
    OAuth2TokenError,
    SendError,
    TLSError,
)
from smtpsettings.mail.report import Refusal

_DROP = object()


def body(**changes: Any) -> dict[str, Any]:
    """A valid body with ``changes`` applied (``_DROP`` removes a field)."""
    result: dict[str, Any] = {"to": ["ann@example.com"], "subject": "Hello", "text": "Hi Ann"}
    for key, value in changes.items():
        if value is _DROP:
            result.pop(key, None)
        else:
            result[key] = value
    return result


def errors_of(payload: Any, **kwargs: Any) -> dict[str, list[str]]:
    with pytest.raises(ValidationFailed) as info:
        parse_message(payload, **kwargs)
    return info.value.errors


def addresses(count: int, domain: str = "example.com") -> list[str]:
    return [f"user{n}@{domain}" for n in range(count)]


# ---- the message as a whole ----


def test_a_valid_message_is_read_into_an_outgoing_message() -> None:
    message = parse_message(
        {
            "to": ["ann@example.com"],
            "cc": ["bob@example.com"],
            "bcc": ["audit@example.com"],
            "replyTo": "help@example.com",
            "subject": "Hello",
            "text": "Hi",
            "html": "<p>Hi</p>",
        }
    )
    assert message == OutgoingMessage(
        to=("ann@example.com",),
        cc=("bob@example.com",),
        bcc=("audit@example.com",),
        reply_to="help@example.com",
        subject="Hello",
        text="Hi",
        html="<p>Hi</p>",
    )
    assert message.recipients == ("ann@example.com", "bob@example.com", "audit@example.com")


def test_optional_fields_may_be_null_or_left_out_and_unknown_fields_are_ignored() -> None:
    message = parse_message(
        {
            "to": ["ann@example.com"],
            "cc": None,
            "replyTo": None,
            "subject": "",
            "text": "x",
            "html": None,
            "priority": "high",
            "attachments": [1, 2],
        }
    )
    assert (message.cc, message.bcc, message.reply_to, message.subject, message.html) == (
        (),
        (),
        None,
        "",
        None,
    )


@pytest.mark.parametrize("payload", [[], "text", None, 42, True, [{"to": ["ann@example.com"]}]])
def test_a_body_that_is_not_an_object_is_a_bad_argument(payload: Any) -> None:
    with pytest.raises(BadArgument) as info:
        parse_message(payload)
    assert type(info.value) is BadArgument
    assert "JSON object" in info.value.message


def test_an_empty_object_names_recipients_subject_and_body() -> None:
    errors = errors_of({})
    assert set(errors) == {"To", "Subject", "Text"}
    assert "no recipients" in errors["To"][0]
    assert "required" in errors["Subject"][0]
    assert "no body" in errors["Text"][0]


def test_errors_of_every_field_are_raised_together() -> None:
    errors = errors_of(
        {
            "to": ["ok@example.com", "not an address"],
            "cc": "x@example.com",
            "bcc": [7],
            "replyTo": 5,
            "subject": 3,
            "text": ["x"],
            "html": {},
        }
    )
    assert set(errors) == {"To", "Cc", "Bcc", "ReplyTo", "Subject", "Text", "Html"}
    assert errors["To"] == [
        "To[1] is not a valid email address: it contains white space or a control character."
    ]


def test_the_exception_message_is_the_first_field_error() -> None:
    with pytest.raises(ValidationFailed) as info:
        parse_message(body(to=["ann@example.com", "nope"]))
    assert info.value.message == "To[1] is not a valid email address: it has no @."


# ---- wrong JSON types are field errors ----


@pytest.mark.parametrize(
    ("field", "value", "label", "expected"),
    [
        ("to", "ann@example.com", "To", "The field To must be an array of email addresses."),
        ("to", 1, "To", "The field To must be an array of email addresses."),
        ("to", {"0": "ann@example.com"}, "To", "The field To must be an array of email addresses."),
        ("to", [None], "To", "To[0] must be a string (an email address)."),
        ("cc", True, "Cc", "The field Cc must be an array of email addresses."),
        ("cc", [["a@example.com"]], "Cc", "Cc[0] must be a string (an email address)."),
        ("bcc", 3.5, "Bcc", "The field Bcc must be an array of email addresses."),
        (
            "replyTo",
            ["help@example.com"],
            "ReplyTo",
            "The field ReplyTo must be a string (an email address) or null.",
        ),
        ("subject", None, "Subject", "The field Subject must be a string."),
        ("subject", 42, "Subject", "The field Subject must be a string."),
        ("subject", ["Hello"], "Subject", "The field Subject must be a string."),
        ("subject", False, "Subject", "The field Subject must be a string."),
        ("text", 1, "Text", "The field Text must be a string or null."),
        ("html", ["<p>"], "Html", "The field Html must be a string or null."),
    ],
)
def test_a_wrong_type_is_an_error_of_its_field(field: str, value: Any, label: str, expected: str) -> None:
    errors = errors_of(body(**{"cc": ["bob@example.com"], field: value}))
    assert errors == {label: [expected]}


def test_a_type_error_in_the_lists_is_not_also_reported_as_no_recipients() -> None:
    assert errors_of(body(to="ann@example.com")) == {
        "To": ["The field To must be an array of email addresses."]
    }
    assert errors_of(body(to=[5])) == {"To": ["To[0] must be a string (an email address)."]}


def test_positions_count_every_entry_even_those_of_the_wrong_type() -> None:
    errors = errors_of(body(to=["ann@example.com", 5, "bad", "bob@example.com", "bad2"]))
    assert [message.split(" ")[0] for message in errors["To"]] == ["To[1]", "To[2]", "To[4]"]


# ---- recipients ----


@pytest.mark.parametrize(
    "changes",
    [
        {"to": _DROP},
        {"to": []},
        {"to": None, "cc": [], "bcc": None},
        {"to": [], "cc": [], "bcc": []},
    ],
)
def test_no_recipients_is_an_error_of_to(changes: dict[str, Any]) -> None:
    assert errors_of(body(**changes)) == {
        "To": ["The message has no recipients: give at least one address in To, Cc or Bcc."]
    }


@pytest.mark.parametrize("field", ["cc", "bcc"])
def test_cc_or_bcc_alone_is_enough(field: str) -> None:
    message = parse_message(body(to=_DROP, **{field: ["ann@example.com"]}))
    assert message.recipients == ("ann@example.com",)
    assert message.to == ()


@pytest.mark.parametrize(
    ("to", "cc", "bcc", "ok"),
    [
        (addresses(100), [], [], True),
        (addresses(101), [], [], False),
        (addresses(100)[:40], addresses(100)[40:80], addresses(100)[80:], True),
        (addresses(101)[:40], addresses(101)[40:80], addresses(101)[80:], False),
        # 101 entries, 100 distinct once case is ignored
        (addresses(100), ["USER7@Example.COM"], [], True),
        (addresses(100), [], ["user99@example.com"], True),
        (addresses(100), addresses(100), addresses(100), True),
        (addresses(50) * 3, [], [], True),
    ],
)
def test_at_most_100_distinct_recipients_in_to_cc_and_bcc_together(
    to: list[str], cc: list[str], bcc: list[str], ok: bool
) -> None:
    payload = body(to=to, cc=cc, bcc=bcc)
    if ok:
        assert len(parse_message(payload).recipients) <= MAX_RECIPIENTS
    else:
        assert errors_of(payload) == {
            "To": ["The message has 101 recipients in To, Cc and Bcc together; at most 100 are allowed."]
        }


def test_the_recipient_limit_can_be_set() -> None:
    assert len(parse_message(body(to=addresses(3)), max_recipients=3).recipients) == 3
    assert "at most 2 are allowed" in errors_of(body(to=addresses(3)), max_recipients=2)["To"][0]


def test_recipients_are_deduplicated_case_insensitively_in_order_and_the_lists_kept_as_given() -> None:
    message = parse_message(
        body(
            to=["ann@example.com", "Bob@Example.com", "ANN@example.com"],
            cc=["bob@example.com", "cy@example.com"],
            bcc=["Ann@Example.COM", "dee@example.com"],
        )
    )
    assert message.recipients == ("ann@example.com", "Bob@Example.com", "cy@example.com", "dee@example.com")
    assert message.to == ("ann@example.com", "Bob@Example.com", "ANN@example.com")
    assert message.bcc == ("Ann@Example.COM", "dee@example.com")


# ---- addresses ----

_LONG_DOMAIN = "a" * 63 + "." + "b" * 63 + "." + "c" * 61  # 189 characters


@pytest.mark.parametrize(
    ("address", "stored"),
    [
        ("ann@example.com", "ann@example.com"),
        ("Ann.Lee+news@Mail.Example.COM", "Ann.Lee+news@Mail.Example.COM"),
        ("o'brien@example.com", "o'brien@example.com"),
        ("!#$%&'*+-/=?^_`{|}~@example.com", "!#$%&'*+-/=?^_`{|}~@example.com"),
        ("postmaster@localhost", "postmaster@localhost"),
        ("x@a-b.example", "x@a-b.example"),
        ("用户@例子.广告", "用户@例子.广告"),  # SMTPUTF8 local part, IDN domain
        ("jörg@bücher.example", "jörg@bücher.example"),
        ("ann@Bücher.Example", "ann@bücher.example"),  # an international name in its mapped form
        ("ann@例え。テスト", "ann@例え.テスト"),  # an ideographic full stop is a dot
        ("ann@ｅｘａｍｐｌｅ．ｃｏｍ", "ann@example.com"),  # full-width forms
        ("ann@xn--bcher-kva.example", "ann@xn--bcher-kva.example"),  # an A-label as such
        ("a" * 64 + "@" + _LONG_DOMAIN, "a" * 64 + "@" + _LONG_DOMAIN),  # exactly 254 characters
        ("é" * 32 + "@example.com", "é" * 32 + "@example.com"),  # 64 bytes
    ],
)
def test_valid_addresses_are_accepted(address: str, stored: str) -> None:
    message = parse_message(body(to=[address], replyTo=address))
    assert message.to == (stored,)
    assert message.reply_to == stored


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("", "it is empty"),
        (
            "Ann <ann@example.com>",
            "give the bare address, like ann@example.com, without a name or angle brackets",
        ),
        (
            "<ann@example.com>",
            "give the bare address, like ann@example.com, without a name or angle brackets",
        ),
        ("ann lee@example.com", "it contains white space or a control character"),
        (" ann@example.com", "it contains white space or a control character"),
        ("ann@example.com\r\nBcc: x@evil.test", "it contains white space or a control character"),
        ("ann@example.com\n", "it contains white space or a control character"),
        ("ann\t@example.com", "it contains white space or a control character"),
        ("ann\x00@example.com", "it contains white space or a control character"),
        ("ann\x7f@example.com", "it contains white space or a control character"),
        ("ann\x85@example.com", "it contains white space or a control character"),
        ("ann\u2028@example.com", "it contains white space or a control character"),
        ("ann\u00a0@example.com", "it contains white space or a control character"),
        ("ann\u200d@example.com", "it contains white space or a control character"),
        ("ann.example.com", "it has no @"),
        ("ann@bob@example.com", "it has more than one @"),
        ("@example.com", "nothing comes before the @"),
        ("ann@", "nothing follows the @"),
        (".ann@example.com", "the part before the @ starts or ends with a dot, or has two dots in a row"),
        ("ann.@example.com", "the part before the @ starts or ends with a dot, or has two dots in a row"),
        ("ann..lee@example.com", "the part before the @ starts or ends with a dot, or has two dots in a row"),
        ('"ann"@example.com', "the part before the @ contains '\"' (quoted local parts are not accepted)"),
        ("ann,bob@example.com", "the part before the @ contains ',' (quoted local parts are not accepted)"),
        ("ann(x)@example.com", "the part before the @ contains '(' (quoted local parts are not accepted)"),
        ("a" * 65 + "@example.com", "the part before the @ is longer than 64 bytes"),
        ("é" * 33 + "@example.com", "the part before the @ is longer than 64 bytes"),
        ("a" * 64 + "@" + _LONG_DOMAIN + "c", "it is longer than 254 characters"),
        (
            "ann@192.0.2.25",
            "the domain is an IP address; address literals are not accepted, give a domain name",
        ),
        (
            "ann@[192.0.2.25]",
            "the domain is an IP address; address literals are not accepted, give a domain name",
        ),
        (
            "ann@[IPv6:2001:db8::1]",
            "the domain is an IP address; address literals are not accepted, give a domain name",
        ),
        (
            "ann@2001:db8::1",
            "the domain is an IP address; address literals are not accepted, give a domain name",
        ),
        ("ann@ex_ample.com", "the domain 'ex_ample.com' contains '_', which a host name cannot contain"),
        (
            "ann@example..com",
            "the domain 'example..com' has an empty label (two dots in a row, or a dot at the start)",
        ),
        ("ann@example.com.", "the domain 'example.com.' ends with a dot: leave it out"),
        ("ann@-example.com", "the domain '-example.com': a label starts or ends with '-'"),
        ("ann@example.123", "the domain 'example.123' ends with an all-numeric label, which no domain has"),
        (
            "ann@" + "a" * 64 + ".com",
            "the domain '" + "a" * 57 + "...': a label is longer than 63 characters",
        ),
    ],
)
@pytest.mark.parametrize("field", ["to", "cc", "bcc"])
def test_invalid_addresses_are_field_errors_naming_the_position(
    field: str, address: str, reason: str
) -> None:
    label = field.capitalize()
    errors = errors_of(body(**{field: ["ok@example.com", address]}))
    assert errors == {label: [f"{label}[1] is not a valid email address: {reason}."]}


@pytest.mark.parametrize("domain", ["☃.example", "xn--a.example", "\u0300a.example"])
def test_domains_that_idna_2008_refuses_are_errors(domain: str) -> None:
    (message,) = errors_of(body(to=[f"ann@{domain}"]))["To"]
    assert message.startswith("To[0] is not a valid email address: the domain ")
    assert "not a valid international host name" in message


@pytest.mark.parametrize(
    ("reply_to", "expected"),
    [
        (None, None),
        ("", None),
        ("help@example.com", "help@example.com"),
        ("help@Bücher.example", "help@bücher.example"),
    ],
)
def test_reply_to_is_one_address_or_none(reply_to: Any, expected: str | None) -> None:
    assert parse_message(body(replyTo=reply_to)).reply_to == expected


def test_an_invalid_reply_to_is_an_error_of_its_own_field() -> None:
    assert errors_of(body(replyTo="Help <help@example.com>")) == {
        "ReplyTo": [
            "ReplyTo is not a valid email address: give the bare address, like ann@example.com,"
            + " without a name or angle brackets."
        ]
    }


# ---- subject ----

_SUBJECT_CONTROL = (
    "The field Subject must not contain control characters (line breaks and tabs included),"
    " not even inside an encoded word (=?...?=)."
)


@pytest.mark.parametrize(
    "subject",
    [
        "",
        "Hello",
        "x" * 998,
        "é" * 998,
        "Grüße aus Köln",
        "=?utf-8?q?Caf=C3=A9?=",
        "a = b? yes =?",
        "日本語の件名",
    ],
)
def test_subjects_that_are_accepted(subject: str) -> None:
    assert parse_message(body(subject=subject)).subject == subject


def test_a_subject_of_999_characters_is_too_long() -> None:
    assert errors_of(body(subject="x" * 999)) == {
        "Subject": ["The field Subject must be a string with a maximum length of 998."]
    }


@pytest.mark.parametrize(
    "subject",
    [
        "Hello\r\nBcc: victim@example.com",
        "Hello\n",
        "a\tb",
        "nul\x00",
        "esc\x1b[31m",
        "del\x7f",
        "c1\x85",
        "c1\x9f",
        "line\u2028separator",
        "para\u2029separator",
        # The same, hidden in RFC 2047 encoded words that the mail builder would decode.
        "=?utf-8?q?Hello=0D=0ABcc:_victim@example.com?=",
        # base64 of "Hello\r\nBcc: victim@example.com"
        "=?UTF-8?B?SGVsbG8NCkJjYzogdmljdGltQGV4YW1wbGUuY29t?=",
        "=?utf-8?b?SGVsbG8NCg?=",  # without its padding
        "=?utf-16be?b?AA0ACg==?=",  # CR LF in UTF-16
        "=?iso-8859-1?q?tab=09here?=",
        "=?utf-8?q?=E2=80=A8?=",  # U+2028
        "=?utf-8?q?=3D=3Futf-8=3Fq=3Fa=3D0Ab=3F=3D?=",  # a word holding a word holding LF
        "Re: =?x-unknown?q?a=00b?=",  # an unknown charset is read as Latin-1
    ],
)
def test_control_characters_in_the_subject_are_refused_even_inside_encoded_words(subject: str) -> None:
    assert errors_of(body(subject=subject)) == {"Subject": [_SUBJECT_CONTROL]}


def test_a_missing_subject_is_required_but_an_empty_one_is_fine() -> None:
    assert errors_of(body(subject=_DROP)) == {
        "Subject": ["The field Subject is required (it may be an empty string)."]
    }
    assert parse_message(body(subject="")).subject == ""


# ---- text and html ----


@pytest.mark.parametrize(
    ("text", "html", "expected"),
    [
        ("Hi", _DROP, ("Hi", None)),
        (_DROP, "<p>Hi</p>", (None, "<p>Hi</p>")),
        ("Hi", "<p>Hi</p>", ("Hi", "<p>Hi</p>")),
        ("", "<p>Hi</p>", (None, "<p>Hi</p>")),  # an empty part would become an empty alternative
        ("Hi", "", ("Hi", None)),
        (None, "<p>Hi</p>", (None, "<p>Hi</p>")),
        ("line 1\r\nline 2\ttabbed", None, ("line 1\r\nline 2\ttabbed", None)),  # bodies may hold line breaks
    ],
)
def test_text_html_or_both(text: Any, html: Any, expected: tuple[str | None, str | None]) -> None:
    message = parse_message(body(text=text, html=html))
    assert (message.text, message.html) == expected


@pytest.mark.parametrize(
    ("text", "html"), [(_DROP, _DROP), ("", ""), (None, None), ("", _DROP), (_DROP, None)]
)
def test_a_message_without_a_body_is_an_error_of_text(text: Any, html: Any) -> None:
    assert errors_of(body(text=text, html=html)) == {
        "Text": ["The message has no body: give Text, Html or both."]
    }


# ---- classify ----

ACCEPTED = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
HORIZON = timedelta(hours=24)


class FixedRandom(random.Random):
    """A generator whose every draw is ``value``: uniform(0.5, 1.0) gives 0.5 + 0.5 * value."""

    def __init__(self, value: float) -> None:
        super().__init__(0)
        self.value = value

    def random(self) -> float:
        return self.value


def mail_error(kind: type[MailError], message: str, code: int | None = None) -> MailError:
    error = kind(message, step="Send test message")
    error.code = code  # type: ignore[attr-defined]  # MailError.code, set where the reply was caught
    return error


@pytest.mark.parametrize(
    "error",
    [
        mail_error(SendError, "Recipient rejected: 550 5.1.1 <nobody@example.com>: user unknown", 550),
        mail_error(SendError, "Sender rejected: 553 5.7.1 not allowed to send as this address", 553),
        mail_error(SendError, "Message rejected: 554 5.7.1 spam detected", 554),
        mail_error(SendError, "Message rejected: 552 5.3.4 message too big", 552),
        mail_error(SendError, "The server does not support SMTPUTF8"),  # no reply: our own, as final
    ],
)
def test_a_5xx_to_mail_rcpt_or_data_fails_at_once_with_the_reply(error: MailError) -> None:
    outcome = classify(
        error, attempts=1, accepted_at=ACCEPTED, now=ACCEPTED, horizon=HORIZON, rng=FixedRandom(1)
    )
    assert outcome == Outcome(status="failed", next_attempt_at=None, reason=error.message)


@pytest.mark.parametrize(
    "error",
    [
        mail_error(SendError, "Recipient rejected: 450 4.2.0 mailbox busy", 450),
        mail_error(SendError, "Message rejected: 451 4.7.1 greylisted, try later", 451),
        mail_error(SendError, "Sender rejected: 421 4.3.2 shutting down", 421),
        mail_error(ConnectError, "Connection refused by mail.example.com:25"),
        mail_error(ConnectError, "The server refused the connection: 554 no SMTP service here", 554),
        mail_error(ConnectError, "The connection was closed: 421 4.4.2 idle too long", 421),
        mail_error(TLSError, "The certificate of mail.example.com is not trusted"),
        mail_error(MailTimeout, "No answer to DATA within 30 seconds"),
        mail_error(AuthenticationError, "Authentication failed: 535 5.7.8 bad credentials", 535),
        mail_error(AuthenticationError, "Authentication failed: 454 4.7.0 temporary failure", 454),
        mail_error(OAuth2TokenError, "The token endpoint refused: invalid_client"),
        mail_error(ConfigurationRefused, "192.0.2.1 is in a denied network"),
        mail_error(MailError, "Something unexpected"),
        mail_error(SendError, "Odd reply: 354 go ahead", 354),
    ],
)
def test_everything_else_is_deferred_with_the_error_as_reason(error: MailError) -> None:
    now = ACCEPTED + timedelta(minutes=5)
    outcome = classify(error, attempts=3, accepted_at=ACCEPTED, now=now, horizon=HORIZON, rng=FixedRandom(1))
    assert outcome == Outcome(
        status="deferred", next_attempt_at=now + timedelta(minutes=2), reason=error.message
    )


@pytest.mark.parametrize(
    ("after", "status"),
    [
        (HORIZON - timedelta(seconds=31), "deferred"),
        (HORIZON - timedelta(seconds=30), "deferred"),  # the next try falls exactly on the horizon
        (HORIZON - timedelta(seconds=30) + timedelta(microseconds=1), "failed"),
        (HORIZON, "failed"),
        (HORIZON * 2, "failed"),
    ],
)
def test_the_horizon_is_the_last_moment_a_retry_may_be_scheduled(after: timedelta, status: str) -> None:
    error = mail_error(SendError, "Message rejected: 451 4.7.1 try later", 451)
    outcome = classify(
        error, attempts=1, accepted_at=ACCEPTED, now=ACCEPTED + after, horizon=HORIZON, rng=FixedRandom(1)
    )
    assert outcome.status == status
    if status == "failed":
        assert outcome.next_attempt_at is None
        assert outcome.reason == (
            "Gave up after 1 attempt over 24 hours; the last error: Message rejected: 451 4.7.1 try later"
        )
    else:
        assert outcome.next_attempt_at == ACCEPTED + after + timedelta(seconds=30)


@pytest.mark.parametrize(
    ("attempts", "horizon", "words"),
    [
        (7, timedelta(hours=24), "7 attempts over 24 hours"),
        (2, timedelta(minutes=90), "2 attempts over 90 minutes"),
        (1, timedelta(hours=1), "1 attempt over 1 hour"),
        (3, timedelta(seconds=45), "3 attempts over 45 seconds"),
    ],
)
def test_giving_up_says_how_many_attempts_over_how_long(
    attempts: int, horizon: timedelta, words: str
) -> None:
    error = mail_error(ConnectError, "Connection refused by mail.example.com:25")
    outcome = classify(
        error, attempts=attempts, accepted_at=ACCEPTED, now=ACCEPTED + horizon, horizon=horizon
    )
    assert (
        outcome.reason == f"Gave up after {words}; the last error: Connection refused by mail.example.com:25"
    )


def test_without_an_rng_the_delay_is_still_jittered_within_bounds() -> None:
    error = mail_error(MailTimeout, "No answer within 30 seconds")
    outcome = classify(error, attempts=1, accepted_at=ACCEPTED, now=ACCEPTED, horizon=HORIZON)
    assert outcome.next_attempt_at is not None
    assert timedelta(seconds=15) <= outcome.next_attempt_at - ACCEPTED <= timedelta(seconds=30)


# ---- retry_delay ----


@pytest.mark.parametrize(
    ("attempts", "seconds"),
    [
        (0, 30),  # a count below one is read as the first attempt
        (1, 30),
        (2, 60),
        (3, 120),
        (4, 240),
        (5, 480),
        (6, 960),
        (7, 1920),
        (8, 3600),  # 3840 capped
        (9, 3600),
        (50, 3600),
        (10**9, 3600),
    ],
)
def test_retry_delay_doubles_from_30_seconds_up_to_an_hour(attempts: int, seconds: int) -> None:
    assert retry_delay(attempts, FixedRandom(1.0)) == timedelta(seconds=seconds)
    assert retry_delay(attempts, FixedRandom(0.0)) == timedelta(seconds=seconds / 2)


@pytest.mark.parametrize("attempts", [1, 4, 8, 20])
def test_retry_delay_jitter_stays_within_half_and_whole_and_spreads(attempts: int) -> None:
    full = retry_delay(attempts, FixedRandom(1.0))
    rng = random.Random(20250301)
    delays = [retry_delay(attempts, rng) for _ in range(1000)]
    assert all(full / 2 <= delay <= full for delay in delays)
    # The point of the jitter: retries of one outage's messages do not come back together.
    assert min(delays) < full * 0.55
    assert max(delays) > full * 0.95
    assert len(set(delays)) > 900


def test_the_first_retry_can_be_shortened_and_still_grows() -> None:
    first = timedelta(seconds=1)
    assert [retry_delay(n, FixedRandom(1), first) for n in (1, 2, 3)] == [
        timedelta(seconds=1), timedelta(seconds=2), timedelta(seconds=4)
    ]


def test_a_huge_recipient_list_is_refused_by_its_count_alone() -> None:
    with pytest.raises(ValidationFailed) as refused:
        parse_message({"to": ["a@x.test"] * 1001, "subject": "s", "text": "t"})
    assert refused.value.errors == {
        "To": ["The message lists 1001 addresses in To, Cc and Bcc; at most 100 recipients are allowed."]
    }
    # Up to ten entries a recipient are still read: repeats of one address are one recipient.
    assert parse_message({"to": ["a@x.test"] * 1000, "subject": "s", "text": "t"}).recipients == ("a@x.test",)


def test_errors_of_one_field_are_listed_up_to_twenty() -> None:
    with pytest.raises(ValidationFailed) as refused:
        parse_message({"to": ["nope"] * 50, "subject": "s", "text": "t"})
    listed = refused.value.errors["To"]
    assert len(listed) == 21 and listed[-1] == "More problems in To are not listed."


# --- per-recipient outcomes -------------------------------------------------------------------------------


def _o(address: str, status: Any, reply: str | None = None) -> RecipientOutcome:
    return RecipientOutcome(address, status, reply)


def test_every_recipient_accepted_is_sent_without_an_error() -> None:
    settled = settle([], [_o("a@x", "accepted", "250 ok"), _o("b@x", "accepted", "250 ok")], None)
    assert (settled.status, settled.pending, settled.reason) == ("sent", (), None)


def test_a_deferred_recipient_keeps_the_message_deferred_and_is_the_only_one_left_to_try() -> None:
    attempt = [_o("a@x", "accepted", "250 ok"), _o("b@x", "refused", "550 gone"), _o("c@x", "deferred", "450 busy")]
    settled = settle([], attempt, "Recipient deferred: 450 busy")
    assert (settled.status, settled.pending, settled.reason) == ("deferred", ("c@x",), "Recipient deferred: 450 busy")


def test_earlier_outcomes_stay_and_the_retried_recipient_replaces_its_own_whatever_its_case() -> None:
    previous = [_o("a@x", "accepted", "250 ok"), _o("b@x", "refused", "550 gone"), _o("C@x", "deferred", "450 busy")]
    settled = settle(previous, [_o("c@x", "accepted", "250 later")], None)
    assert settled.status == "partial" and settled.pending == ()
    assert [(o.address, o.status) for o in settled.outcomes] == [("a@x", "accepted"), ("b@x", "refused"), ("c@x", "accepted")]
    assert settled.reason == "Delivered to 2 of 3 recipients; not to the others: 550 gone"


def test_none_accepted_is_failed_and_a_retry_would_try_everyone() -> None:
    settled = settle([], [_o("a@x", "refused", "550 gone"), _o("b@x", "failed", "Gave up")], "Recipient rejected: 550 gone")
    assert (settled.status, settled.pending, settled.reason) == ("failed", ("a@x", "b@x"), "Recipient rejected: 550 gone")


def test_a_4xx_refusal_follows_its_retry_and_a_5xx_is_refused_for_good() -> None:
    refusals = [Refusal("b@x", 550, "550 gone"), Refusal("c@x", 450, "450 busy"), Refusal("d@x", None, "cannot be sent")]
    retry = Outcome(status="failed", next_attempt_at=None, reason="Gave up after 9 attempts")
    outcomes = delivery_outcomes(["a@x"], refusals, "250 ok", retry)
    assert [(o.address, o.status, o.reply) for o in outcomes] == [
        ("a@x", "accepted", "250 ok"), ("b@x", "refused", "550 gone"), ("c@x", "failed", "450 busy"), ("d@x", "refused", "cannot be sent"),
    ]


@pytest.mark.parametrize(
    ("message_status", "stored", "shown"),
    [
        ("queued", None, "pending"),
        ("sent", None, "accepted"),  # a message from before per-recipient outcomes
        ("failed", None, "failed"),
        ("cancelled", _o("a@x", "deferred", "450 busy"), "cancelled"),
        ("queued", _o("a@x", "failed", "550 gone"), "pending"),  # an admin's retry: tried again
        ("deferred", _o("a@x", "deferred", "450 busy"), "deferred"),
        ("queued", _o("a@x", "refused", "550 gone"), "refused"),
    ],
)
def test_a_recipients_state_is_its_own_outcome_or_the_messages(message_status: str, stored: RecipientOutcome | None, shown: str) -> None:
    [state] = recipient_states(["a@x", "A@x"], [stored] if stored else None, message_status)
    assert (state.address, state.status) == ("a@x", shown)
    assert state.reply == (stored.reply if stored else None)


def test_only_the_shown_recipients_are_listed() -> None:
    states = recipient_states(["a@x"], [_o("a@x", "accepted", "250"), _o("bcc@x", "refused", "550 bcc@x gone")], "partial")
    assert [s.address for s in states] == ["a@x"]
