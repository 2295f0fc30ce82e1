"""Messages the service sends."""

from __future__ import annotations

import email.policy
from datetime import UTC, datetime
from email.errors import HeaderParseError
from email.headerregistry import Address, BaseHeader, HeaderRegistry
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid

__all__ = ["TEST_SUBJECT", "build_test_message"]

TEST_SUBJECT = "SMTP test message"
TEST_BODY = (
    "This is a test message sent to verify the SMTP settings.\n"
    "If you received it, the settings work; no reply is needed.\n"
)


class _HeaderClasses(HeaderRegistry):
    """The standard registry, except that each header's class is made once, not on every header set.

    The stdlib creates a fresh class (``type(...)``) each time a header is parsed: most of the cost of
    building a message, which every test mail pays on the event loop.
    """

    def __init__(self) -> None:
        super().__init__()
        self._made: dict[str, type[BaseHeader]] = {}

    def __getitem__(self, name: str) -> type[BaseHeader]:
        key = name.lower()
        made = self._made.get(key)
        if made is None:
            made = self._made[key] = super().__getitem__(name)
        return made

    def map_to_type(self, name: str, cls: type[BaseHeader]) -> None:
        super().map_to_type(name, cls)
        self._made.pop(name.lower(), None)


_POLICY = email.policy.default.clone(header_factory=_HeaderClasses())


def _address(addr_spec: str, display_name: str = "", *, role: str) -> Address:
    try:
        address = Address(display_name=display_name, addr_spec=addr_spec.strip())
    except (HeaderParseError, ValueError, IndexError) as exc:
        raise ValueError(f"Invalid {role} address: {addr_spec!r}") from exc
    if not address.username or not address.domain:
        raise ValueError(f"Invalid {role} address: {addr_spec!r}")
    return address


def _msgid_domain(domain: str) -> str:
    # Message-ID must be ASCII; internationalised domains go out as A-labels.
    try:
        return domain.encode("idna").decode("ascii")
    except UnicodeError:
        return "localhost"


def build_test_message(*, sender_address: str, sender_display_name: str, recipient: str) -> EmailMessage:
    """Build the "test mail" an admin sends to check their settings.

    ``Auto-Submitted: auto-generated`` (RFC 3834) keeps vacation responders
    from answering it; Message-ID uses the sender's domain so receiving
    spam filters see a consistent origin.

    Raises:
        ValueError: ``sender_address`` or ``recipient`` is not an address.
    """
    sender = _address(sender_address, sender_display_name or "", role="sender")
    to = _address(recipient, role="recipient")
    message = EmailMessage(policy=_POLICY)
    message["From"] = sender
    message["To"] = to
    message["Subject"] = TEST_SUBJECT
    message["Date"] = format_datetime(datetime.now(UTC))
    message["Message-ID"] = make_msgid(domain=_msgid_domain(sender.domain))
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(TEST_BODY)
    return message
