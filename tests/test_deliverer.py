"""``smtpsettings deliver`` run by hand: it refuses a missing database, stops on SIGTERM, and a second one on the
same data directory waits for the outbox lock without taking the first one's wake-ups.

What ``serve`` does with it (supervision, restarts, wake-ups from the workers) is in tests/e2e/test_delivery_process.py.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from serverkit import smtpsettings_command
from smtpsettings.deliverer import DeliverySupervisor
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


def test_the_supervisor_restarts_while_other_threads_fork(tmp_path: Path) -> None:
    """Forks elsewhere in serve (granian's workers) never leave the supervisor waiting for a spawn.

    Each forked child here lives long and never execs, as a granian worker does; one forked while Popen waited
    for its child's exec would hold Popen's pipe open, and no delivery process would be started again.
    """
    spawns = tmp_path / "spawns"
    # A delivery process that dies at once, leaving a mark.
    command = [sys.executable, "-c", f"open({str(spawns)!r}, 'a').write('x')"]
    supervisor = DeliverySupervisor(command)
    forking = threading.Event()
    forked: list[int] = []

    def fork_often() -> None:
        while not forking.is_set():
            pid = os.fork()
            if pid == 0:  # pragma: no cover - the child
                time.sleep(60)  # killed at the end
                os._exit(0)
            forked.append(pid)
            time.sleep(0.001)

    forker = threading.Thread(target=fork_often)
    forker.start()
    try:
        supervisor.start()
        # Back-off 0.5, 1, 2 s: four spawns within 3.5 s, five within 7.5 s of the first.
        deadline = time.monotonic() + 15
        while not spawns.exists() or len(spawns.read_text()) < 4:
            count = len(spawns.read_text()) if spawns.exists() else 0
            assert time.monotonic() < deadline, f"the supervisor stopped spawning after {count}"
            time.sleep(0.05)
    finally:
        forking.set()
        forker.join()
        supervisor.stop(kill_after=5)
        for pid in forked:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
    assert len(forked) > 50
