"""The owner's email on a first start: asked for in a terminal, a warned-about placeholder without one.

The real ``smtpsettings serve`` runs on a pseudo-terminal (the pty module), as an operator's first start in
a shell does, or with no terminal at all, as under systemd or in a container.
"""

from __future__ import annotations

import contextlib
import os
import re
import select
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from serverkit import free_port, smtpsettings_command
from test_cli import assert_one_line_error, operator_env, run

LISTENING = "smtpsettings listening on"


class Terminal:
    """``smtpsettings serve`` with a pseudo-terminal as its stdin, stdout and stderr."""

    def __init__(self, data: Path) -> None:
        self.master, slave = os.openpty()
        env = operator_env(data, SMTPSETTINGS_PORT=str(free_port()), SMTPSETTINGS_LOG_FORMAT="console")
        self.process = subprocess.Popen(
            [*smtpsettings_command(), "serve"], env=env, stdin=slave, stdout=slave, stderr=slave, start_new_session=True
        )
        os.close(slave)
        self.seen = ""

    def expect(self, pattern: str, timeout: float = 30) -> str:
        """Everything shown up to and including ``pattern`` (a regex) since the last match."""
        deadline = time.monotonic() + timeout
        while (match := re.search(pattern, self.seen)) is None:
            left = deadline - time.monotonic()
            assert left > 0 and self.process.poll() is None, f"no {pattern!r} in: {self.seen!r}"
            if select.select([self.master], [], [], min(left, 0.5))[0]:
                try:
                    self.seen += os.read(self.master, 4096).decode(errors="replace")
                except OSError:  # the other side closed
                    pass
        shown, self.seen = self.seen[: match.end()], self.seen[match.end() :]
        return shown

    def type(self, line: str) -> None:
        os.write(self.master, line.encode() + b"\r")

    def stop(self) -> None:
        _stop(self.process)
        os.close(self.master)


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Stop a server and its workers: SIGTERM, then SIGKILL to the group if it lingers."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(10)


@contextmanager
def terminal(data: Path) -> Iterator[Terminal]:
    term = Terminal(data)
    try:
        yield term
    finally:
        term.stop()


def test_a_first_start_in_a_terminal_asks_for_the_owners_email_until_it_is_one(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with terminal(data) as term:
        term.expect(r"Owner's email[^:]*: ")
        term.type("owner")
        term.expect(r"not an email address.*\n(.*\n)?.*Owner's email[^:]*: ")
        term.type("  Boss@Example.COM ")
        shown = term.expect(LISTENING)
        assert re.search(r"Email:\s+boss@example\.com\s", shown), shown
        assert "warning" not in shown
    with terminal(data) as term:  # the next start has its owner: nothing is asked
        shown = term.expect(LISTENING)
        assert "Owner's email" not in shown and "Email:" not in shown


def test_a_first_start_without_a_terminal_uses_the_placeholder_and_says_how_to_fix_it(tmp_path: Path) -> None:
    log = tmp_path / "serve.log"
    env = operator_env(tmp_path / "data", SMTPSETTINGS_PORT=str(free_port()))
    with log.open("wb") as out:
        process = subprocess.Popen(
            [*smtpsettings_command(), "serve"], env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True
        )
    try:
        deadline = time.monotonic() + 30
        while LISTENING not in log.read_text():
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        text = log.read_text()
        assert re.search(r"Email:\s+owner@localhost\s", text), text
        warning = next(line for line in text.splitlines() if line.startswith("warning:"))
        assert "refuse" in warning and "smtpsettings user set-email" in warning and "SMTPSETTINGS_OWNER_EMAIL" in warning
    finally:
        _stop(process)


def test_a_bad_owner_email_stops_serve_with_one_line_naming_the_variable(tmp_path: Path) -> None:
    result = run(tmp_path / "data", "serve", SMTPSETTINGS_OWNER_EMAIL="owner@", SMTPSETTINGS_PORT=str(free_port()))
    assert_one_line_error(result, "SMTPSETTINGS_OWNER_EMAIL", "email address")
    assert not (tmp_path / "data").exists()  # stopped before anything was made
