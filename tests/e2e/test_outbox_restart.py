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

import httpx
from pgcluster import PgCluster
from serverkit import Server
from smtp_peers import smtp_peer
from test_outbox_delivery import (
    UNLIMITED,
    backend,
    check_duplicates_only_in_flight,
    client,
    sending_portal,
    servers,
    submit_all,
    wait_all_sent,
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
    errors = [e for e in log_events(server) if e.get("level") in ("error", "critical")]
    assert not errors, errors[:3]
    assert "Traceback" not in server.log_text()
    # What was not sent went back, due at once, with no lease left on it.
    [(held,)] = server.query("SELECT count(*) FROM outbox_messages WHERE status = 'sending'")
    assert held == 0


def test_when_one_of_two_postgresql_instances_is_killed_the_other_sends_its_messages_within_30_s(
    pg_cluster: PgCluster, servers: Callable[..., Server], tmp_path: Path
) -> None:
    # The defaults otherwise: a lease of 150 s, which the survivor must not wait out.
    env = {**UNLIMITED, "SMTPSETTINGS_DATABASE_URL": pg_cluster.create_database(), "SMTPSETTINGS_OUTBOX_BATCH_SIZE": "5"}
    with smtp_peer(data_delay=1.0) as (port, inbox):
        a = servers("a", env)
        (tmp_path / "b").mkdir(mode=0o700)
        (tmp_path / "b" / "keys.json").write_bytes((tmp_path / "a" / "keys.json").read_bytes())
        b = servers("b", env)
        portals = [sending_portal(a, port) for _ in range(2)]
        clients = [client(a, p, t) for p, t in portals]
        try:
            accepted = submit_all(clients, 60, "d")
            owner_a = dispatcher_owner(a)
            deadline = time.monotonic() + 30
            while not a.query("SELECT 1 FROM outbox_messages WHERE lease_owner = :o AND status = 'sending'", o=owner_a):
                assert time.monotonic() < deadline, "instance A never had a message in flight"
                time.sleep(0.02)
            a.kill(signal.SIGSTOP)  # frozen first, so what is read next is what the kill finds
            in_flight = {str(row[0]) for row in a.query("SELECT message_id FROM outbox_messages WHERE status = 'sending'")}
            held_by_a = a.query("SELECT count(*) FROM outbox_messages WHERE lease_owner = :o AND status = 'sending'", o=owner_a)
            a.kill(signal.SIGKILL)
            killed = time.monotonic()
            a.process.wait(10)
            assert int(held_by_a[0][0]) > 0
            inbox.data_delay = 0.0
            for c in clients:
                c.base_url = httpx.URL(b.base_url)
            wait_all_sent(clients, [30, 30], timeout=30 - (time.monotonic() - killed))
        finally:
            for c in clients:
                c.close()
    check_duplicates_only_in_flight(inbox, accepted, in_flight)
    [taken_over] = [e for e in log_events(b) if e["event"] == "outbox_peers_silent"]
    assert taken_over["peers"] == [owner_a] and taken_over["level"] == "warning"


def log_events(server: Server) -> list[dict[str, object]]:
    return [json.loads(line) for line in server.log_text().splitlines() if line.startswith("{")]


def dispatcher_owner(server: Server) -> str:
    """The lease owner the server's dispatcher claims as, from its start line in the log."""
    deadline = time.monotonic() + 10
    while not (owners := [e["owner"] for e in log_events(server) if e["event"] == "outbox_dispatcher_started"]):
        assert time.monotonic() < deadline, "the dispatcher did not start"
        time.sleep(0.05)
    return str(owners[0])
