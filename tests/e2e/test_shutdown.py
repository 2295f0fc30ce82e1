"""How long ``smtpsettings serve`` takes to stop on SIGTERM with everything that can hold it up in flight.

A real server with a submission port, two workers and a main process signalled as systemd signals it: an idle
SMTP session, an idle keep-alive HTTP connection, one whose request head never ends and one whose body never
ends, a test mail at a sink that never answers DATA and an outbox message at the same sink. What bounds the
stop is documented in docs/deployment.md ("Stopping"): the HTTP header timeout for requests still arriving,
then the outbox's grace for sends in flight.
"""

from __future__ import annotations

import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import trustme
from smtp_peers import smtp_peer

from serverkit import Server, free_port, make_portal, start_server
from smtpsettings.domain.accounts import Role

HEADER_TIMEOUT = 2
DISPATCHER_GRACE = 5  # Dispatcher.stop's default, bounding every wait of the outbox's stop together
STOP_BOUND = HEADER_TIMEOUT + DISPATCHER_GRACE + 3  # the rest: the workers' start of the stop, the database's close


@pytest.fixture
def stalled_sink() -> Iterator[tuple[int, list[object]]]:
    """A sink that takes every message and never answers its DATA (within the test's time)."""
    with smtp_peer(data_delay=600) as (port, inbox):
        yield port, inbox.envelopes  # type: ignore[misc]


def _serve(tmp: Path) -> tuple[Server, int]:
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    cert.cert_chain_pems[0].write_to_path(str(tmp / "cert.pem"))
    cert.private_key_pem.write_to_path(str(tmp / "key.pem"))
    submission = free_port()
    env = {
        "SMTPSETTINGS_SUBMISSION_PORT": str(submission),
        "SMTPSETTINGS_SUBMISSION_TLS_CERT": str(tmp / "cert.pem"),
        "SMTPSETTINGS_SUBMISSION_TLS_KEY": str(tmp / "key.pem"),
        "SMTPSETTINGS_HTTP_HEADER_TIMEOUT": str(HEADER_TIMEOUT),
    }
    return start_server(tmp / "data", env, workers=2), submission


def _connect(server: Server) -> socket.socket:
    url = urlsplit(server.base_url)
    return socket.create_connection((url.hostname, url.port), timeout=5)


def test_sigterm_with_everything_in_flight_stops_within_the_documented_bound(
    tmp_path: Path, stalled_sink: tuple[int, list[object]]
) -> None:
    port, at_sink = stalled_sink
    server, submission = _serve(tmp_path)
    held: list[socket.socket] = []
    try:
        portal = make_portal(server)
        with portal.client(Role.ADMIN) as c:
            saved = c.post(
                "/api/2.0/smtpsettings/smtp",
                json={"host": "127.0.0.1", "port": port, "senderAddress": f"noreply@{portal.hostname}", "enableSSL": False},
            )
            assert saved.status_code == 200, saved.text
            queued = c.post("/api/2.0/smtpsettings/messages", json={"to": ["a@example.org"], "subject": "s", "text": "t"})
            assert queued.status_code == 202, queued.text
            assert c.get("/api/2.0/smtpsettings/smtp/test", params={"to": "b@example.org"}).status_code == 200
        deadline = time.monotonic() + 30
        while len(at_sink) < 2:  # both are at DATA, waiting for an answer that does not come
            assert time.monotonic() < deadline, "the sends did not reach the sink"
            time.sleep(0.05)

        smtp = socket.create_connection(("127.0.0.1", submission), timeout=5)
        held.append(smtp)
        assert smtp.recv(200).startswith(b"220")
        smtp.sendall(b"EHLO client.example\r\n")
        assert smtp.recv(2000).startswith(b"250")
        idle = _connect(server)
        held.append(idle)
        idle.sendall(f"GET /api/2.0/authentication HTTP/1.1\r\nHost: {portal.hostname}\r\n\r\n".encode())
        assert idle.recv(4000).startswith(b"HTTP/1.1 200")
        head = _connect(server)
        held.append(head)
        head.sendall(f"GET /api/2.0/authentication HTTP/1.1\r\nHost: {portal.hostname}\r\n".encode())
        body = _connect(server)
        held.append(body)
        body.sendall(
            f"POST /api/2.0/authentication HTTP/1.1\r\nHost: {portal.hostname}\r\nContent-Type: application/json\r\n"
            'Content-Length: 100\r\n\r\n{"userName"'.encode()
        )
        time.sleep(0.5)

        started = time.monotonic()
        server.process.send_signal(signal.SIGTERM)  # the main process only, as systemd's KillMode=mixed does
        code = server.process.wait(60)
        took = time.monotonic() - started
    finally:
        for s in held:
            s.close()
        server.stop()
    assert code == 0, server.log_text()[-2000:]
    assert took <= STOP_BOUND, f"the stop took {took:.1f} s, over {STOP_BOUND} s"
    # What was in flight was put back or recorded, not lost: the message waits for the next start, the test
    # says it was interrupted.
    [(status,)] = server.query("SELECT status FROM outbox_messages")
    assert status in ("queued", "deferred"), status
    [(error,)] = server.query("SELECT error FROM test_jobs WHERE id != ''")
    assert "shutting down" in str(error), error
    assert "Traceback" not in server.log_text()
