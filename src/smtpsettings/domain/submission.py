"""Rules for a message an application submits over SMTP: who it may claim to be, and what is kept of it.

The message is relayed as the application wrote it; only three things change. Every ``Bcc`` and
``Resent-Bcc`` field is removed (their recipients are already in the envelope, and the field would tell
every recipient who else got it, RFC 6409 section 8.1); a ``Message-ID`` is added when missing, because the
outbox fixes it at acceptance so that a resend after a crash is recognisable downstream; and a ``Received``
trace field is put on top (RFC 5321 section 4.4), which is also how a message that comes back is recognised.

Header field names are read as RFC 5322 section 4.5 still allows them to be written, with white space
before the colon (``Bcc :``): a receiving server reads ``From : x`` as a From field, so the rules must too.
"""

from __future__ import annotations

import email.errors
import email.header
import email.utils
import functools
import re
from collections.abc import Iterable
from datetime import datetime, timedelta, tzinfo
from typing import NamedTuple

import msgspec

from smtpsettings.domain.errors import BadArgument, MailLoop, SenderInFlux

__all__ = (
    "MAX_RECEIVED",
    "NULL_SENDER_REFUSAL",
    "SENDER_GRACE",
    "Received",
    "Submitted",
    "Trace",
    "allowed_sender",
    "check_envelope_sender",
    "read_submitted",
    "sender_refusal",
)

MAX_RECEIVED = 25
"""More ``Received`` fields than this and a message is taken to be in a loop (RFC 5321 section 6.3)."""

SENDER_GRACE = timedelta(minutes=10)
"""After the portal's settings are saved or reset, a sender that is not allowed is refused as temporary this long.

Long enough for whoever configures the client MTA to follow the new sender address; the MTA keeps the mail
meanwhile and retries, and a sender still refused after that is refused for good.
"""

NULL_SENDER_REFUSAL = (
    "The null sender <> is not accepted: a bounce stays with the mail server that made it, "
    "and is reported to its own postmaster."
)

# Header section and body: the first empty line ends the headers (CRLF as sent; bare LF tolerated).
_HEAD_END = re.compile(rb"\r?\n\r?\n")
_FIELD_NAME = re.compile(rb"([!-9;-~]+)[ \t]*:")
_HIDDEN = frozenset({"bcc", "resent-bcc"})
# The fields that name who a message is from; each address in them must be one the portal may send as.
_SENDER_FIELDS = {"from": "From", "sender": "Sender", "resent-from": "Resent-From", "resent-sender": "Resent-Sender"}
_BY = re.compile(r"\bby\s+([^\s;()]+)\s*\(smtpsettings\)", re.IGNORECASE)
_CLIENT_NAME = re.compile(r"[A-Za-z0-9.:_\[\]-]{1,255}")
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_DOT_ATOM_ADDRESS = rf"{_ATOM}(?:\.{_ATOM})*@{_ATOM}(?:\.{_ATOM})*"
# One address, bare or after a name of plain words; white space around it (a folded field's) is allowed.
_PLAIN_ADDRESS = re.compile(rf"[ \t]*(?:({_DOT_ATOM_ADDRESS})|{_ATOM}(?: {_ATOM})* <({_DOT_ATOM_ADDRESS})>)[ \t]*")


class Trace(msgspec.Struct, frozen=True):
    """How a message reached the submission port: what its ``Received`` field records.

    ``by`` is this service's host name, and also how the service recognises its own field in a message
    that comes back to it.
    """

    by: str
    client_name: str
    """What the client said in EHLO; anything that is not a plain name or address literal is left out."""
    client_address: str
    protocol: str
    """``ESMTPSA`` and the like (RFC 3848, RFC 6531)."""


class Received(msgspec.Struct, frozen=True):
    """The ``Received`` field of one accepted message: its trace, its queue id and when it was accepted."""

    trace: Trace
    id: str
    at: datetime

    def field(self) -> bytes:
        t = self.trace
        name = t.client_name if _CLIENT_NAME.fullmatch(t.client_name) else "unknown"
        literal = f"IPv6:{t.client_address}" if ":" in t.client_address else t.client_address
        stamp = _date_time(self.at.replace(microsecond=0), self.at.tzinfo)
        text = f"Received: from {name} ([{literal}])\r\n\tby {t.by} (smtpsettings) with {t.protocol} id {self.id};\r\n\t{stamp}\r\n"
        return text.encode("utf-8")


