from __future__ import annotations

import email
import email.policy
import email.utils

import pytest

from smtpsettings.mail import TEST_SUBJECT, build_test_message


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
