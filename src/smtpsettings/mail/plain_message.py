"""The common outgoing message written straight to bytes, without the email package.

Most messages the outbox builds are plain: ASCII addresses of the simplest form, a short ASCII subject,
bodies of ASCII lines that need no transfer encoding. For those, building an ``EmailMessage`` and
flattening it cost about a millisecond of the event loop per message, mostly in header objects and
folding that change nothing. :func:`plain_message` writes the very bytes the email package would write
(``tests/mail/test_plain_message.py`` holds it to that, field by field) and declines, with ``None``,
anything outside that shape: non-ASCII text, a display name that would need quoting or encoding, a header
line that would be folded, or a body the email package would encode in base64. The caller then builds the
message the full way, so no input is judged by this module alone.

An ASCII body with a line longer than 78 characters (HTML often has them) is quoted-printable, as the email
package makes it: the same choice between quoted-printable and base64, on the same sample of the first ten
lines, and the same encoder (:mod:`email.quoprimime`, which the email package itself calls), so the bytes
are the same. Building such a message the full way cost a millisecond; this costs a few tens of microseconds.
"""

from __future__ import annotations

import binascii
import random
import re
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from email import quoprimime
from email.utils import format_datetime

__all__ = ("plain_message",)

_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
# A dot-atom on both sides of the @: nothing the email package would quote, rewrite or refuse.
_ADDR_SPEC = re.compile(rf"{_ATEXT}(?:\.{_ATEXT})*@{_ATEXT}(?:\.{_ATEXT})*")
# Words of atext separated by single spaces, and no encoded word: written as is, never quoted.
_PHRASE = re.compile(rf"{_ATEXT}(?: {_ATEXT})*")
_SUBJECT = re.compile(r"[!-~]+(?: [!-~]+)*")
_MAX_LINE = 78  # the policy's max_line_length: a longer line would be folded or the body encoded
_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_BOUNDARY_DIGITS = len(repr(sys.maxsize - 1))
_PART_HEAD = 'Content-Type: text/{}; charset="utf-8"\r\nContent-Transfer-Encoding: {}\r\n'
_SAMPLE_LINES = 10  # the email package picks a body's transfer encoding by its first ten lines


def plain_message(
    *,
    sender_address: str,
    sender_display_name: str,
    to: Sequence[str],
    cc: Sequence[str],
    bcc: Sequence[str],
    reply_to: str | None,
    subject: str,
    text: str | None,
    html: str | None,
    message_id: str,
) -> bytes | None:
    """The message as ``build_message`` + ``flatten`` would write it (no SMTPUTF8), or None if not plain.

    ``message_id`` must already be a valid Message-ID; ``bcc`` is only checked, as there.
    """
    addresses = [sender_address, *to, *cc, *bcc]
    if reply_to:
        addresses.append(reply_to)
    if not all(_ADDR_SPEC.fullmatch(a) for a in addresses):
        return None
    if sender_display_name and ("=?" in sender_display_name or not _PHRASE.fullmatch(sender_display_name)):
        return None
    if subject and ("=?" in subject or not _SUBJECT.fullmatch(subject)):
        return None
    sender = f"{sender_display_name} <{sender_address}>" if sender_display_name else sender_address
    head = [f"From: {sender}"]
    if to:
        head.append("To: " + ", ".join(to))
    if cc:
        head.append("Cc: " + ", ".join(cc))
    if reply_to:
        head.append(f"Reply-To: {reply_to}")
    head.append(f"Subject: {subject}" if subject else "Subject:")
    head.append("Date: " + format_datetime(datetime.now(UTC)))
    head.append(f"Message-ID: {message_id}")
    if any(len(line) > _MAX_LINE for line in head):
        return None
    parts = [(kind, _body(part)) for kind, part in (("plain", text), ("html", html)) if part is not None]
    if not parts:
        return None
    bodies: list[tuple[str, str, str]] = []
    for kind, encoded in parts:
        if encoded is None:
            return None
        bodies.append((kind, *encoded))
    if len(bodies) == 1:
        kind, cte, body = bodies[0]
        return ("\r\n".join(head) + "\r\n" + _PART_HEAD.format(kind, cte) + "MIME-Version: 1.0\r\n\r\n" + body).encode("ascii")
    boundary = _boundary([body for _, _, body in bodies])
    (_, text_cte, text_body), (_, html_cte, html_body) = bodies
    return (
        "\r\n".join(head)
        + f'\r\nMIME-Version: 1.0\r\nContent-Type: multipart/alternative;\r\n boundary="{boundary}"\r\n\r\n'
        + f"--{boundary}\r\n{_PART_HEAD.format('plain', text_cte)}\r\n{text_body}\r\n"
        + f"--{boundary}\r\n{_PART_HEAD.format('html', html_cte)}MIME-Version: 1.0\r\n\r\n{html_body}\r\n"
        + f"--{boundary}--\r\n"
    ).encode("ascii")


def _body(content: str) -> tuple[str, str] | None:
    """``content``'s transfer encoding and its body with CRLF line ends (the last line ended too), or None
    where the email package would encode it in base64 (or it is not ASCII)."""
    if not content.isascii():
        return None
    lines = _LINE_BREAK.split(content)
    if lines[-1] == "":  # a final line break ends the last line, it does not start another
        lines.pop()
    if all(len(line) <= _MAX_LINE for line in lines):
        return "7bit", "".join(line + "\r\n" for line in lines) if lines else "\r\n"
    sample = "".join(line + "\n" for line in lines[:_SAMPLE_LINES])
    encoded = quoprimime.body_encode(sample, _MAX_LINE)
    if len(encoded) > len(binascii.b2a_base64(sample.encode("ascii"))):
        return None  # base64 would be shorter: the email package takes it, and so does the full way
    if len(lines) > _SAMPLE_LINES:
        encoded = quoprimime.body_encode("".join(line + "\n" for line in lines), _MAX_LINE)
    # As the generator writes a payload: every line ended with CRLF, a last one without an end left so.
    *ended, last = _LINE_BREAK.split(encoded)
    return "quoted-printable", "".join(line + "\r\n" for line in ended) + last


def _boundary(bodies: list[str]) -> str:
    """A multipart boundary of the email package's form that no line of the bodies starts with."""
    while True:
        boundary = "=" * 15 + str(random.randrange(sys.maxsize)).zfill(_BOUNDARY_DIGITS) + "=="
        if not any(f"--{boundary}" in body for body in bodies):
            return boundary
