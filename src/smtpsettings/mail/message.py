"""Messages the service sends.

Python's email package decodes RFC 2047 encoded words it finds in a display name and, sending SMTPUTF8
or quoting, may write what they hold back out raw: a CR LF as a real line break (``Bcc:``), a comma as an
address separator. So encoded words are decoded here first, and the name then goes in as the plain text
it stands for, which the package quotes and encodes properly. And every message is checked as the bytes
it becomes before it is handed out: the header block may hold only the header lines the builder set.

:func:`flatten` turns a message into the bytes that go after DATA (Bcc removed) and says whether the
session needs SMTPUTF8; :func:`envelope_of` reads the envelope from the headers for the one-shot test mail.
"""

from __future__ import annotations

import copy
import functools
import email.header
import email.policy
import email.utils
import io
import re
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from email.errors import HeaderParseError, MessageError, NonASCIILocalPartDefect
from email.generator import BytesGenerator
from email.headerregistry import Address, BaseHeader, HeaderRegistry
from email.message import EmailMessage, Message
from email.utils import format_datetime, make_msgid

import idna

from smtpsettings.mail.plain_message import plain_message

__all__ = [
    "TEST_SUBJECT",
    "HeaderInjection",
    "build_flat",
    "build_message",
    "build_test_message",
    "check_header_lines",
    "envelope_of",
    "flatten",
    "new_message_id",
]

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
# Bodies as quoted-printable or base64 when not plain ASCII: 7-bit clean, so no server needs 8BITMIME.
_BODY_POLICY = _POLICY.clone(cte_type="7bit")


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
    addr_spec = addr_spec.strip()
    try:
        try:
            address = Address(display_name=display_name, addr_spec=addr_spec)
        except NonASCIILocalPartDefect:
            address = _utf8_address(addr_spec, display_name)
    except (HeaderParseError, ValueError, IndexError) as exc:
        raise ValueError(f"Invalid {role} address: {addr_spec!r}") from exc
    if not address.username or not address.domain:
        raise ValueError(f"Invalid {role} address: {addr_spec!r}")
    return address


_NON_ASCII = re.compile(r"[^\x00-\x7f]")


def _utf8_address(addr_spec: str, display_name: str) -> Address:
    """An address with a UTF-8 local part (RFC 6531, sent with SMTPUTF8), which the stdlib parser refuses.

    The local part must parse as an unquoted dot-atom once each non-ASCII character stands for a
    letter; then it is given to ``Address`` in pieces, which it accepts.
    """
    stand_in = Address(addr_spec=_NON_ASCII.sub("a", addr_spec))
    username, _, domain = addr_spec.rpartition("@")
    if stand_in.username != _NON_ASCII.sub("a", username):  # quoted or otherwise rewritten
        raise ValueError(addr_spec)
    if not all(ch.isprintable() and not ch.isspace() for ch in username):  # no separators, no controls
        raise ValueError(addr_spec)
    return Address(display_name=display_name, username=username, domain=domain)


@functools.lru_cache(maxsize=1024)  # a portal sends from one or two domains: IDNA once each, not per message
def _msgid_domain(domain: str) -> str:
    # Message-ID must be ASCII; internationalised domains go out as A-labels (IDNA 2008, as hosts do).
    try:
        return idna.encode(domain, uts46=True).decode("ascii")
    except (idna.IDNAError, UnicodeError):
        return "localhost"


def new_message_id(sender_domain: str) -> str:
    """A fresh ``<...@domain>`` Message-ID on the sender's domain (an A-label when internationalised).

    The outbox fixes it at acceptance, so a retry after a lost acknowledgement carries the same id and
    receivers can recognise the duplicate.
    """
    return make_msgid(domain=_msgid_domain(sender_domain))


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
        # The header block exactly as the generator writes it (its _write_headers), without flattening
        # the body: for an outbox message the body is most of the cost and plays no part here.
        flat = b"".join(policy.fold_binary(name, value) for name, value in message.raw_items()) + b"\r\n"
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
    message["Message-ID"] = new_message_id(sender.domain)
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(TEST_BODY)
    try:
        check_header_lines(message)
    except HeaderInjection as exc:
        raise HeaderInjection(
            f"Refusing to build the message: {exc} (check the sender display name)"
        ) from None
    return message


_MESSAGE_ID = re.compile(r"<[!-;=?-~]+@[!-;=?-~]+>")  # printable ASCII but < and >, one @ at least


