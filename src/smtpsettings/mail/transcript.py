"""Redacted record of the SMTP dialogue.

The transcript is captured at the protocol level (every line written and every
reply read), so it is complete, and is redacted *structurally*: once a client
line starts ``AUTH``, the payload, every following client line and every 334
challenge are replaced by ``***`` until the exchange ends. As defence in depth
a :class:`Redactor` also scrubs known secrets (password, its base64 forms,
AUTH payloads) from every line, detail and error message.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable

from aiosmtplib import SMTPResponse
from aiosmtplib.auth import auth_xoauth2_encode

__all__ = ["MASK", "MAX_LINE_CHARS", "MAX_REPLY_LINES", "Redactor", "Transcript", "truncate"]

MASK = "***"
MAX_LINE_CHARS = 512
"""Longer lines are cut: a hostile or broken server must not flood the UI."""
MAX_REPLY_LINES = 50
MIN_SECRET_LEN = 4
"""Shorter secrets are not scrubbed globally: masking every "2" in "250" would
both mangle the output and reveal the secret by elimination. Structural AUTH
redaction still hides them where they are actually sent."""


def truncate(text: str, limit: int = MAX_LINE_CHARS) -> str:
    """Cut ``text`` to ``limit`` characters, saying how much was dropped."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... [{len(text) - limit} more characters]"


class Redactor:
    """Replaces known secret strings with ``***``."""

    def __init__(self, secrets: Iterable[str | bytes] = ()) -> None:
        self._secrets: set[str] = set()
        self._longest_first: tuple[str, ...] = ()  # scrub runs on every transcript line: sorted once per add
        for secret in secrets:
            self.add(secret)

    def add(self, secret: str | bytes) -> None:
        """Register ``secret`` (and, for passwords, nothing implicit: callers add forms)."""
        text = secret.decode("utf-8", "replace") if isinstance(secret, bytes) else secret
        if len(text) >= MIN_SECRET_LEN and text not in self._secrets:
            self._secrets.add(text)
            self._longest_first = tuple(sorted(self._secrets, key=len, reverse=True))

    def add_password(self, username: str, password: str) -> None:
        """Register a password with the encodings PLAIN/LOGIN would put on the wire."""
        if not password:
            return
        raw = password.encode("utf-8")
        self.add(password)
        self.add(base64.b64encode(raw))
        self.add(base64.b64encode(b"\0" + username.encode("utf-8") + b"\0" + raw))

    def add_bearer(self, username: str, token: str) -> None:
        """Register an OAuth 2.0 access token with the XOAUTH2 payload that carries it."""
        if not token:
            return
        self.add(token)
        self.add(auth_xoauth2_encode(username, token))

    def scrub(self, text: str) -> str:
        """Return ``text`` with every registered secret masked (longest first)."""
        for secret in self._longest_first:
            if secret in text:
                text = text.replace(secret, MASK)
        return text


class Transcript:
    """Collects ``C:``/``S:`` lines with AUTH exchanges masked.

    What is written and read is kept as it came and turned into lines only when :attr:`lines` is read:
    a delivery that succeeds never shows its transcript, and formatting and scrubbing every line of every
    message cost the outbox more than the rest of its bookkeeping. Secrets only ever get added to the
    redactor, so lines made later are masked at least as much as they would have been at once.
    """

    def __init__(self, redactor: Redactor) -> None:
        self._lines: list[str] = []
        self._events: list[tuple[int, object]] = []
        self._redactor = redactor
        self._in_auth = False
        self._expect_body = False
        self._body_next = False  # the last reply was 354: the next write is the content, kept as its length only

    @property
    def lines(self) -> list[str]:
        """The transcript so far (the same list each time: clearing it drops what it held)."""
        if self._events:
            events, self._events = self._events, []
            for kind, payload in events:
                if kind == _CLIENT:
                    self._client(payload)  # type: ignore[arg-type]
                elif kind == _SERVER:
                    self._server(payload)  # type: ignore[arg-type]
                else:
                    self._add(f"-- {payload}")
        return self._lines

    def client(self, data: bytes) -> None:
        """Record bytes written by the client (one command, or the DATA body)."""
        if self._body_next:
            self._body_next = False
            self._events.append((_CLIENT, len(data)))
        else:
            self._events.append((_CLIENT, data))

    def server(self, response: SMTPResponse) -> None:
        """Record one (possibly multi-line) reply."""
        self._body_next = response.code == 354
        self._events.append((_SERVER, response))

    def note(self, text: str) -> None:
        """Record an event that is not a protocol line (timeouts, TLS start)."""
        self._events.append((_NOTE, text))

    def _add(self, line: str) -> None:
        self._lines.append(truncate(self._redactor.scrub(line)))

    def _client(self, data: bytes | int) -> None:
        if self._expect_body or isinstance(data, int):
            self._expect_body = False
            size = data if isinstance(data, int) else len(data)
            self._add(f"C: [message content, {size} bytes]")
            self._add("C: .")
            return
        for raw in data.split(b"\r\n"):
            if not raw:
                continue
            line = raw.decode("utf-8", "replace")
            if self._in_auth:
                self._add(f"C: {MASK}")
            elif line[:5].upper() == "AUTH ":
                parts = line.split(" ", 2)
                self._in_auth = True
                masked = f"AUTH {parts[1]}" if len(parts) > 1 else "AUTH"
                self._add(f"C: {masked} {MASK}" if len(parts) > 2 else f"C: {masked}")
            else:
                self._add(f"C: {line}")

    def _server(self, response: SMTPResponse) -> None:
        if self._in_auth and response.code == 334:
            self._add(f"S: 334 {MASK}")
            return
        self._in_auth = False
        if response.code == 354:
            self._expect_body = True
        lines = response.message.split("\n") if response.message else [""]
        dropped = max(0, len(lines) - MAX_REPLY_LINES)
        lines = lines[:MAX_REPLY_LINES]
        for index, text in enumerate(lines):
            sep = " " if index == len(lines) - 1 and not dropped else "-"
            self._add(f"S: {response.code}{sep}{text}".rstrip())
        if dropped:
            self._add(f"S: {response.code} [{dropped} more lines]")


_CLIENT, _SERVER, _NOTE = range(3)
