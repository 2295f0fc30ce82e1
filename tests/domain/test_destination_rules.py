"""The dead-destination rule: cohorts, growing back-off, one probe at a time, per portal."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from smtpsettings.domain.destinations import Destinations, is_connection_failure
from smtpsettings.mail.errors import (
    AuthenticationError,
    ConfigurationRefused,
    ConnectError,
    MailError,
    MailTimeout,
    OAuth2TokenError,
    SendError,
    TLSError,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)
TARPIT = (7, "mx.example", 25)
SECOND = timedelta(seconds=1)


def rules() -> Destinations:
    return Destinations(cohort=2, first=timedelta(seconds=30), longest=timedelta(seconds=100))


def refused() -> ConnectError:
    return ConnectError("Connection refused by mx.example:25")


@pytest.mark.parametrize(
    ("error", "while_sending", "counts"),
    [
        (ConnectError("refused"), False, True),
        (ConnectError("421 at greeting", code=421), False, True),
        (TLSError("handshake"), False, True),
        (MailTimeout("no greeting"), False, True),
        (AuthenticationError("535", code=535), False, True),
        (OAuth2TokenError("invalid_client"), False, True),
        (MailError("No result within the deadline"), False, True),
        (ConfigurationRefused("denied network"), False, False),
        (SendError("550 no such user", code=550), True, False),
        (SendError("421 closing", code=421), True, True),
        (MailTimeout("DATA took too long"), True, False),
        (ConnectError("dropped mid-message"), True, False),
    ],
)
def test_what_counts_as_a_connection_failure(error: MailError, while_sending: bool, counts: bool) -> None:
    assert is_connection_failure(error, while_sending=while_sending) is counts


def test_a_cohort_of_failures_makes_the_destination_unavailable() -> None:
    d = rules()
    assert d.admit(TARPIT, T0) is None
    assert d.failed(TARPIT, T0, refused()) is None
    assert d.admit(TARPIT, T0) is None  # one failure is not a cohort
    until = d.failed(TARPIT, T0 + SECOND, refused())
    assert until == T0 + SECOND + timedelta(seconds=30)
    assert d.admit(TARPIT, T0 + 2 * SECOND) == until
    assert d.unavailable(T0) == 1
    reason = d.reason(TARPIT, until)
    assert reason.startswith("The mail server mx.example:25 is unavailable: 2 connection attempts in a row failed")
    assert reason.endswith("The last error: Connection refused by mx.example:25")


def test_a_success_between_failures_resets_the_count() -> None:
    d = rules()
    d.failed(TARPIT, T0, refused())
    assert d.reachable(TARPIT) is None  # it never was unavailable
    assert d.failed(TARPIT, T0, refused()) is None


def test_late_failures_of_attempts_already_under_way_change_nothing() -> None:
    d = rules()
    d.failed(TARPIT, T0, refused())
    until = d.failed(TARPIT, T0, refused())
    assert d.failed(TARPIT, T0 + SECOND, refused()) is None
    assert d.admit(TARPIT, T0 + SECOND) == until


def test_one_probe_at_a_time_and_the_back_off_doubles_to_its_cap() -> None:
    d = rules()
    d.failed(TARPIT, T0, refused())
    now = T0
    until = d.failed(TARPIT, now, refused())
    assert until is not None
    for backoff in (60, 100, 100):
        now = until
        assert d.admit(TARPIT, now) is None  # the probe
        assert d.admit(TARPIT, now) == now + timedelta(seconds=backoff)  # the others wait meanwhile
        until = d.failed(TARPIT, now + SECOND, refused())
        assert until == now + SECOND + timedelta(seconds=backoff)


def test_a_successful_probe_makes_it_available_again() -> None:
    d = rules()
    d.failed(TARPIT, T0, refused())
    until = d.failed(TARPIT, T0, refused())
    assert until is not None and d.admit(TARPIT, until) is None
    assert d.reachable(TARPIT) == until + timedelta(seconds=60)  # the probe's deadline: nothing waits longer
    assert d.admit(TARPIT, until) is None and d.unavailable(until) == 0
    assert d.failed(TARPIT, until, refused()) is None  # a new cohort starts from zero


def test_a_probe_that_never_reported_gives_way_after_its_deadline() -> None:
    d = rules()
    d.failed(TARPIT, T0, refused())
    until = d.failed(TARPIT, T0, refused())
    assert until is not None and d.admit(TARPIT, until) is None
    waiting = d.admit(TARPIT, until)
    assert waiting is not None and d.admit(TARPIT, waiting) is None


def test_one_portal_never_marks_another_portals_use_of_the_same_server() -> None:
    d = rules()
    d.failed(TARPIT, T0, refused())
    d.failed(TARPIT, T0, refused())
    assert d.admit((8, "mx.example", 25), T0) is None
    assert d.admit((7, "mx.example", 587), T0) is None  # new settings: a new destination


def test_destinations_long_out_of_use_are_forgotten() -> None:
    d = rules()
    d.failed(TARPIT, T0, refused())
    d.failed(TARPIT, T0, refused())
    assert d.unavailable(T0 + timedelta(seconds=199)) == 1
    assert d.unavailable(T0 + timedelta(seconds=201)) == 0
    assert d.admit(TARPIT, T0 + timedelta(seconds=201)) is None


def test_bounds_are_checked() -> None:
    with pytest.raises(ValueError, match="cohort"):
        Destinations(cohort=0, first=SECOND, longest=SECOND)
    with pytest.raises(ValueError, match="first"):
        Destinations(cohort=1, first=2 * SECOND, longest=SECOND)