def build_message(
    *,
    sender_address: str,
    sender_display_name: str,
    to: Sequence[str],
    cc: Sequence[str] = (),
    bcc: Sequence[str] = (),
    reply_to: str | None = None,
    subject: str,
    text: str | None = None,
    html: str | None = None,
    message_id: str,
) -> EmailMessage:
    """Build an outgoing message as the outbox stores and sends it.

    Addresses are bare addr-specs (``a@example.com``). ``bcc`` is checked like the others but never
    becomes a header: the caller puts those recipients in the envelope only. With both ``text`` and
    ``html`` the body is multipart/alternative (text first, so the richest part comes last, as RFC 2046
    wants). ``message_id`` is used as given (see :func:`new_message_id`); ``Date`` is now.

    Raises:
        ValueError: an address or the Message-ID is not one, or neither ``text`` nor ``html`` was given.
        HeaderInjection (a ValueError): a value would have added header lines (a line break in the subject
            or a display name, raw or in an encoded word).
    """
    if text is None and html is None:
        raise ValueError("A message needs a text or an HTML body")
    if _MESSAGE_ID.fullmatch(message_id) is None:
        raise ValueError(f"Invalid Message-ID: {message_id!r} (expected <id@domain>)")
    if len(f"{subject}.".splitlines()) > 1:  # what the email package itself refuses, as HeaderInjection
        raise HeaderInjection("Refusing to build the message: the subject contains a line break")
    sender = _address(sender_address, sender_display_name or "", role="sender")
    to_addresses = [_address(a, role="recipient") for a in to]
    cc_addresses = [_address(a, role="recipient") for a in cc]
    for a in bcc:
        _address(a, role="recipient")
    reply = _address(reply_to, role="reply-to") if reply_to else None

    message = EmailMessage(policy=_BODY_POLICY)
    message["From"] = sender
    if to_addresses:
        message["To"] = to_addresses
    if cc_addresses:
        message["Cc"] = cc_addresses
    if reply is not None:
        message["Reply-To"] = reply
    message["Subject"] = subject
    message["Date"] = format_datetime(datetime.now(UTC))
    message["Message-ID"] = message_id
    if text is not None:
        message.set_content(text)
        if html is not None:
            message.add_alternative(html, subtype="html")
    else:
        assert html is not None
        message.set_content(html, subtype="html")
    try:
        check_header_lines(message)
    except HeaderInjection as exc:
        raise HeaderInjection(f"Refusing to build the message: {exc}") from None
    return message


def build_flat(
    *,
    sender_address: str,
    sender_display_name: str,
    to: Sequence[str],
    cc: Sequence[str] = (),
    bcc: Sequence[str] = (),
    reply_to: str | None = None,
    subject: str,
    text: str | None = None,
    html: str | None = None,
    message_id: str,
) -> tuple[bytes, bool]:
    """``flatten(build_message(...))``: the same bytes and SMTPUTF8 flag, the same errors.

    A plain message (see :mod:`smtpsettings.mail.plain_message`) is written directly; any other takes
    the full way through the email package, which also raises the errors.
    """
    if _MESSAGE_ID.fullmatch(message_id) is not None:
        plain = plain_message(
            sender_address=sender_address, sender_display_name=sender_display_name or "", to=to, cc=cc, bcc=bcc,
            reply_to=reply_to, subject=subject, text=text, html=html, message_id=message_id,
        )
        if plain is not None:
            return plain, False
    return flatten(build_message(
        sender_address=sender_address, sender_display_name=sender_display_name, to=to, cc=cc, bcc=bcc,
        reply_to=reply_to, subject=subject, text=text, html=html, message_id=message_id,
    ))


_ADDRESS_FIELDS = ("From", "Sender", "To", "Cc", "Bcc", "Reply-To")


def _addresses(message: Message, fields: Sequence[str]) -> list[str]:
    return [
        addr
        for field in fields
        for _, addr in email.utils.getaddresses([str(v) for v in message.get_all(field, [])])
        if addr
    ]


def envelope_of(message: Message) -> tuple[str, list[str]]:
    """The envelope sender (``Sender``, else ``From``) and recipients (``To``, ``Cc``, ``Bcc``) of ``message``."""
    senders = _addresses(message, ("Sender",)) or _addresses(message, ("From",))
    return (senders[0] if senders else ""), _addresses(message, ("To", "Cc", "Bcc"))


def flatten(message: Message) -> tuple[bytes, bool]:
    """The bytes to send after DATA, and whether the session needs SMTPUTF8.

    SMTPUTF8 is needed when an address in the headers is not ASCII: only then may a header carry raw
    UTF-8 (RFC 6532); otherwise non-ASCII display names and subjects go as encoded words. ``Bcc`` must
    reach the envelope but never the headers, so it is dropped here.
    """
    utf8 = not all(a.isascii() for a in _addresses(message, _ADDRESS_FIELDS))
    if "Bcc" in message:
        message = copy.deepcopy(message)
        del message["Bcc"]
    buffer = io.BytesIO()
    BytesGenerator(buffer, policy=email.policy.SMTPUTF8 if utf8 else email.policy.SMTP).flatten(message)
    return buffer.getvalue(), utf8
