"""The owner's email on a first start: asked for in a terminal, a warned-about placeholder without one.

The real ``smtpsettings serve`` runs on a pseudo-terminal (the pty module), as an operator's first start in
a shell does, or with no terminal at all, as under systemd or in a container.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from serverkit import free_port, smtpsettings_command, start_server
from test_cli import Terminal, assert_one_line_error, operator_env, run

LISTENING = "smtpsettings listening on"


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
def serving_on_a_terminal(data: Path) -> Iterator[Terminal]:
    env = operator_env(data, SMTPSETTINGS_PORT=str(free_port()), SMTPSETTINGS_LOG_FORMAT="console")
    term = Terminal([*smtpsettings_command(), "serve"], env)
    try:
        yield term
    finally:
        _stop(term.process)
        term.finish()


def test_a_first_start_in_a_terminal_asks_for_the_owners_email_until_it_is_one(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with serving_on_a_terminal(data) as term:
        term.expect("Owner's email (sign-in name; test mail goes there): ")
        term.type("owner")
        term.expect("'owner' is not an email address")
        term.expect("Owner's email (sign-in name; test mail goes there): ")  # asked again
        term.type("  Boss@Example.COM ")
        term.expect(LISTENING)
        shown = term.transcript.decode()
        assert re.search(r"Email:\s+boss@example\.com\s", shown), shown
        assert "warning" not in shown
    with serving_on_a_terminal(data) as term:  # the next start has its owner: nothing is asked
        term.expect(LISTENING)
        assert b"Owner's email" not in term.transcript and b"Email:" not in term.transcript


def test_a_first_start_without_a_terminal_uses_the_placeholder_and_says_how_to_fix_it(tmp_path: Path) -> None:
    server = start_server(tmp_path / "data", {"SMTPSETTINGS_OWNER_EMAIL": ""})  # stdin /dev/null, as under systemd
    try:
        assert re.search(r"Email:\s+owner@localhost\s", server.stdout), server.stdout
        warning = next(line for line in server.stdout.splitlines() if line.startswith("warning:"))
        assert "refuse" in warning and "smtpsettings user set-email" in warning and "SMTPSETTINGS_OWNER_EMAIL" in warning
    finally:
        server.stop()


def test_a_bad_owner_email_stops_serve_with_one_line_naming_the_variable(tmp_path: Path) -> None:
    result = run(tmp_path / "data", "serve", SMTPSETTINGS_OWNER_EMAIL="owner@", SMTPSETTINGS_PORT=str(free_port()))
    assert_one_line_error(result, "SMTPSETTINGS_OWNER_EMAIL", "email address")
    assert not (tmp_path / "data").exists()  # stopped before anything was made
