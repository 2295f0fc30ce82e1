"""``serve`` delivers from a process of its own: one ``smtpsettings deliver`` beside the workers, woken by them,
restarted when it dies, stopped after them; and a kill -9 of it mid-send loses nothing.

Each test runs a server of its own (the shared one must not be killed); the helpers are the delivery tests'.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable

import httpx
from smtp_peers import smtp_peer
from test_outbox_delivery import (
    UNLIMITED,
    check_duplicates_only_in_flight,
    check_exactly_once,
    client,
    scrape,
    sending_portal,
    servers,
    submit_all,
    wait_all_sent,
)

from serverkit import Server

__all__ = ("servers",)  # a fixture, imported to be found here


def log_events(server: Server) -> list[dict[str, object]]:
    return [json.loads(line) for line in server.log_text().splitlines() if line.startswith("{")]


def one_delivery_process(server: Server, other_than: int | None = None, timeout: float = 15) -> int:
    """The pid of the server's single delivery process (a new one, when ``other_than`` names the one before)."""
    deadline = time.monotonic() + timeout
    while True:
        pids = server.delivery_pids()
        if len(pids) == 1 and pids[0] != other_than:
            return pids[0]
        assert len(pids) <= 1, f"more than one delivery process: {pids}"
        assert time.monotonic() < deadline, "no (new) delivery process"
        time.sleep(0.05)


def test_the_delivery_process_sends_what_two_workers_accept_and_its_counters_reach_metrics(
    servers: Callable[..., Server],
) -> None:
    count = 200
    with smtp_peer() as (port, inbox):
        server = servers("data", UNLIMITED, workers=2)
        deliverer = one_delivery_process(server)
        portal, token = sending_portal(server, port)
        c = client(server, portal, token)
        try:
            accepted = submit_all([c], count, "m")
            wait_all_sent([c], [count], timeout=60)
            deadline = time.monotonic() + 10
            while (numbers := scrape(c)) != (count, count):
                assert time.monotonic() < deadline, f"/metrics: sent_total and messages{{status=sent}} are {numbers}"
                time.sleep(0.2)
        finally:
            c.close()
        check_exactly_once(inbox, accepted)
    assert (server.data_dir / "outbox.wake").is_socket()
    events = log_events(server)
    started = [e for e in events if e["event"] == "outbox_dispatcher_started"]
    assert len(started) == 1 and str(started[0]["owner"]).startswith(f"{deliverer}-")  # not a worker
    assert any(f"{deliverer}.db" in p.name for p in (server.data_dir / "metrics").iterdir())


def test_a_kill_9_of_the_delivery_process_mid_send_is_restarted_and_loses_nothing(
    servers: Callable[..., Server],
) -> None:
    # At most 2 x 5 claimed at once, so most are still queued at the kill; the sink holds each 250 back.
    env = {**UNLIMITED, "SMTPSETTINGS_OUTBOX_BATCH_SIZE": "5"}
    with smtp_peer(data_delay=1.0) as (port, inbox):
        server = servers("data", env)
        portals = [sending_portal(server, port) for _ in range(2)]
        clients = [client(server, p, t) for p, t in portals]
        try:
            accepted = submit_all(clients, 60, "k")
            deadline = time.monotonic() + 30
            while len(inbox.messages) < 6:
                assert time.monotonic() < deadline, "nothing reached the sink"
                time.sleep(0.05)
            killed = one_delivery_process(server)
            os.kill(killed, signal.SIGSTOP)  # frozen first, so what is read next is what the kill finds
            in_flight = {
                str(row[0]) for row in server.query("SELECT message_id FROM outbox_messages WHERE status = 'sending'")
            }
            [(queued,)] = server.query("SELECT count(*) FROM outbox_messages WHERE status = 'queued'")
            os.kill(killed, signal.SIGKILL)
            assert in_flight and int(queued) > 0
            inbox.data_delay = 0.0
            # The workers never stopped: the server still accepts while its delivery process is away.
            accepted += submit_all(clients, 10, "a")
            restarted = one_delivery_process(server, other_than=killed)
            # Well within the 150 s lease: the new process ends the dead one's leases when it takes the lock.
            wait_all_sent(clients, [35, 35], timeout=30)
        finally:
            for c in clients:
                c.close()
    check_duplicates_only_in_flight(inbox, accepted, in_flight)
    assert server.process.poll() is None
    events = log_events(server)
    [exited] = [e for e in events if e["event"] == "delivery_process_exited"]
    assert exited["pid"] == killed and exited["returncode"] == -signal.SIGKILL and exited["level"] == "warning"
    owners = [str(e["owner"]) for e in events if e["event"] == "outbox_dispatcher_started"]
    assert [o.split("-")[0] for o in owners] == [str(killed), str(restarted)]


def test_serve_stops_its_delivery_process_after_the_workers_and_an_orphan_one_leaves_by_itself(
    servers: Callable[..., Server],
) -> None:
    server = servers("data", {})
    deliverer = one_delivery_process(server)
    ready(server)  # a worker told to stop while it is still starting is granian's to wait for, not ours
    os.kill(server.process.pid, signal.SIGTERM)  # the serve process alone, as `kill PID` would
    assert server.process.wait(30) == 0
    assert not os.path.exists(f"/proc/{deliverer}")
    events = [e["event"] for e in log_events(server)]
    assert "delivery_stopped" in events and "delivery_process_exited" not in events

    server = servers("again", {})
    deliverer = one_delivery_process(server)
    os.kill(server.process.pid, signal.SIGKILL)  # serve alone: its delivery process is orphaned
    server.process.wait(10)
    deadline = time.monotonic() + 15
    while os.path.exists(f"/proc/{deliverer}") and "State:\tZ" not in _status(deliverer):
        assert time.monotonic() < deadline, "the orphaned delivery process kept running"
        time.sleep(0.1)


def ready(server: Server) -> None:
    """Until a worker answers and the delivery process dispatches."""
    assert httpx.get(server.base_url + "/api/2.0/health/ready", timeout=30).status_code == 200
    deadline = time.monotonic() + 30
    while not any(e["event"] == "outbox_dispatcher_started" for e in log_events(server)):
        assert time.monotonic() < deadline, "the delivery process did not start dispatching"
        time.sleep(0.05)


def _status(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/status") as f:
            return f.read()
    except OSError:
        return ""