@functools.lru_cache(maxsize=4)
def _date_time(at: datetime, zone: tzinfo | None) -> str:
    """RFC 5322 date-time of ``at`` (to the second): the messages accepted in one second share it, and
    formatting it anew cost more than the rest of the field. ``zone`` is part of the key because equal
    instants in other zones compare (and hash) equal, and are written with their own offsets."""
    return email.utils.format_datetime(at)


class Submitted(msgspec.Struct, frozen=True):
    """What the outbox stores of a submitted message besides its bytes."""

    content: bytes
    to: tuple[str, ...]
    cc: tuple[str, ...]
    subject: str
    message_id: str
    added_message_id: bool


class _Field(NamedTuple):
    name: str
    """Lower case, without the white space before the colon."""
    value: str
    """Unfolded text after the colon."""
    start: int
    end: int
    """Byte offsets of the whole field in the header section, line breaks included."""


def allowed_sender(address: str, allowed: Iterable[str]) -> bool:
    """Whether ``address`` is one of ``allowed`` (compared case-insensitively, as mailbox owners expect)."""
    wanted = address.strip().lower()
    return bool(wanted) and any(wanted == a.strip().lower() for a in allowed if a)


def check_envelope_sender(
    address: str, allowed: tuple[str, ...], *, settings_changed_at: datetime | None, now: datetime
) -> None:
    """Whether ``MAIL FROM`` may name ``address``, and if not, whether the refusal is for good.

    The null sender (``<>``, a bounce from a client MTA) is always refused for good: the client's bounce
    then becomes a double bounce to its own postmaster, which stays local (or is discarded when that fails
    too), so nothing goes round between the two servers. Any other sender that is not allowed is refused
    as temporary while the portal's settings changed less than :data:`SENDER_GRACE` ago (``settings_changed_at``,
    None when they never changed), so the client keeps the mail and retries; after that for good.

    Raises:
        BadArgument: refused for good (SMTP 550 5.7.1).
        SenderInFlux: refused for now (SMTP 451 4.7.1).
    """
    if address in ("", "<>"):
        raise BadArgument(NULL_SENDER_REFUSAL)
    if allowed_sender(address, allowed):
        return
    if settings_changed_at is not None and now - settings_changed_at < SENDER_GRACE:
        minutes = SENDER_GRACE // timedelta(minutes=1)
        raise SenderInFlux(
            f"{sender_refusal(address, allowed)[:-1]}; the portal's settings changed in the last {minutes} minutes, so try again later."
        )
    raise BadArgument(sender_refusal(address, allowed))


def read_submitted(
    content: bytes, *, allowed_senders: tuple[str, ...], new_message_id: str, received: Received | None = None
) -> Submitted:
    """Check a submitted message's header fields and prepare it for the outbox.

    Raises:
        BadArgument: no header section or a line in it that is not a field; not exactly one From with one
            address; an address in From, Sender, Resent-From or Resent-Sender that is not one of
            ``allowed_senders`` (the sentence names those).
        MailLoop: more than :data:`MAX_RECEIVED` ``Received`` fields, or one that ``received.trace.by`` wrote.
    """
    match = _HEAD_END.search(content)
    head = content[: match.start()] if match else content
    fields = _fields(head)
    _check_senders(fields, allowed_senders)
    if received is not None:
        _check_loop(fields, received.trace.by)
    message_ids = [f for f in fields if f.name == "message-id"]
    message_id = message_ids[0].value.strip() if message_ids else ""
    added = not message_id
    # An empty Message-ID is replaced, not doubled: a message has at most one.
    dropped = [f for f in fields if f.name in _HIDDEN or (added and f.name == "message-id")]
    if dropped:
        content = _without(content, dropped)
    if added:
        message_id = new_message_id
        content = b"Message-ID: " + message_id.encode("ascii") + b"\r\n" + content
    if received is not None:
        content = received.field() + content  # trace fields go on top, newest first
    subjects = [f.value for f in fields if f.name == "subject"]
    return Submitted(
        content=content,
        to=tuple(_addresses(f.value for f in fields if f.name == "to")),
        cc=tuple(_addresses(f.value for f in fields if f.name == "cc")),
        subject=_decoded(subjects[0] if subjects else None),
        message_id=message_id,
        added_message_id=added,
    )


