"""Messages the service sends.

Python's email package decodes RFC 2047 encoded words it finds in a display name and, sending SMTPUTF8
or quoting, may write what they hold back out raw: a CR LF as a real line break (``Bcc:``), a comma as an
address separator. So encoded words are decoded here first, and the name then goes in as the plain text
it stands for, which the package quotes and encodes properly. And every message is checked as the bytes
it becomes before it is handed out: the header block may hold only the header lines the builder set.
"""

from __future__ import annotations

import email.header
import email.policy
import re
from collections import Counter
from datetime import UTC, datetime
from email.errors import HeaderParseError, MessageError
from email.headerregistry import Address, BaseHeader, HeaderRegistry
from email.message import EmailMessage, Message
from email.utils import format_datetime, make_msgid

import idna

__all__ = ["TEST_SUBJECT", "HeaderInjection", "build_test_message", "check_header_lines"]

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


class HeaderInjection(ValueError):
    """The flattened message has a header line the builder did not set: refused rather than sent."""


def _plain_text(display_name: str) -> str:
    """``display_name`` with its encoded words decoded, to the bottom (a word may encode another)."""
    for _ in range(8):  # each level is shorter than the one before; a name is at most 255 characters
        if "=?" not in display_name:
            break
        try:
            decoded = str(email.header.make_header(email.header.decode_header(display_name)))
        except (MessageError, LookupError, UnicodeError):  # malformed: left for the final check to judge
            break
        if decoded == display_name:
            break
        display_name = decoded
    return display_name


def _address(addr_spec: str, display_name: str = "", *, role: str) -> Address:
    display_name = _plain_text(display_name)
    if "\r" in display_name or "\n" in display_name:
        raise HeaderInjection(f"Refusing to build the message: the {role} display name contains a line break")
    try:
        address = Address(display_name=display_name, addr_spec=addr_spec.strip())
    except (HeaderParseError, ValueError, IndexError) as exc:
        raise ValueError(f"Invalid {role} address: {addr_spec!r}") from exc
    if not address.username or not address.domain:
        raise ValueError(f"Invalid {role} address: {addr_spec!r}")
    return address


def _msgid_domain(domain: str) -> str:
    # Message-ID must be ASCII; internationalised domains go out as A-labels (IDNA 2008, as hosts do).
    try:
        return idna.encode(domain, uts46=True).decode("ascii")
    except (idna.IDNAError, UnicodeError):
        return "localhost"


_FIELD_NAME = re.compile(rb"([!-9;-~]+):")  # RFC 5322 field name: printable ASCII but the colon
# CTLs but HTAB (CR and LF only as CRLF), and NEL, LINE and PARAGRAPH SEPARATOR in UTF-8: line breaks to
# a reader that splits decoded text with str.splitlines.
_BAD_HEADER_BYTE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]|\xc2\x85|\xe2\x80[\xa8\xa9]")
# What the client sends with: SMTPUTF8 when an address needs it, plain SMTP (encoded words) otherwise.
_SEND_POLICIES = (email.policy.SMTPUTF8, email.policy.SMTP)


def check_header_lines(message: Message) -> None:
    """Raise unless every flattened header line is one the builder set, or a folded continuation.

    The last line of defence against header injection, on the bytes themselves, with each policy the
    client may send with: each line must be ``Name:`` for a header in ``message.keys()`` (each as often as
    it was set) or start with a space or tab and carry more than whitespace; and no control character but
    HTAB may appear. A blank line inside would end the header block early, so the set of header lines
    must come out complete.

    Raises:
        HeaderInjection: a line break or header the builder did not put there.
    """
    expected = Counter(name.lower() for name in message.keys())
    for policy in _SEND_POLICIES:
        flat = message.as_bytes(policy=policy)
        head = flat.split(b"\r\n\r\n", 1)[0]
        seen: Counter[str] = Counter()
        for line in head.split(b"\r\n"):
            if _BAD_HEADER_BYTE.search(line):
                raise HeaderInjection(
                    f"a header line holds a control character or stray line break: {_shown(line)}"
                )
            if line[:1] in (b" ", b"\t"):
                if not seen or not line.strip():
                    raise HeaderInjection(
                        f"a header line break was not put there by the builder: {_shown(line)}"
                    )
                continue
            name = _FIELD_NAME.match(line)
            if name is None:
                raise HeaderInjection(f"a header line is not a header: {_shown(line)}")
            seen[name.group(1).decode("ascii").lower()] += 1
        if seen != expected:
            extra = sorted((seen - expected).elements()) or sorted((expected - seen).elements())
            raise HeaderInjection(f"the header lines are not the ones the builder set ({', '.join(extra)})")
        if flat.isascii():
            break  # no non-ASCII text, which is all the policies differ on: SMTP would write the same bytes


def _shown(line: bytes) -> str:
    text = line.decode("utf-8", "replace")
    return repr(text if len(text) <= 80 else text[:77] + "...")


def build_test_message(*, sender_address: str, sender_display_name: str, recipient: str) -> EmailMessage:
    """Build the "test mail" an admin sends to check their settings.

    ``Auto-Submitted: auto-generated`` (RFC 3834) keeps vacation responders
    from answering it; Message-ID uses the sender's domain so receiving
    spam filters see a consistent origin.

    Raises:
        ValueError: ``sender_address`` or ``recipient`` is not an address.
        HeaderInjection (a ValueError): a value would have added header lines, e.g. a display name
            holding CR LF, raw or in an encoded word.
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
    try:
        check_header_lines(message)
    except HeaderInjection as exc:
        raise HeaderInjection(
            f"Refusing to build the message: {exc} (check the sender display name)"
        ) from None
    return message
