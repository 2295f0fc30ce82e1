"""A second test mail while one is being sent: GET joins the running job, POST (new settings) gets 409.

The SMTP peer holds the first message until the test lets it go, so the first job is surely running when
the second request arrives. On PostgreSQL the two requests go to two instances sharing the database: the
decision comes from the job's claim there, not from either instance's memory.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from email.utils import parseaddr
from typing import Any

import httpx
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as SMTPServer
from aiosmtpd.smtp import Envelope, Session
from serverkit import Portal, Server, make_portal, start_server, wait_for_result
from smtp_peers import Inbox, closed_port

from smtpsettings.domain.accounts import Role

SETTINGS = "/api/2.0/smtpsettings/smtp"
TEST = SETTINGS + "/test"
JOB_TIMEOUT = 30
# The job's deadline: its start plus the job timeout plus the service's margin for its own bookkeeping.
DEADLINE_MARGIN = timedelta(seconds=5)
ENV = {
    # Long enough that the held message cannot time out while the test looks at the running job.
    "SMTPSETTINGS_SMTP_CONNECT_TIMEOUT": "5",
    "SMTPSETTINGS_SMTP_COMMAND_TIMEOUT": str(JOB_TIMEOUT),
    "SMTPSETTINGS_SMTP_JOB_TIMEOUT": str(JOB_TIMEOUT),
    "SMTPSETTINGS_SMTP_TEST_LIMIT": "4",
}


class HeldInbox(Inbox):
    """Keeps each message's final reply back until ``release`` is set; ``holding`` says one is waiting."""

    def __init__(self) -> None:
        super().__init__()
        self.holding = threading.Event()
        self.release = threading.Event()

    async def handle_DATA(self, server: SMTPServer, session: Session, envelope: Envelope) -> str:
        self.holding.set()
        await asyncio.to_thread(self.release.wait, JOB_TIMEOUT)
        return await super().handle_DATA(server, session, envelope)


@contextmanager
def held_peer() -> Iterator[tuple[int, HeldInbox]]:
    inbox = HeldInbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=closed_port())
    controller.start()
    try:
        yield controller.port, inbox
    finally:
        inbox.release.set()
        controller.stop()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def instances(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Server]]:
    """Where the first and the second request go: one server on SQLite, two instances on PostgreSQL."""
    base = tmp_path_factory.mktemp(f"conflict-{request.param}")
    if request.param == "sqlite":
        server = start_server(base / "a", ENV)
        yield server, server
        server.stop()
        return
    env = {**ENV, "SMTPSETTINGS_DATABASE_URL": request.getfixturevalue("pg_cluster").create_database()}
    a = start_server(base / "a", env)
    (base / "b").mkdir(mode=0o700)
    (base / "b" / "keys.json").write_bytes((base / "a" / "keys.json").read_bytes())  # one key ring for both
    b = start_server(base / "b", env)
    yield a, b
    a.stop()
    b.stop()


def client_on(portal: Portal, server: Server) -> httpx.Client:
    """The portal's admin, talking to one particular instance."""
    original, portal.server = portal.server, server
    try:
        return portal.client(Role.ADMIN)
    finally:
        portal.server = original


def settings_for(port: int, **extra: Any) -> dict[str, Any]:
    return {
        "host": "127.0.0.1",
        "port": port,
        "senderAddress": "noreply@example.com",
        "senderDisplayName": "Saved Settings",
        "enableSSL": False,
        "enableAuth": False,
        **extra,
    }


def test_a_second_test_while_one_runs_joins_on_get_and_is_409_on_post(instances: tuple[Server, Server]) -> None:
    first, second = instances
    portal = make_portal(first)
    unsaved = "Unsaved Settings"
    with held_peer() as (port, inbox), client_on(portal, first) as a, client_on(portal, second) as b:
        assert a.post(SETTINGS, json=settings_for(port)).status_code == 200
        before_start = datetime.now(UTC)
        started = a.get(TEST).json()["response"]
        assert inbox.holding.wait(JOB_TIMEOUT), "the test mail never reached the peer"

        # DocSpace's GET: the running job's status, not a new job.
        joined = b.get(TEST)
        assert joined.status_code == 200
        assert joined.json()["response"]["id"] == started["id"] and joined.json()["response"]["completed"] is False

        # POST asks for other settings to be tested: refused, saying until when at the latest. Repeatedly,
        # and without using up the test limit (4: the two GETs, and the POST after the job below).
        for _ in range(3):
            refused = b.post(TEST, json=settings_for(port, senderDisplayName=unsaved))
            assert refused.status_code == 409, refused.text
        after_refusal = datetime.now(UTC)
        envelope = refused.json()
        assert envelope["status"] == 1 and envelope["statusCode"] == 409 and "response" not in envelope
        error = envelope["error"]
        assert error["type"] == "ConflictException" and error["stack"] is None
        prefix = "A test mail is already being sent for this portal; try again when it has finished (at the latest "
        assert error["message"].startswith(prefix) and error["message"].endswith(")."), error["message"]
        deadline = datetime.strptime(error["message"][len(prefix) : -2], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
        earliest = before_start + timedelta(seconds=JOB_TIMEOUT) + DEADLINE_MARGIN - timedelta(seconds=1)
        latest = after_refusal + timedelta(seconds=JOB_TIMEOUT) + DEADLINE_MARGIN + timedelta(seconds=1)
        assert earliest <= deadline <= latest, (before_start, deadline, after_refusal)

        # The refusals changed nothing: the first job runs on and completes with the saved settings.
        assert b.get(TEST + "/status").json()["response"]["id"] == started["id"]
        inbox.release.set()
        result = wait_for_result(a, timeout=JOB_TIMEOUT)
        assert result["id"] == started["id"] and result["error"] == "", result

        # Once it has finished, POST starts a test of its own.
        again = b.post(TEST, json=settings_for(port, senderDisplayName=unsaved))
        assert again.status_code == 200, again.text
        assert again.json()["response"]["id"] != started["id"]
        assert wait_for_result(b, timeout=JOB_TIMEOUT)["error"] == ""
    assert [parseaddr(m["From"])[0] for m in inbox.messages] == ["Saved Settings", unsaved]
