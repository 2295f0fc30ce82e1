"""The common outgoing message written straight to bytes, without the email package.

Most messages the outbox builds are plain: ASCII addresses of the simplest form, a short ASCII subject,
bodies of ASCII lines that need no transfer encoding. For those, building an ``EmailMessage`` and
flattening it cost about a millisecond of the event loop per message, mostly in header objects and
folding that change nothing. :func:`plain_message` writes the very bytes the email package would write
(``tests/mail/test_plain_message.py`` holds it to that, field by field) and declines, with ``None``,
anything outside that shape: non-ASCII text, a display name that would need quoting or encoding, a line
that would be folded or a body line that would need quoted-printable. The caller then builds the message
the full way, so no input is judged by this module alone.
"""

from __future__ import annotations

import random
import re
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
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
_PART_HEAD = 'Content-Type: text/{}; charset="utf-8"\r\nContent-Transfer-Encoding: 7bit\r\n'


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
    bodies = [(kind, _body(part)) for kind, part in (("plain", text), ("html", html)) if part is not None]
    if not bodies or any(body is None for _, body in bodies):
        return None
    if len(bodies) == 1:
        kind, body = bodies[0]
        return ("\r\n".join(head) + "\r\n" + _PART_HEAD.format(kind) + "MIME-Version: 1.0\r\n\r\n" + f"{body}").encode("ascii")
    boundary = _boundary([b for _, b in bodies if b is not None])
    (_, text_body), (_, html_body) = bodies
    return (
        "\r\n".join(head)
        + f'\r\nMIME-Version: 1.0\r\nContent-Type: multipart/alternative;\r\n boundary="{boundary}"\r\n\r\n'
        + f"--{boundary}\r\n{_PART_HEAD.format('plain')}\r\n{text_body}\r\n"
        + f"--{boundary}\r\n{_PART_HEAD.format('html')}MIME-Version: 1.0\r\n\r\n{html_body}\r\n"
        + f"--{boundary}--\r\n"
    ).encode("ascii")


def _body(content: str) -> str | None:
    """``content`` as a 7bit body with CRLF line ends (the last line ended too), or None if it needs encoding."""
    if not content.isascii():
        return None
    lines = _LINE_BREAK.split(content)
    if lines[-1] == "":  # a final line break ends the last line, it does not start another
        lines.pop()
    if any(len(line) > _MAX_LINE for line in lines):
        return None
    return "".join(line + "\r\n" for line in lines) if lines else "\r\n"


def _boundary(bodies: list[str]) -> str:
    """A multipart boundary of the email package's form that no line of the bodies starts with."""
    while True:
        boundary = "=" * 15 + str(random.randrange(sys.maxsize)).zfill(_BOUNDARY_DIGITS) + "=="
        if not any(f"--{boundary}" in body for body in bodies):
            return boundary
