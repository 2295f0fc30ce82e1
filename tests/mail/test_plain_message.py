"""The direct writer of plain messages against the email package: the same bytes, or it declines."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from smtpsettings.mail.message import build_flat, build_message, flatten
from smtpsettings.mail.plain_message import plain_message

_DATE = re.compile(rb"^Date: [^\r\n]*\r\n", re.MULTILINE)
_BOUNDARY = re.compile(rb"={15}\d+(\.\d+)?==")


def _normalized(content: bytes) -> bytes:
    return _BOUNDARY.sub(b"BOUNDARY", _DATE.sub(b"Date: DATE\r\n", content))


def _both(**kw: Any) -> tuple[Any, Any]:
    """``(full, direct)``: each the flattened message and SMTPUTF8 flag, or the exception raised."""
    results = []
    for build in (lambda: flatten(build_message(**kw)), lambda: build_flat(**kw)):
        try:
            content, utf8 = build()
            results.append((_normalized(content), utf8))
        except Exception as exc:  # noqa: BLE001 - the same error is what is compared
            results.append((type(exc), str(exc)))
    return results[0], results[1]


def _plain(**kw: Any) -> bytes | None:
    kw.setdefault("cc", ())
    kw.setdefault("bcc", ())
    kw.setdefault("reply_to", None)
    kw.setdefault("text", None)
    kw.setdefault("html", None)
    return plain_message(**kw)


BENCH_TEXT = "The quick brown fox jumps over the lazy dog, again and again.\n" * 7
LONG_LINE = "The quick brown fox jumps over the lazy dog, again and again. " * 16  # an HTML line, unwrapped
COMMON = {"sender_address": "docspace@example.com", "sender_display_name": "DocSpace", "to": ["ann@example.org"],
          "subject": "Your document was shared with you", "message_id": "<1.2@example.com>"}


@pytest.mark.parametrize(
    "body",
    [
        {"text": BENCH_TEXT},
        {"html": "<p>Shared</p>"},
        {"text": BENCH_TEXT, "html": "<p>Shared</p>\n<p>again</p>"},
        {"text": LONG_LINE, "html": f'<p class="note">{LONG_LINE * 2}</p>'},  # quoted-printable, both parts
        {"text": "y" * 79},
        {"html": (f'<a href="https://example.com/doc?id=1&amp;x=2">{LONG_LINE}</a>\n' * 12)},  # more than ten lines
    ],
)
def test_the_common_message_is_written_directly_as_the_email_package_writes_it(body: dict[str, str]) -> None:
    assert _plain(**COMMON, **body) is not None
    full, direct = _both(**COMMON, **body)
    assert direct == full


@pytest.mark.parametrize(
    "change",
    [
        {"sender_display_name": "Ann, Admin"},  # needs quoting
        {"sender_display_name": "Jörg"},  # needs an encoded word
        {"sender_display_name": "=?utf-8?q?Ann?="},  # an encoded word is decoded first
        {"subject": "Grüße"},
        {"subject": "x" * 80},  # folded
        {"to": ["ann@bücher.example"]},  # SMTPUTF8 or IDNA
        {"to": ['"ann smith"@example.org']},  # quoted local part
        {"text": "é"},  # quoted-printable or base64
        {"text": "\x00" * 79},  # a line too long for 7bit, which base64 writes shorter than quoted-printable
        {"html": "=" * 40 + "\n" + "y" * 80},  # the same, decided on the first ten lines
        {"message_id": "no-angle@brackets"},
    ],
)
def test_anything_else_takes_the_full_way_with_the_same_result(change: dict[str, Any]) -> None:
    kw = {**COMMON, "text": "Hello\n", **change}
    if "message_id" not in change:
        assert _plain(**kw) is None
    full, direct = _both(**kw)
    assert direct == full


_address_chars = st.sampled_from(list("abcXYZ019.-_+!#'\"() ,<>@\\[]é\r\n\t") + ["=?utf-8?q?x?="])
_addresses = st.one_of(
    st.sampled_from(["a@example.com", "b.c@d.example", "x+y@z", "o'neil@ex.org", "a@b@c", "a..b@c.d", ""]),
    st.lists(_address_chars, max_size=12).map("".join),
)
_phrases = st.one_of(
    st.sampled_from(["", "DocSpace", "Doc Space", "Doc  Space", " Doc", "Doc.Space", "=?utf-8?q?J=C3=B6rg?="]),
    st.text(alphabet=st.sampled_from(list("aZ9 .,;:\"'()<>@=?!#~é\r\n\t\\")), max_size=20),
)
_texts = st.one_of(
    st.none(),
    st.lists(st.sampled_from(list("ab -=\r\n\t\x0b\x00é<>") + ["From ", "--", "===============", "=?x?="]), max_size=30).map("".join),
    st.integers(70, 90).map(lambda n: "z" * n + "\n"),
    # long lines (quoted-printable or base64), more or fewer than the ten the email package samples
    st.lists(st.text(alphabet=st.sampled_from(list("ab =.\t<>\x00\x7f\r")), max_size=160), min_size=1, max_size=14).map("\n".join),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    sender=_addresses,
    name=_phrases,
    to=st.lists(_addresses, max_size=4),
    cc=st.lists(_addresses, max_size=2),
    bcc=st.lists(_addresses, max_size=2),
    reply_to=st.one_of(st.none(), _addresses),
    subject=st.one_of(_phrases, st.text(max_size=90), st.integers(60, 75).map(lambda n: "s" * n)),
    text=_texts,
    html=_texts,
    message_id=st.sampled_from(["<1.2@example.com>", "<" + "m" * 70 + "@example.com>", "bad"]),
)
@example(sender="a@example.com", name="", to=[], cc=[], bcc=[], reply_to=None, subject="", text="", html=None,
         message_id="<1.2@example.com>")
@example(sender="a@example.com", name="A", to=["b@c"], cc=[], bcc=[], reply_to=None, subject="Hi  you ", text="\r\r\n",
         html="x\n\n", message_id="<1.2@example.com>")
def test_every_input_gives_the_same_bytes_or_the_same_error(
    sender: str, name: str, to: list[str], cc: list[str], bcc: list[str], reply_to: str | None, subject: str,
    text: str | None, html: str | None, message_id: str,
) -> None:
    full, direct = _both(sender_address=sender, sender_display_name=name, to=to, cc=cc, bcc=bcc, reply_to=reply_to,
                         subject=subject, text=text, html=html, message_id=message_id)
    assert direct == full


def test_the_boundary_is_never_a_line_of_a_part() -> None:
    # The boundary is random; a part naming the form of one must not be cut by it.
    body = "--===============0000000000000000000==\n"
    content = _plain(**COMMON, text=body, html=body)
    assert content is not None
    boundary = re.search(rb'boundary="([^"]+)"', content)
    assert boundary is not None
    assert content.count(b"--" + boundary.group(1)) == 3


_atoms = st.text(alphabet=st.sampled_from(list("aZ09!#$%&'*+/=?^_`{|}~-")), min_size=1, max_size=6)
_dot_atoms = st.lists(_atoms, min_size=1, max_size=3).map(".".join)
_plain_addresses = st.tuples(_dot_atoms, _dot_atoms).map("@".join)
_plain_lines = st.text(alphabet=st.sampled_from(list("ab <>/=-.\t\x00\x0b") + ["é"] * 0), max_size=78)


@settings(max_examples=300, deadline=None)
@given(
    sender=_plain_addresses,
    name=st.one_of(st.just(""), st.lists(_atoms, min_size=1, max_size=3).map(" ".join)),
    to=st.lists(_plain_addresses, max_size=2),
    cc=st.lists(_plain_addresses, max_size=1),
    reply_to=st.one_of(st.none(), _plain_addresses),
    subject=st.text(alphabet=st.sampled_from(list("aZ9!~;:()<>,.\"")), max_size=40).map(lambda s: " ".join(s.split("~"))),
    text=st.one_of(st.none(), st.lists(_plain_lines, max_size=4).map("\r\n".join)),
    html=st.one_of(st.none(), st.lists(_plain_lines, max_size=4).map("\n".join)),
)
def test_plain_shaped_input_is_written_directly_and_identically(
    sender: str, name: str, to: list[str], cc: list[str], reply_to: str | None, subject: str, text: str | None,
    html: str | None,
) -> None:
    kw: dict[str, Any] = {"sender_address": sender, "sender_display_name": name, "to": to, "cc": cc, "bcc": [],
                          "reply_to": reply_to, "subject": subject, "text": text, "html": html,
                          "message_id": "<1.2@example.com>"}
    full, direct = _both(**kw)
    assert direct == full
    if (
        (text is not None or html is not None)
        and " " not in subject.strip()
        and subject == subject.strip()
        and "=?" not in name  # looks like an encoded word: declined on purpose, the email package decides
    ):
        # the shape this module exists for is taken directly, not declined
        assert plain_message(**kw) is not None or any(len(v) > 60 for v in (sender, name, *to, *cc, reply_to or ""))


_long_lines = st.text(alphabet=st.sampled_from(list("abZ09 .,<>/\"'=:;")), min_size=79, max_size=300)


@settings(max_examples=200, deadline=None)
@given(
    text=st.one_of(st.none(), st.lists(st.one_of(_long_lines, _plain_lines), min_size=1, max_size=14).map("\n".join)),
    html=st.one_of(st.none(), st.lists(st.one_of(_long_lines, _plain_lines), min_size=1, max_size=14).map("\r\n".join)),
)
def test_long_lines_are_quoted_printable_as_the_email_package_makes_them(text: str | None, html: str | None) -> None:
    kw: dict[str, Any] = {**COMMON, "cc": [], "bcc": [], "reply_to": None, "text": text, "html": html}
    full, direct = _both(**kw)
    assert direct == full
    bodies = [b for b in (text, html) if b is not None]
    if bodies and all(b.count("=") * 3 < len(b) // 4 and _printable(b) for b in bodies):
        # mostly letters, no control characters: quoted-printable is the shorter, and written directly
        assert plain_message(**kw) is not None


def _printable(body: str) -> bool:
    """No character that quoted-printable writes as three (control characters but tab and line breaks)."""
    return all(c.isprintable() or c in "\t\r\n" for c in body)
