"""How the dispatcher ends and how the outbox resumes: a normal stop, and a peer instance's kill -9.

Each test runs servers of its own (the shared server must not be stopped or killed). The helpers are those of
the delivery tests: the same portals, submissions and checks at the sink.
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from serverkit import Server
from smtp_peers import smtp_peer
from test_outbox_delivery import (
    UNLIMITED,
    backend,
    check_delivered,
    client,
    sending_portal,
    servers,
    submit_all,
    total,
)

__all__ = ("backend", "servers")  # fixtures, imported to be found here


def test_a_normal_stop_with_sends_in_flight_logs_no_error(
    backend: dict[str, str], servers: Callable[..., Server]
) -> None:
    # The sink holds each 250 back: the stop finds sends on the wire and more claimed behind them.
    with smtp_peer(data_delay=1.0) as (port, inbox):
        server = servers("data", {**backend, **UNLIMITED, "SMTPSETTINGS_OUTBOX_BATCH_SIZE": "20"})
        portals = [sending_portal(server, port) for _ in range(3)]
        clients = [client(server, p, t) for p, t in portals]
        try:
            submit_all(clients, 90, "s")
            deadline = time.monotonic() + 30
            while len(inbox.messages) < 3:
                assert time.monotonic() < deadline, "nothing reached the sink"
                time.sleep(0.05)
            [(sending,)] = server.query("SELECT count(*) FROM outbox_messages WHERE status = 'sending'")
            assert int(sending) > 6  # more claimed than the lanes are sending
            server.kill(signal.SIGTERM)
            assert server.process.wait(30) == 0
        finally:
            for c in clients:
                c.close()
    lines = server.log_text().splitlines()
    events = [json.loads(line) for line in lines if line.startswith("{")]
    errors = [e for e in events if e.get("level") in ("error", "critical")]
    assert not errors, errors[:3]
    assert not any("Traceback" in line for line in lines)
    # What was not sent went back, due at once, with no lease left on it.
    [(held,)] = server.query("SELECT count(*) FROM outbox_messages WHERE status = 'sending'")
    assert held == 0
