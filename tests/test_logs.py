"""The access log's own timestamp: the same instant and form structlog's ISO stamp has."""

from __future__ import annotations

import datetime
import re
import time

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
