"""Unit tests of the admission rule: how much unsent mail a portal may have."""

from __future__ import annotations

import pytest

from smtpsettings.domain.errors import QueueFull, TooManyRequests
from smtpsettings.domain.queue import RETRY_AFTER_SECONDS, Backlog, QueueLimits

LIMITS = QueueLimits(messages=3, bytes=1000)


def test_a_message_that_fits_both_limits_is_admitted() -> None:
    LIMITS.admit(Backlog(messages=2, bytes=400), 600)  # exactly at the byte limit once accepted


def test_the_message_limit_refuses_once_reached_whatever_the_size() -> None:
    with pytest.raises(QueueFull) as refused:
        LIMITS.admit(Backlog(messages=3, bytes=10), 1)
    assert "3 messages" in refused.value.message and refused.value.retry_after == RETRY_AFTER_SECONDS
    assert isinstance(refused.value, TooManyRequests)


def test_a_message_that_would_pass_the_byte_limit_is_refused() -> None:
    with pytest.raises(QueueFull) as refused:
        LIMITS.admit(Backlog(messages=1, bytes=400), 601)
    assert "601" in refused.value.message and "1000" in refused.value.message


def test_an_empty_queue_takes_a_message_larger_than_the_byte_limit() -> None:
    """Otherwise a byte limit below the message size limit would refuse that message for ever."""
    LIMITS.admit(Backlog(messages=0, bytes=0), 5000)
    with pytest.raises(QueueFull):
        LIMITS.admit(Backlog(messages=1, bytes=5000), 1)
