"""``smtpsettings serve``: one server per port, and the connection settings it hands to granian."""

from __future__ import annotations

import os
import resource
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from serverkit import free_port, smtpsettings_command, start_server

from smtpsettings.config import ConfigError, load_settings
from smtpsettings.httpserver import ListenError, bind_listener, connection_budget


def serve_on(port: int, data_dir: Path) -> subprocess.CompletedProcess[str]:
    """``smtpsettings serve`` on ``port``, expected to give up at once; killed (and the test failed) if it serves."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMTPSETTINGS_")}
    env["SMTPSETTINGS_DATA_DIR"] = str(data_dir)
    process = subprocess.Popen(
        [*smtpsettings_command(), "serve", "--port", str(port)],
        env=env,
        stdin=subprocess.DEVNULL,  # no terminal: a first start never waits for an answer
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        pytest.fail(f"a second server started on the taken port {port} and kept running")
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def test_a_second_serve_on_the_port_of_a_running_server_fails_with_one_line(tmp_path: Path) -> None:
    # Two workers: they share one socket, and that socket keeps every other server off the port.
    first = start_server(tmp_path / "first", workers=2)
    try:
        port = urlsplit(first.base_url).port
        assert port is not None
        result = serve_on(port, tmp_path / "second")
        assert result.returncode != 0
        assert result.stderr.strip().splitlines() == [f"error: 127.0.0.1:{port} is already in use"]
        assert "Password" not in result.stdout  # nothing was set up for a server that cannot run
        assert not (tmp_path / "second" / "smtpsettings.db").exists()
        # every request still reaches the first server's database
        for _ in range(20):
            with httpx.Client(base_url=first.base_url, timeout=10) as c:
                r = c.get("/api/2.0/authentication")
                assert r.status_code == 200 and r.json()["response"] is False
    finally:
        first.stop()


def test_a_second_serve_on_the_data_dir_of_a_running_server_is_refused_and_leaves_it_untouched(tmp_path: Path) -> None:
    first = start_server(tmp_path / "data", workers=2)
    try:
        # Stands for the first server's counters: a second server that started would empty this directory.
        counters = first.data_dir / "metrics" / "kept-by-the-first.db"
        counters.write_bytes(b"counters")
        result = serve_on(free_port(), first.data_dir)
        assert result.returncode != 0
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert lines[0].startswith(f"error: the data directory {first.data_dir.resolve()} is in use by another smtpsettings serve")
        assert f"(pid {first.process.pid})" in lines[0]
        assert "Traceback" not in result.stderr and "listening" not in result.stdout
        assert counters.read_bytes() == b"counters"
        assert httpx.get(first.base_url + "/api/2.0/health/ready", timeout=10).status_code == 200
    finally:
        first.stop()
    # The lock goes with the process: once the first server is gone, the directory serves again.
    again = start_server(tmp_path / "data")
    again.stop()


def test_a_killed_server_leaves_no_lock_behind(tmp_path: Path) -> None:
    first = start_server(tmp_path / "data", workers=2)
    first.kill(signal.SIGKILL)
    first.process.wait(10)
    second = start_server(tmp_path / "data")
    try:
        assert httpx.get(second.base_url + "/api/2.0/health/ready", timeout=10).status_code == 200
    finally:
        second.stop()


def test_serve_on_a_port_another_program_listens_on_fails_with_one_line(tmp_path: Path) -> None:
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        result = serve_on(port, tmp_path / "data")
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [f"error: 127.0.0.1:{port} is already in use"]


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("SMTPSETTINGS_HTTP_HEADER_TIMEOUT", "0"),
        ("SMTPSETTINGS_HTTP_HEADER_TIMEOUT", "7200"),
        ("SMTPSETTINGS_HTTP_HEADER_TIMEOUT", "soon"),
        ("SMTPSETTINGS_HTTP_MAX_CONNECTIONS", "0"),
        ("SMTPSETTINGS_HTTP_MAX_CONNECTIONS", "2000000"),
        ("SMTPSETTINGS_HTTP_MAX_CONNECTIONS", "many"),
    ],
)
def test_connection_settings_out_of_range_are_refused_naming_the_variable(variable: str, value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({variable: value})
    message = str(caught.value)
    assert variable in message and "\n" not in message


def test_connection_settings_defaults() -> None:
    settings = load_settings({})
    assert settings.http_header_timeout == 10
    assert settings.http_max_connections == 10_000


def test_the_connection_cap_is_split_across_workers() -> None:
    settings = load_settings({"SMTPSETTINGS_HTTP_MAX_CONNECTIONS": "1000", "SMTPSETTINGS_WORKERS": "3"})
    assert connection_budget(settings)[0] == 334


def _budget_in_a_process(soft: int, hard: int, max_connections: int) -> tuple[int, str, int]:
    """connection_budget under the given open-file limit, in a process of its own (a lowered hard limit stays)."""
    code = textwrap.dedent(
        f"""
        import resource
        resource.setrlimit(resource.RLIMIT_NOFILE, ({soft}, {hard}))
        from smtpsettings.config import load_settings
        from smtpsettings.httpserver import connection_budget
        per_worker, warning = connection_budget(load_settings({{"SMTPSETTINGS_HTTP_MAX_CONNECTIONS": "{max_connections}"}}))
        print(per_worker, resource.getrlimit(resource.RLIMIT_NOFILE)[0])
        print(warning or "")
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True).stdout
    numbers, warning = out.split("\n", 1)
    per_worker, soft_after = map(int, numbers.split())
    return per_worker, warning.strip(), soft_after


def test_serve_raises_the_open_file_limit_as_far_as_the_cap_needs() -> None:
    hard = _hard_limit()
    if hard < 3000:
        pytest.skip(f"the hard open-file limit ({hard}) is too low to show the raise")
    per_worker, warning, soft_after = _budget_in_a_process(512, hard, 2000)
    assert (per_worker, warning) == (2000, "")
    assert soft_after >= 2000


def test_a_cap_beyond_the_open_file_limit_is_lowered_to_fit_and_said() -> None:
    per_worker, warning, soft_after = _budget_in_a_process(600, 600, 10_000)
    assert soft_after == 600
    assert 0 < per_worker < 600
    assert "open-file limit (600)" in warning and "SMTPSETTINGS_HTTP_MAX_CONNECTIONS" in warning


def _hard_limit() -> int:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    return sys.maxsize if hard == resource.RLIM_INFINITY else hard


def test_a_host_name_is_listened_on_at_the_address_it_resolves_to() -> None:
    sock = bind_listener("localhost", 0)
    try:
        assert sock.getsockname()[0] in ("127.0.0.1", "::1")
    finally:
        sock.close()


def test_a_host_name_that_does_not_resolve_is_refused_with_one_line() -> None:
    with pytest.raises(ListenError, match=r"cannot listen on 'no-such-host\.invalid': the name does not resolve"):
        bind_listener("no-such-host.invalid", 0)
