"""Wake-ups between processes over a real Unix datagram socket: what a worker sends, the delivery process hears."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from smtpsettings.services.wakeups import WakeListener, Waker


async def woken_by(path: Path, wakes: int) -> int:
    """How many times the listener on ``path`` called back after ``wakes`` wake-ups (batches may merge)."""
    woken = asyncio.Event()
    calls = [0]

    def on_wake() -> None:
        calls[0] += 1
        woken.set()

    listener = WakeListener(path, on_wake)
    listener.open()
    waker = Waker(path)
    try:
        for _ in range(wakes):
            waker.wake()
        await asyncio.wait_for(woken.wait(), 5)
        return calls[0]
    finally:
        waker.close()
        listener.close()


async def test_a_wake_reaches_the_listener_and_a_burst_wakes_it_once_or_a_few_times(tmp_path: Path) -> None:
    assert await woken_by(tmp_path / "outbox.wake", 1) == 1
    assert 1 <= await woken_by(tmp_path / "outbox.wake", 200) < 200
    assert not (tmp_path / "outbox.wake").exists()  # the listener removes its socket when it closes


async def test_a_data_dir_too_deep_for_a_socket_address_still_gets_its_wakes(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    assert len(str(deep / "outbox.wake")) > 108
    assert await woken_by(deep / "outbox.wake", 1) == 1


async def test_a_stale_socket_file_of_a_killed_listener_is_replaced(tmp_path: Path) -> None:
    (tmp_path / "outbox.wake").write_bytes(b"")
    assert await woken_by(tmp_path / "outbox.wake", 1) == 1


async def test_a_second_listener_leaves_the_socket_of_a_live_one_alone(tmp_path: Path) -> None:
    first = WakeListener(tmp_path / "outbox.wake", lambda: None)
    first.open()
    try:
        second = WakeListener(tmp_path / "outbox.wake", lambda: None)
        with pytest.raises(OSError, match="in use by another delivery process"):
            second.open()
        second.close()
        assert (tmp_path / "outbox.wake").is_socket()
    finally:
        first.close()


def test_waking_with_no_listener_neither_blocks_nor_raises(tmp_path: Path) -> None:
    waker = Waker(tmp_path / "outbox.wake")
    try:
        for _ in range(1000):  # far beyond a socket buffer, had there been one
            waker.wake()
    finally:
        waker.close()
