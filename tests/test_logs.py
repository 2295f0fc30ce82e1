"""The access log's own timestamp (the same instant and form structlog's ISO stamp has), and library logs as our lines."""

from __future__ import annotations

import datetime
import json
import logging
import re
import time

import pytest

from smtpsettings import logs


def _parse(stamp: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(stamp.removesuffix("Z") + "+00:00")


def test_the_timestamp_is_now_in_utc_to_the_microsecond() -> None:
    before = datetime.datetime.now(tz=datetime.UTC)
    stamp = logs._timestamp()
    after = datetime.datetime.now(tz=datetime.UTC)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", stamp), stamp
    assert before - datetime.timedelta(milliseconds=1) <= _parse(stamp) <= after + datetime.timedelta(milliseconds=1)


def test_the_date_part_follows_the_clock_across_seconds() -> None:
    """The formatted second is reused within a second only: stamps taken across a boundary change it."""
    first = logs._timestamp()
    deadline = time.monotonic() + 3
    while logs._timestamp()[:19] == first[:19]:
        assert time.monotonic() < deadline, "the second part never moved"
        time.sleep(0.01)
    later = logs._timestamp()
    assert _parse(later) > _parse(first)
    assert abs((_parse(later) - datetime.datetime.now(tz=datetime.UTC)).total_seconds()) < 0.5


def test_a_librarys_log_record_is_one_json_line_with_its_traceback_inside(capsys: pytest.CaptureFixture[str]) -> None:
    """asyncio, ssl and aiosmtpd log through the standard library: their lines must be ours, one object each."""
    logs.configure_logging("json", "info")
    library = logging.getLogger("asyncio")
    try:
        raise ConnectionResetError("peer went away")
    except ConnectionResetError:
        library.exception("Fatal error on transport\nsecond line of the message")
    library.info("a library's info line is not written")
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1, lines
    entry = json.loads(lines[0])
    assert entry["level"] == "error" and entry["logger"] == "asyncio"
    assert entry["event"] == "Fatal error on transport\nsecond line of the message"
    assert "Traceback" in entry["exception"] and "ConnectionResetError: peer went away" in entry["exception"]
    _parse(entry["timestamp"])


def test_configuring_twice_leaves_one_route_for_library_logs(capsys: pytest.CaptureFixture[str]) -> None:
    logs.configure_logging("json", "info")
    logs.configure_logging("json", "warning")
    logging.getLogger("aiosmtpd.test").warning("once")
    assert len(capsys.readouterr().err.splitlines()) == 1
