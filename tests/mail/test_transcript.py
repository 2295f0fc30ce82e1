from __future__ import annotations

import base64

from aiosmtplib import SMTPResponse

from smtpsettings.mail.transcript import MAX_LINE_CHARS, MAX_REPLY_LINES, Redactor, Transcript


def _transcript() -> tuple[Transcript, Redactor]:
    redactor = Redactor()
    redactor.add_password("user", "topsecret")
    return Transcript(redactor), redactor


def test_auth_exchange_is_masked_structurally() -> None:
    transcript, _ = _transcript()
    transcript.client(b"AUTH LOGIN dXNlcg==\r\n")
    transcript.server(SMTPResponse(334, "UGFzc3dvcmQ6"))
    transcript.client(b"bm90IHRoZSBwYXNzd29yZA==\r\n")
    transcript.server(SMTPResponse(235, "2.7.0 Authentication successful"))
    transcript.client(b"MAIL FROM:<a@example.com>\r\n")
    assert transcript.lines == [
        "C: AUTH LOGIN ***",
        "S: 334 ***",
        "C: ***",
        "S: 235 2.7.0 Authentication successful",
        "C: MAIL FROM:<a@example.com>",
    ]


def test_known_secrets_are_scrubbed_everywhere() -> None:
    transcript, redactor = _transcript()
    transcript.server(SMTPResponse(550, "echoing topsecret and " + base64.b64encode(b"topsecret").decode()))
    assert "topsecret" not in transcript.lines[0]
    assert base64.b64encode(b"topsecret").decode() not in transcript.lines[0]
    assert redactor.scrub("x topsecret y") == "x *** y"


def test_short_secrets_are_not_scrubbed_globally() -> None:
    redactor = Redactor()
    redactor.add_password("u", "25")
    assert redactor.scrub("250 OK") == "250 OK"


def test_multiline_reply_and_truncation() -> None:
    transcript, _ = _transcript()
    transcript.server(SMTPResponse(250, "mail.test\nSIZE 1000\nAUTH PLAIN"))
    assert transcript.lines == ["S: 250-mail.test", "S: 250-SIZE 1000", "S: 250 AUTH PLAIN"]
    transcript.lines.clear()
    transcript.server(SMTPResponse(250, "x" * 5000))
    assert len(transcript.lines[0]) < MAX_LINE_CHARS + 50
    transcript.lines.clear()
    transcript.server(SMTPResponse(250, "\n".join(["l"] * (MAX_REPLY_LINES + 10))))
    assert len(transcript.lines) == MAX_REPLY_LINES + 1
    assert transcript.lines[-1] == "S: 250 [10 more lines]"


def test_data_body_is_summarised() -> None:
    transcript, _ = _transcript()
    transcript.client(b"DATA\r\n")
    transcript.server(SMTPResponse(354, "End data with <CR><LF>.<CR><LF>"))
    transcript.client(b"Subject: x\r\n\r\nbody\r\n.\r\n")
    assert transcript.lines[-2:] == ["C: [message content, 23 bytes]", "C: ."]
