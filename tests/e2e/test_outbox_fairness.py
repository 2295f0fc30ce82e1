"""Tenant isolation in the dispatcher: a portal whose mail server is stuck or refusing holds up no other portal.

One server, real SMTP peers on loopback: five healthy portals on an aiosmtpd sink, one portal whose server
accepts TCP and never greets (a tarpit), one whose server answers 421 at greeting. The healthy portals'
latency is measured alone first, then again behind the bad portals' backlog, in the same run.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

import httpx
from prometheus_client.parser import text_string_to_metric_families
from serverkit import Portal, Server
from smtp_peers import raw_peer, smtp_peer
from test_outbox_delivery import UNLIMITED, backend, client, sending_portal, servers, submit  # noqa: F401 - fixtures

HEALTHY_PORTALS = 5
HEALTHY_EACH = 30
BAD_EACH = 300
HORIZON = 30
FIRST_BACKOFF = 2
ENV = {
    **UNLIMITED,
    # The first back-off (and the first retry) of 2 s, doubling: 2, 4, 8, 16 s, so the horizon ends after the
    # fourth probe and the run shows the back-off growing.
    "SMTPSETTINGS_OUTBOX_FIRST_RETRY_SECONDS": str(FIRST_BACKOFF),
    "SMTPSETTINGS_OUTBOX_RETRY_HORIZON_SECONDS": str(HORIZON),
    # A tarpit holds an attempt for the greeting's deadline: 2 s here rather than the default 30 s.
    "SMTPSETTINGS_SMTP_CONNECT_TIMEOUT": "2",
    "SMTPSETTINGS_SMTP_COMMAND_TIMEOUT": "2",
    "SMTPSETTINGS_SMTP_JOB_TIMEOUT": "4",
}


def portal_id(server: Server, portal: Portal) -> int:
    [[found]] = server.query("SELECT id FROM portals WHERE hostname = :h", h=portal.hostname)
    return int(str(found))


def latencies(server: Server, portals: Sequence[Portal]) -> list[float]:
    """Seconds from acceptance to sent of every sent message of ``portals``."""
    ids = ",".join(str(portal_id(server, p)) for p in portals)
    rows = server.query(f"SELECT created_at, sent_at FROM outbox_messages WHERE status = 'sent' AND portal_id IN ({ids})")
    return [(_when(sent) - _when(created)).total_seconds() for created, sent in rows]


def _when(value: object) -> datetime:
    return value.replace(tzinfo=None) if isinstance(value, datetime) else datetime.fromisoformat(str(value))


def statuses(server: Server, portal: Portal) -> dict[str, int]:
    rows = server.query("SELECT status, count(*) FROM outbox_messages WHERE portal_id = :p GROUP BY status", p=portal_id(server, portal))
    return {str(status): int(n) for status, n in rows}


def submit_each(clients: Sequence[httpx.Client], count: int, prefix: str) -> None:
    """``count`` messages for each client's portal, the portals side by side (a thread each)."""

    def run(k: int) -> None:
        for i in range(count):
            submit(clients[k], f"{prefix}-{k}-{i}")

    with ThreadPoolExecutor(len(clients)) as pool:
        list(pool.map(run, range(len(clients))))


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what} within {timeout} s"
        time.sleep(0.25)


def unavailable_gauge(c: httpx.Client) -> float | None:
    response = c.get("/metrics")
    assert response.status_code == 200
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            if sample.name == "smtpsettings_outbox_destinations_unavailable":
                return sample.value
    return None


def test_a_tarpit_and_a_421_portal_hold_up_no_healthy_portal_and_cost_a_few_connections(
    backend: dict[str, str], servers: Callable[..., Server]
) -> None:
    with smtp_peer() as (sink, inbox), raw_peer() as stuck, raw_peer(b"421 4.3.2 Service not available\r\n") as closing:
        server = servers("data", {**backend, **ENV})
        healthy = [sending_portal(server, sink) for _ in range(HEALTHY_PORTALS)]
        bad = {name: sending_portal(server, peer.port) for name, peer in (("tarpit", stuck), ("421", closing))}
        healthy_clients = [client(server, p, t) for p, t in healthy]
        bad_clients = {name: client(server, p, t) for name, (p, t) in bad.items()}
        healthy_portals = [p for p, _ in healthy]
        try:
            # Alone: the healthy portals' own latency.
            submit_each(healthy_clients, HEALTHY_EACH, "alone")
            alone = HEALTHY_PORTALS * HEALTHY_EACH
            wait_until(lambda: len(inbox.messages) == alone, 60, f"{alone} messages sent alone")
            baseline = max(latencies(server, healthy_portals))

            # Behind the bad portals' backlog, which is older than every healthy message.
            started = time.monotonic()
            submit_each(list(bad_clients.values()), BAD_EACH, "bad")
            submit_each(healthy_clients, HEALTHY_EACH, "shared")

            # In back-off: visible as a count, in the log and on the waiting messages.
            wait_until(lambda: unavailable_gauge(healthy_clients[0]) == 2, 10, "two destinations in back-off")
            for name, peer in (("tarpit", stuck), ("421", closing)):
                reasons = server.query(
                    "SELECT last_error FROM outbox_messages WHERE portal_id = :p AND status = 'deferred' AND attempts = 0",
                    p=portal_id(server, bad[name][0]),
                )
                assert reasons, f"no {name} message waits untried"
                assert all(str(r).startswith(f"The mail server 127.0.0.1:{peer.port} is unavailable: ") for [r] in reasons)
            assert server.log_text().count('"outbox_destination_unavailable"') >= 2

            wait_until(lambda: len(inbox.messages) == 2 * alone, 60, f"{alone} more messages sent")
            shared = max(latencies(server, healthy_portals))
            assert shared <= baseline + 2, f"healthy latency {shared:.2f} s behind the bad portals, {baseline:.2f} s alone"

            # By the horizon (and the probe after it), every bad message has failed, none sent or left.
            for name, (portal, _) in bad.items():
                wait_until(
                    lambda p=portal: statuses(server, p) == {"failed": BAD_EACH},
                    HORIZON + 30,
                    f"every {name} message failed",
                )
                reasons = server.query("SELECT last_error FROM outbox_messages WHERE portal_id = :p", p=portal_id(server, portal))
                assert all(str(r).startswith("Gave up") for [r] in reasons)
            elapsed = time.monotonic() - started
        finally:
            for c in [*healthy_clients, *bad_clients.values()]:
                c.close()
    # A cohort (each lane's attempt, and at most one more a lane began before the cohort was complete), then
    # one probe per back-off of 2, 4, 8 … s: a few connections, not one per message.
    probes = int(math.log2(elapsed / FIRST_BACKOFF + 1)) + 1
    for name, peer in (("tarpit", stuck), ("421", closing)):
        assert 2 <= peer.connections <= 2 * 2 + probes < BAD_EACH, f"{name}: {peer.connections} connections in {elapsed:.0f} s"
    assert len(inbox.messages) == 2 * HEALTHY_PORTALS * HEALTHY_EACH