def _fields(head: bytes) -> list[_Field]:
    """The header section's fields in order; continuation lines belong to the field before them."""
    fields: list[_Field] = []
    offset = 0
    for number, line in enumerate(head.splitlines(keepends=True), 1):
        if line[:1] in (b" ", b"\t") and fields:
            last = fields[-1]
            fields[-1] = last._replace(value=last.value + _text(line), end=offset + len(line))
        else:
            name = _FIELD_NAME.match(line)
            if name is None and number == 1:
                raise BadArgument("The message has no header section: it must start with header fields such as From.")
            if name is None:
                raise BadArgument(f"Line {number} of the header section is not a header field (a name, a colon and a value).")
            value = _text(line[name.end() :])
            fields.append(_Field(name.group(1).decode("ascii").lower(), value, offset, offset + len(line)))
        offset += len(line)
    if not fields:
        raise BadArgument("The message has no header section: it must start with header fields such as From.")
    return fields


def _text(raw: bytes) -> str:
    # Header fields may be raw UTF-8 (RFC 6532, with the SMTPUTF8 the port offers); other 8-bit bytes are
    # not text in any known charset and are read as replacement characters.
    return raw.decode("utf-8", errors="replace").rstrip("\r\n")


def _check_senders(fields: list[_Field], allowed_senders: tuple[str, ...]) -> None:
    froms = [f for f in fields if f.name == "from"]
    if len(froms) != 1 or len(_addresses([froms[0].value])) != 1:
        raise BadArgument("The message must have one From header with one address.")
    if sum(f.name == "sender" for f in fields) > 1:
        raise BadArgument("The message may have one Sender header at most.")
    for f in fields:
        label = _SENDER_FIELDS.get(f.name)
        if label is None:
            continue
        addresses = _addresses([f.value])
        if not addresses and f.value.strip():
            raise BadArgument(f"The {label} header has no address that can be read.")
        for address in addresses:
            if not allowed_sender(address, allowed_senders):
                raise BadArgument(f"The {label} address {address} is not allowed here: {_allowed(allowed_senders)}.")


def _check_loop(fields: list[_Field], own_host: str) -> None:
    received = [f.value for f in fields if f.name == "received"]
    if len(received) > MAX_RECEIVED:
        raise MailLoop(f"The message has passed through more than {MAX_RECEIVED} mail servers: it is in a loop.")
    own = own_host.lower()
    if any(m.group(1).lower() == own for value in received for m in _BY.finditer(value)):
        raise MailLoop(
            f"The message has already been through this service ({own_host}): its portal's SMTP settings send it back here."
        )


def sender_refusal(address: str, allowed_senders: tuple[str, ...]) -> str:
    """The sentence refusing an envelope sender, naming the addresses that are allowed."""
    return f"The sender {address or '<>'} is not allowed here: {_allowed(allowed_senders)}."


def _allowed(allowed_senders: tuple[str, ...]) -> str:
    shown = [a for a in dict.fromkeys(a.lower() for a in allowed_senders if a)]
    return "send as " + " or ".join(shown) if shown else "this portal has no sender address"


def _addresses(values: Iterable[str]) -> list[str]:
    """The addresses in address fields' values, as ``email.utils.getaddresses`` reads them.

    A value that is one plain address, bare or after a name of plain words (``Ann <ann@example.com>``),
    is read here directly: the parser gives the same address and costs more than the rest of the checks.
    """
    values = list(values)
    plain = [_PLAIN_ADDRESS.fullmatch(v) for v in values]
    if all(plain):
        return [m.group(1) or m.group(2) for m in plain if m is not None]
    return [addr for _, addr in email.utils.getaddresses(values) if addr]


def _decoded(value: str | None) -> str:
    if value is None:
        return ""
    if "=?" not in value:  # no encoded word: decoding would give the text back as it is
        return " ".join(value.split())
    try:
        text = str(email.header.make_header(email.header.decode_header(value)))
    except (UnicodeError, LookupError, ValueError, email.errors.HeaderParseError):
        text = value
    return " ".join(text.split())  # unfolded: one line for lists and logs


def _without(content: bytes, fields: list[_Field]) -> bytes:
    """``content`` without ``fields`` (continuation lines included)."""
    match = _HEAD_END.search(content)
    head, rest = (content[: match.start()], content[match.start() :]) if match else (content, b"\r\n")
    kept, offset = [], 0
    for f in fields:
        kept.append(head[offset : f.start])
        offset = f.end
    kept.append(head[offset:])
    # ``rest`` starts with the last field's line break and the empty line after it.
    return b"".join(kept).rstrip(b"\r\n") + rest
