"""Connections that never finish a request cannot take the service down.

A real ``smtpsettings serve`` against raw sockets: hundreds that send nothing, hundreds that send a header
byte now and then, a kept-alive connection left idle. Before the fix granian held each of them for good
(or 30 s) against a fixed cap of 1024 per worker, and every new client waited behind them.
"""

from __future__ import annotations

import resource
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import pytest
from serverkit import Server, make_portal, start_server

from smtpsettings.domain.accounts import Role

SETTINGS = "/api/2.0/smtpsettings/smtp"
SLOW_HEAD = b"GET /api/2.0/smtpsettings/smtp HTTP/1.1\r\nHost: localhost\r\nX-Pad: "


def address(server: Server) -> tuple[str, int]:
    host, _, port = server.base_url.removeprefix("http://").rpartition(":")
    return host, int(port)


def need_open_files(count: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < count:
        if hard != resource.RLIM_INFINITY and hard < count:
            pytest.skip(f"needs {count} open files; the hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (count, hard))


@contextmanager
def attack(server: Server, idle: int, slow: int) -> Iterator[None]:
    """``idle`` connections that send nothing and ``slow`` ones that send a header byte every 0.5 s."""
    stop = threading.Event()
    with ExitStack() as stack:
        idle_socks = [stack.enter_context(socket.create_connection(address(server), timeout=10)) for _ in range(idle)]
        slow_socks = [stack.enter_context(socket.create_connection(address(server), timeout=10)) for _ in range(slow)]
        for s in slow_socks:
            s.sendall(SLOW_HEAD)

        def trickle() -> None:
            while not stop.wait(0.5):
                for s in slow_socks:
                    try:
                        s.send(b"a")
                    except OSError:
                        pass  # closed by the server: that is allowed

        thread = threading.Thread(target=trickle, daemon=True)
        thread.start()
        try:
            assert len(idle_socks) + len(slow_socks) == idle + slow
            yield
        finally:
            stop.set()
            thread.join(5)


def signed_in_get(server: Server, hostname: str, token: str, timeout: float) -> httpx.Response:
    """A GET from a new client: a new connection, not one kept alive from before the attack."""
    headers = {"Host": hostname, "Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=server.base_url, headers=headers, timeout=timeout) as c:
        return c.get(SETTINGS)


def seconds_until_closed(sock: socket.socket, limit: float, trickle: bool = False) -> float | None:
    """How long until the server closes ``sock`` (None: still open after ``limit``); optionally sending a byte every 0.2 s."""
    started = time.monotonic()
    sock.settimeout(0.2)
    while time.monotonic() - started < limit:
        try:
            if sock.recv(65536) == b"":
                return time.monotonic() - started
        except TimeoutError:
            pass
        except OSError:
            return time.monotonic() - started
        if trickle:
            try:
                sock.send(b"a")
            except OSError:
                return time.monotonic() - started
    return None


def test_signed_in_gets_answer_while_hundreds_of_connections_idle_or_trickle_headers(tmp_path: Path) -> None:
    # 1,200 connections: more than granian's former fixed cap of 1,024 per worker, far below the default cap.
    idle, slow = 600, 600
    need_open_files(idle + slow + 200)
    server = start_server(tmp_path / "data")
    try:
        portal = make_portal(server)
        token = portal.sign_in(Role.ADMIN)
        assert signed_in_get(server, portal.hostname, token, timeout=10).status_code == 200
        with attack(server, idle, slow):
            durations = []
            for _ in range(10):
                started = time.monotonic()
                r = signed_in_get(server, portal.hostname, token, timeout=5)
                durations.append(time.monotonic() - started)
                assert r.status_code == 200, r.text
                assert r.json()["response"]["isDefaultSettings"] is True
        assert sorted(durations)[5] < 1.0, durations  # a generous bound: normally a few milliseconds
    finally:
        server.stop()


def test_connections_without_a_complete_request_head_are_closed_after_the_header_timeout(tmp_path: Path) -> None:
    server = start_server(tmp_path / "data", {"SMTPSETTINGS_HTTP_HEADER_TIMEOUT": "1"})
    try:
        results: dict[str, float | None] = {}

        def idle() -> None:
            with socket.create_connection(address(server)) as s:
                results["idle"] = seconds_until_closed(s, 10)

        def slow_header() -> None:
            with socket.create_connection(address(server)) as s:
                s.sendall(SLOW_HEAD)
                results["slow header"] = seconds_until_closed(s, 10, trickle=True)

        def kept_alive() -> None:
            with socket.create_connection(address(server)) as s:
                s.sendall(b"GET /api/2.0/health/live HTTP/1.1\r\nHost: localhost\r\n\r\n")
                s.settimeout(10)
                assert s.recv(65536).startswith(b"HTTP/1.1 200")
                results["kept-alive idle"] = seconds_until_closed(s, 10)

        threads = [threading.Thread(target=f) for f in (idle, slow_header, kept_alive)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(20)
        assert set(results) == {"idle", "slow header", "kept-alive idle"}
        for kind, seconds in results.items():
            assert seconds is not None, f"{kind}: still open after 10 s"
            assert 0.5 < seconds < 8, f"{kind}: closed after {seconds:.1f} s"
    finally:
        server.stop()


def test_the_connection_cap_holds_new_clients_back_until_the_header_timeout_frees_slots(tmp_path: Path) -> None:
    server = start_server(tmp_path / "data", {"SMTPSETTINGS_HTTP_MAX_CONNECTIONS": "50", "SMTPSETTINGS_HTTP_HEADER_TIMEOUT": "4"})
    try:
        portal = make_portal(server)
        token = portal.sign_in(Role.ADMIN)
        with attack(server, idle=60, slow=0):
            # all 50 slots are held by connections that send nothing: a new client waits in the listen queue
            with pytest.raises(httpx.TimeoutException):
                signed_in_get(server, portal.hostname, token, timeout=1.5)
            # until the server drops them at the header timeout
            assert signed_in_get(server, portal.hostname, token, timeout=15).status_code == 200
    finally:
        server.stop()


def read_response(sock: socket.socket, limit: float) -> bytes:
    """Everything the server sends until it closes the connection or ``limit`` seconds pass."""
    sock.settimeout(limit)
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except TimeoutError:
        pass
    return received


@pytest.mark.parametrize("length", [200, 10_000_000], ids=["within the size limit", "over the size limit"])
def test_a_body_that_stops_arriving_is_answered_and_the_connection_closed_after_the_timeout(tmp_path: Path, length: int) -> None:
    server = start_server(tmp_path / "data", {"SMTPSETTINGS_HTTP_HEADER_TIMEOUT": "1"})
    try:
        portal = make_portal(server)
        token = portal.sign_in(Role.ADMIN)
        head = (
            f"POST {SETTINGS} HTTP/1.1\r\nHost: {portal.hostname}\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
        )
        with socket.create_connection(address(server)) as s:
            s.sendall(head.encode() + b'{"host": "mail.')
            started = time.monotonic()
            answer = read_response(s, 10)
            elapsed = time.monotonic() - started
        status_line, _, rest = answer.partition(b"\r\n")
        expected = b"408" if length == 200 else b"413"
        assert expected in status_line, answer[:300]
        assert b'"status":1' in rest and b'"error"' in rest
        assert 0.5 < elapsed < 8, elapsed
        # the settings were not touched, and the server answers others as before
        r = signed_in_get(server, portal.hostname, token, timeout=5)
        assert r.status_code == 200 and r.json()["response"]["isDefaultSettings"] is True
    finally:
        server.stop()
