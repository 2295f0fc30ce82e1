"""Many portals on one mail server: a lane sends its portal's queued messages over one connection, and yields.

A real ``smtpsettings serve`` and a real aiosmtpd sink on loopback that counts the sessions it is opened
(one EHLO each) and holds its first DATA reply until the test lets it go, so that every message is accepted
and claimed before the first is sent: what the dispatcher then does with a full queue is under test, not
how fast the test submits.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import httpx
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as SMTPServer
from aiosmtpd.smtp import Envelope, Session
from prometheus_client.parser import text_string_to_metric_families
from smtp_peers import Inbox, closed_port
from test_outbox_delivery import UNLIMITED, client, sending_portal, servers, submit  # noqa: F401 - fixtures
from test_outbox_fairness import portal_id, wait_until

from serverkit import Server

PORTALS = 12
EACH = 5
IN_A_ROW = 5  # the dispatcher's run before it yields to other portals waiting for the host


class GatedInbox(Inbox):
    """An inbox that counts sessions and answers no DATA until ``gate`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.subjects: list[str] = []

    async def handle_EHLO(self, server: SMTPServer, session: Session, envelope: Envelope, hostname: str, responses: list[str]) -> list[str]:
        session.host_name = hostname
        self.connections += 1
        return responses

    async def handle_DATA(self, server: SMTPServer, session: Session, envelope: Envelope) -> str:
        while not self.gate.is_set():
            await asyncio.sleep(0.02)
        reply = await super().handle_DATA(server, session, envelope)
        self.subjects.append(str(self.messages[-1]["Subject"]))
        return reply


@contextmanager
def gated_sink() -> Iterator[tuple[int, GatedInbox]]:
    inbox = GatedInbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=closed_port(), server_hostname="localhost")
    controller.start()
    try:
        yield controller.port, inbox
    finally:
        inbox.gate.set()
        controller.stop()


def sending_count(server: Server) -> int:
    [[count]] = server.query("SELECT count(*) FROM outbox_messages WHERE status = 'sending'")
    return int(str(count))


def outbox_metrics(c: httpx.Client) -> dict[str, float]:
    response = c.get("/metrics")
    assert response.status_code == 200
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
        if sample.name.startswith("smtpsettings_outbox_")
    }


def test_many_portals_on_one_host_open_about_one_connection_each_and_the_metrics_count_them(
    servers: Callable[..., Server],
) -> None:
    with gated_sink() as (port, inbox):
        server = servers("data", {**UNLIMITED, "SMTPSETTINGS_OUTBOX_CONNECTIONS_PER_HOST": "2"})
        clients = [client(server, p, t) for p, t in (sending_portal(server, port) for _ in range(PORTALS))]
        before = outbox_metrics(clients[0])
        for k, c in enumerate(clients):
            for i in range(EACH):
                submit(c, f"p{k}-{i}")
        wait_until(lambda: sending_count(server) == PORTALS * EACH, 30, "every message claimed")
        inbox.gate.set()
        wait_until(lambda: len(inbox.messages) == PORTALS * EACH, 60, "every message delivered")

        # One connection per portal (one message per connection would be 60), the first held at the gate.
        assert PORTALS <= inbox.connections <= PORTALS + 2, inbox.connections
        after = outbox_metrics(clients[0])
        opened = after["smtpsettings_outbox_connections_opened_total"] - before.get("smtpsettings_outbox_connections_opened_total", 0)
        assert opened == inbox.connections
        reads = after["smtpsettings_outbox_settings_reads_total"] - before.get("smtpsettings_outbox_settings_reads_total", 0)
        assert PORTALS <= reads < PORTALS * EACH, reads
        assert after["smtpsettings_outbox_token_cache_entries"] == 0  # passwords only: no OAuth 2.0 grant
        for c in clients:
            c.close()


def test_a_portal_with_a_backlog_yields_the_hosts_only_connection_to_another_portal(servers: Callable[..., Server]) -> None:
    with gated_sink() as (port, inbox):
        server = servers("data", {**UNLIMITED, "SMTPSETTINGS_OUTBOX_CONNECTIONS_PER_HOST": "1"})
        (big, big_token), (small, small_token) = sending_portal(server, port), sending_portal(server, port)
        with client(server, big, big_token) as b, client(server, small, small_token) as s:
            for i in range(30):
                submit(b, f"big-{i}")
            for i in range(EACH):
                submit(s, f"small-{i}")

            def small_claimed() -> bool:
                rows = server.query(
                    "SELECT count(*) FROM outbox_messages WHERE status = 'sending' AND portal_id = :p", p=portal_id(server, small)
                )
                return int(str(rows[0][0])) == EACH

            wait_until(small_claimed, 30, "the small portal's messages claimed")
            inbox.gate.set()
            wait_until(lambda: len(inbox.messages) == 30 + EACH, 60, "every message delivered")

        # The big portal's backlog was claimed first and had the only connection: it sent at most one run
        # before the small portal's messages went, not its whole queue.
        small_at = [i for i, subject in enumerate(inbox.subjects) if "small-" in subject]
        assert len(small_at) == EACH
        assert max(small_at) < 2 * IN_A_ROW, inbox.subjects[: 3 * IN_A_ROW]


def test_a_lane_asks_the_claim_for_more_of_its_portals_interleaved_messages(servers: Callable[..., Server]) -> None:
    # A batch of 1: each claim's walk sees ten rows, a message or two of each portal, never a portal's five.
    # One connection to the host: the portals queue for it, so none opens a second.
    with gated_sink() as (port, inbox):
        env = {**UNLIMITED, "SMTPSETTINGS_OUTBOX_BATCH_SIZE": "1", "SMTPSETTINGS_OUTBOX_CONNECTIONS_PER_HOST": "1"}
        server = servers("data", env)
        clients = [client(server, p, t) for p, t in (sending_portal(server, port) for _ in range(4))]
        for i in range(EACH):
            for k, c in enumerate(clients):
                submit(c, f"p{k}-{i}")
        wait_until(lambda: sending_count(server) >= 2, 30, "the first messages claimed")  # the batch's capacity
        inbox.gate.set()
        wait_until(lambda: len(inbox.messages) == 4 * EACH, 60, "every message delivered")
        # One connection per portal: each lane's claim for more brought the rest of its portal's messages.
        assert 4 <= inbox.connections <= 5, inbox.connections
        for c in clients:
            c.close()
