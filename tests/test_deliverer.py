"""``smtpsettings deliver`` run by hand: it refuses a missing database, stops on SIGTERM, and a second one on the
same data directory waits for the outbox lock without taking the first one's wake-ups.

What ``serve`` does with it (supervision, restarts, wake-ups from the workers) is in tests/e2e/test_delivery_process.py.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

from serverkit import smtpsettings_command
from test_cli import assert_one_line_error, migrated, operator_env, run


def deliver(data_dir: Path, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [*smtpsettings_command(), "deliver"],
        env=operator_env(data_dir, SMTPSETTINGS_LOG_FORMAT="json"),
        stdin=subprocess.DEVNULL,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )


def wait_for_event(log: Path, event: str, timeout: float = 30) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while True:
        for line in log.read_text().splitlines():
            if line.startswith("{") and (entry := json.loads(line))["event"] == event:
                return entry  # type: ignore[no-any-return]
        assert time.monotonic() < deadline, f"no {event} in:\n{log.read_text()}"
        time.sleep(0.05)


def test_deliver_without_a_database_is_one_line_and_creates_nothing(tmp_path: Path) -> None:
    assert_one_line_error(run(tmp_path / "data", "deliver"), "no smtpsettings database")
    assert not (tmp_path / "data").exists()


def test_deliver_dispatches_until_sigterm_and_a_second_one_waits_for_the_lock(tmp_path: Path) -> None:
    data = migrated(tmp_path)
    first = deliver(data, tmp_path / "first.log")
    second = None
    try:
        started = wait_for_event(tmp_path / "first.log", "outbox_dispatcher_started")
        assert str(started["owner"]).startswith(f"{first.pid}-")
        assert (data / "outbox.wake").is_socket()

        second = deliver(data, tmp_path / "second.log")
        refused = wait_for_event(tmp_path / "second.log", "outbox_wakeups_unavailable")
        assert refused["level"] == "warning" and "in use by another delivery process" in str(refused["error"])
        wait_for_event(tmp_path / "second.log", "delivery_started")
        second.send_signal(signal.SIGTERM)
        assert second.wait(30) == 0
        second_log = (tmp_path / "second.log").read_text()
        assert "outbox_dispatcher_started" not in second_log and "Traceback" not in second_log
        assert (data / "outbox.wake").is_socket()  # still the first one's

        first.send_signal(signal.SIGTERM)
        assert first.wait(30) == 0
    finally:
        for process in (first, second):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait()
    wait_for_event(tmp_path / "first.log", "delivery_stopped", timeout=0)
    assert "Traceback" not in (tmp_path / "first.log").read_text()
    assert not (data / "outbox.wake").exists()
