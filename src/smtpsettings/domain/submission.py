"""Rules for a message an application submits over SMTP: who it may claim to be, and what is kept of it.

The message is relayed as the application wrote it; only two things change. A ``Bcc`` header is removed
(its recipients are already in the envelope, and the header would tell every recipient who else got it,
RFC 6409 section 8.1), and a ``Message-ID`` is added when missing, because the outbox fixes it at
acceptance so that a resend after a crash is recognisable downstream.
"""

from __future__ import annotations

import email.errors
import email.header
import email.parser
import email.policy
import email.utils
import re
from collections.abc import Iterable

import msgspec

from smtpsettings.domain.errors import BadArgument

__all__ = ("Submitted", "allowed_sender", "read_submitted", "sender_refusal")

# Header section and body: the first empty line ends the headers (CRLF as sent; bare LF tolerated).
_HEAD_END = re.compile(rb"\r?\n\r?\n")
_FIELD_START = re.compile(rb"^([!-9;-~]+):", re.MULTILINE)


class Submitted(msgspec.Struct, frozen=True):
    """What the outbox stores of a submitted message besides its bytes."""

    content: bytes
    to: tuple[str, ...]
    cc: tuple[str, ...]
    subject: str
    message_id: str
    added_message_id: bool


def allowed_sender(address: str, allowed: Iterable[str]) -> bool:
    """Whether ``address`` is one of ``allowed`` (compared case-insensitively, as mailbox owners expect)."""
    wanted = address.strip().lower()
    return bool(wanted) and any(wanted == a.strip().lower() for a in allowed if a)


def read_submitted(content: bytes, *, allowed_senders: tuple[str, ...], new_message_id: str) -> Submitted:
    """Check a submitted message's From and prepare it for the outbox.

    Raises:
        BadArgument: no header section, no From or one with several addresses, or a From that is not one of
            ``allowed_senders`` (the sentence names those).
    """
    match = _HEAD_END.search(content)
    head = content[: match.start()] if match else content
    if not _FIELD_START.match(head):
        raise BadArgument("The message has no header section: it must start with header fields such as From.")
    # Header fields may be raw UTF-8 (RFC 6532, with the SMTPUTF8 the port offers); other 8-bit bytes are
    # not text in any known charset and are read as replacement characters.
    text = head.decode("utf-8", errors="replace")
    headers = email.parser.HeaderParser(policy=email.policy.compat32).parsestr(text + "\r\n\r\n")
    senders = _addresses(headers.get_all("From", []))
    if len(senders) != 1:
        raise BadArgument("The message must have one From header with one address.")
    if not allowed_sender(senders[0], allowed_senders):
        raise BadArgument(f"The From address {senders[0]} is not allowed here: {_allowed(allowed_senders)}.")
    message_id = str(headers.get("Message-ID") or "").strip()
    added = not message_id
    if added:
        if headers.get_all("Message-ID"):  # present but empty: replaced, for a message has at most one
            content = _without_field(content, b"message-id")
        message_id = new_message_id
        content = b"Message-ID: " + message_id.encode("ascii") + b"\r\n" + content
    if headers.get_all("Bcc"):
        content = _without_field(content, b"bcc")
    return Submitted(
        content=content,
        to=tuple(_addresses(headers.get_all("To", []))),
        cc=tuple(_addresses(headers.get_all("Cc", []))),
        subject=_decoded(headers.get("Subject")),
        message_id=message_id,
        added_message_id=added,
    )


def sender_refusal(address: str, allowed_senders: tuple[str, ...]) -> str:
    """The sentence refusing an envelope sender, naming the addresses that are allowed."""
    return f"The sender {address or '<>'} is not allowed here: {_allowed(allowed_senders)}."


def _allowed(allowed_senders: tuple[str, ...]) -> str:
    shown = [a for a in dict.fromkeys(a.lower() for a in allowed_senders if a)]
    return "send as " + " or ".join(shown) if shown else "this portal has no sender address"


def _addresses(values: list[str]) -> list[str]:
    return [addr for _, addr in email.utils.getaddresses([str(v) for v in values]) if addr]


def _decoded(value: object) -> str:
    if value is None:
        return ""
    try:
        text = str(email.header.make_header(email.header.decode_header(str(value))))
    except (UnicodeError, LookupError, ValueError, email.errors.HeaderParseError):
        text = str(value)
    return " ".join(text.split())  # unfolded: one line for lists and logs


def _without_field(content: bytes, name: bytes) -> bytes:
    """``content`` without the header field ``name`` (lower case), continuation lines included."""
    match = _HEAD_END.search(content)
    head, rest = (content[: match.start()], content[match.start() :]) if match else (content, b"\r\n")
    kept: list[bytes] = []
    dropping = False
    for line in head.splitlines(keepends=True):
        if line[:1] not in (b" ", b"\t"):  # a new field; a continuation belongs to the one before
            dropping = line.split(b":", 1)[0].strip().lower() == name
        if not dropping:
            kept.append(line)
    # ``rest`` starts with the last field's line break and the empty line after it.
    return b"".join(kept).rstrip(b"\r\n") + rest
