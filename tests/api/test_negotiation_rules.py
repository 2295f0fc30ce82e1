"""Unit tests of content negotiation: which JSON type to answer with, and which request bodies to read."""

from __future__ import annotations

import pytest

from smtpsettings.api.negotiation import (
    NotAcceptable,
    UnsupportedCharset,
    UnsupportedMediaType,
    check_body_type,
    response_media_type,
)
from smtpsettings.domain.errors import DomainError

# --- response_media_type ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (None, "application/json"),
        ("", "application/json"),
        ("   ", "application/json"),
        ("application/json", "application/json"),
        ("text/json", "text/json"),
        ("text/plain", "text/plain"),
        ("*/*", "application/json"),
        ("application/*", "application/json"),
        ("text/*", "text/json"),
        ("APPLICATION/JSON", "application/json"),
        ("Text/Plain", "text/plain"),
        ("application/json; charset=utf-8", "application/json"),
        (" text/json ;q=0.9", "text/json"),
    ],
)
def test_the_answer_type_follows_a_single_accepted_type(accept: str | None, expected: str) -> None:
    assert response_media_type(accept) == expected


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        ("text/plain;q=0.5, text/json", "text/json"),
        ("text/plain;q=0.5, text/json;q=0.6", "text/json"),
        ("text/json;q=0.1, text/plain;q=0.2, application/json;q=0.3", "application/json"),
        ("*/*;q=0.1, text/plain", "text/plain"),
        ("text/*;q=0.8, application/json;q=0.9", "application/json"),
        ("text/plain; q=1.0, text/json; q=1", "text/plain"),
        ("text/json, application/json", "text/json"),
        ("application/json, text/json", "application/json"),
        ("text/html, application/xhtml+xml, application/xml;q=0.9, */*;q=0.8", "application/json"),
        ("image/png, text/plain;q=0.1", "text/plain"),
        ("text/plain;Q=0.5, text/json", "text/json"),
    ],
)
def test_the_answer_type_is_the_highest_q_value_then_the_earliest(accept: str, expected: str) -> None:
    assert response_media_type(accept) == expected


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        ("application/json;q=0, text/plain", "text/plain"),
        ("text/plain;q=0, text/json;q=0.1", "text/json"),
        ("text/json;q=0.0, text/plain;q=0.001", "text/plain"),
        ("*/*;q=0, text/json", "text/json"),
    ],
)
def test_a_type_with_q_zero_is_never_chosen(accept: str, expected: str) -> None:
    assert response_media_type(accept) == expected


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        ("application/json;q=0, */*", "text/json"),
        ("application/json;q=0, application/*, text/plain;q=0.5", "text/plain"),
        ("text/json;q=0, text/*", "text/plain"),
    ],
)
def test_a_type_excluded_with_q_zero_is_not_chosen_through_a_wildcard(accept: str, expected: str) -> None:
    # BUG: a wildcard is mapped to its fixed first type (*/* -> application/json, text/* -> text/json) even when
    # the client excluded that very type with q=0; RFC 9110 §12.5.1: the more specific range's q wins.
    assert response_media_type(accept) == expected


@pytest.mark.parametrize(
    "accept",
    [
        "image/png",
        "text/html",
        "text/html, image/png",
        "application/xml",
        "application/json;q=0",
        "*/*;q=0",
        "text/plain;q=0, text/json;q=0, application/json;q=0",
        "application/json;q=abc",
        "image/*",
    ],
)
def test_an_accept_header_that_admits_none_of_our_types_is_not_acceptable(accept: str) -> None:
    with pytest.raises(NotAcceptable) as info:
        response_media_type(accept)
    assert isinstance(info.value, DomainError)
    assert "application/json" in info.value.message


# --- check_body_type -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    [
        "application/json",
        "application/json; charset=utf-8",
        "application/json;charset=UTF-8",
        "Application/JSON",
        "text/json",
        "text/json; charset=utf-8",
        "application/problem+json",
        "application/merge-patch+json; charset=utf-8",
        "  application/json  ",
        # UTF-8 as clients spell it: any case, with or without the hyphen, quoted or not.
        "application/json; charset=utf8",
        "application/json; charset=UTF8",
        'application/json; charset="UTF-8"',
        "application/json; Charset=Utf-8",
        "application/json;charset=utf-8;foo=bar",
        "application/json; foo=bar",
    ],
)
def test_a_json_body_type_is_accepted(content_type: str) -> None:
    assert check_body_type(content_type) is None


@pytest.mark.parametrize(
    ("content_type", "shown"),
    [
        ("text/plain", "'text/plain'"),
        ("text/plain; charset=utf-8", "'text/plain'"),
        ("multipart/form-data; boundary=x", "'multipart/form-data'"),
        ("application/x-www-form-urlencoded", "'application/x-www-form-urlencoded'"),
        ("application/xml", "'application/xml'"),
        ("text/json+xml", "'text/json+xml'"),
        ("application/jsonp", "'application/jsonp'"),
        ("", "'none'"),
        (None, "'none'"),
    ],
)
def test_any_other_body_type_is_unsupported(content_type: str | None, shown: str) -> None:
    with pytest.raises(UnsupportedMediaType) as info:
        check_body_type(content_type)
    assert isinstance(info.value, DomainError)
    assert shown in info.value.message


@pytest.mark.parametrize(
    ("content_type", "charset"),
    [
        ("application/json; charset=latin1", "latin1"),
        ("application/json; charset=ISO-8859-1", "ISO-8859-1"),
        ('text/json; charset="windows-1252"', "windows-1252"),
        ("application/merge-patch+json; charset=utf-16", "utf-16"),
        ("application/json; charset=utf-8; charset=latin1", "latin1"),
        ("application/json; charset=", ""),
    ],
)
def test_a_charset_other_than_utf8_is_unsupported(content_type: str, charset: str) -> None:
    # The body is read as UTF-8 whatever the header says: another charset would be misread, not refused.
    with pytest.raises(UnsupportedCharset) as info:
        check_body_type(content_type)
    assert isinstance(info.value, UnsupportedMediaType)  # hence 415
    assert info.value.message == f"Unsupported charset {charset!r}: send the body as UTF-8 (application/json; charset=utf-8)."


def test_the_content_type_is_judged_before_the_charset() -> None:
    with pytest.raises(UnsupportedMediaType) as info:
        check_body_type("text/plain; charset=latin1")
    assert not isinstance(info.value, UnsupportedCharset)
