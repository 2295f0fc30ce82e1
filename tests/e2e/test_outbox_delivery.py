"""The outbox's delivery guarantees at volume and through failures, over HTTP to real aiosmtpd sinks.

Each test starts servers of its own: the shared server keeps the production limit of 600 messages a minute
per portal (1,000 messages of one portal would wait a minute for it), and a kill or a second instance or
worker would disturb the other tests. Delivery is at least once; these tests hold it to exactly once when
nothing fails, and to "duplicates only among the messages in flight" when the server is killed.
"""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.message import Message
from email.utils import parseaddr
from pathlib import Path

import httpx
import pytest
from pgcluster import PgCluster
from prometheus_client.parser import text_string_to_metric_families
from serverkit import Portal, Server, make_portal, start_server
from smtp_peers import Inbox, smtp_peer

from smtpsettings.domain.accounts import Role
from smtpsettings.services.accounts import AccountsService
from smtpsettings.store.database import Database, utcnow
from smtpsettings.store.tables import outbox_messages

SETTINGS = "/api/2.0/smtpsettings/smtp"
MESSAGES = "/api/2.0/smtpsettings/messages"
SENDER = ("Example Portal", "noreply@example.com")

# Delivery, not the per-portal rate, is under test here (its default of 600 a minute would pace 1,000 messages).
UNLIMITED = {
    "SMTPSETTINGS_OUTBOX_MESSAGES_PER_MINUTE": "1000000",
    "SMTPSETTINGS_OUTBOX_FIRST_RETRY_SECONDS": "0.5",
}


@dataclass(frozen=True)
class Accepted:
    """A message as submitted and as the API accepted it: what the sink must receive."""

    id: str
    message_id: str
    to: str
    subject: str
    text: str


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> dict[str, str]:
    """The environment choosing the database: SQLite in the data dir, or a new database in the session's cluster."""
    if request.param == "sqlite":
        return {}
    return {"SMTPSETTINGS_DATABASE_URL": request.getfixturevalue("pg_cluster").create_database()}


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """Starts servers under ``tmp_path/<name>`` (the same name: the same data dir) and stops them all at the end."""
    started: list[Server] = []

    def start(name: str, env: dict[str, str], *, workers: int = 1) -> Server:
        server = start_server(tmp_path / name, env, workers=workers)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def client(server: Server, portal: Portal, token: str) -> httpx.Client:
    """A client of ``portal`` on ``server`` (any instance sharing its database), signed in with ``token``."""
    headers = {"Host": portal.hostname, "Authorization": f"Bearer {token}"}
    return httpx.Client(base_url=server.base_url, headers=headers, timeout=60)


def sending_portal(server: Server, port: int) -> tuple[Portal, str]:
    """A new portal of ``server`` whose settings point at the sink on ``port``; and an admin's token."""
    portal = make_portal(server)
    token = portal.sign_in(Role.ADMIN)
    with client(server, portal, token) as c:
        saved = c.post(
            SETTINGS,
            json={
                "host": "127.0.0.1",
                "port": port,
                "senderAddress": SENDER[1],
                "senderDisplayName": SENDER[0],
                "enableSSL": False,
                "enableAuth": False,
            },
        )
        assert saved.status_code == 200, saved.text
    return portal, token


def submit(c: httpx.Client, tag: str) -> Accepted:
    """POST one message whose recipient, subject and body are its own, so the sink's copy can be matched to it."""
    to, subject, text = f"{tag}@x.test", f"Message {tag}", f"Body of {tag}.\nSecond line of {tag}."
    response = c.post(MESSAGES, json={"to": [to], "subject": subject, "text": text})
    assert response.status_code == 202, response.text
    body = response.json()["response"]
    assert body["status"] == "queued"
    return Accepted(body["id"], body["messageId"], to, subject, text)


def submit_all(clients: Sequence[httpx.Client], count: int, prefix: str) -> list[Accepted]:
    """``count`` messages, split between ``clients``, each client on a thread of its own (concurrent POSTs)."""

    def run(k: int) -> list[Accepted]:
        return [submit(clients[k], f"{prefix}-{i}") for i in range(k, count, len(clients))]

    with ThreadPoolExecutor(len(clients)) as pool:
        return [a for batch in pool.map(run, range(len(clients))) for a in batch]


def total(c: httpx.Client, status: str | None = None) -> int:
    params = {"count": "1", **({"status": status} if status else {})}
    response = c.get(MESSAGES, params=params)
    assert response.status_code == 200, response.text
    return int(response.json()["total"])


def wait_all_sent(clients: Sequence[httpx.Client], expected: Sequence[int], timeout: float) -> None:
    """Until each client's portal has its ``expected`` number of messages sent."""
    deadline = time.monotonic() + timeout
    while True:
        sent = [total(c, "sent") for c in clients]
        if sent == list(expected):
            return
        assert time.monotonic() < deadline, f"sent {sent} of {list(expected)} after {timeout} s"
        time.sleep(0.25)


def body_of(message: Message) -> str:
    payload = message.get_payload(decode=True)
    assert isinstance(payload, bytes), message.get_content_type()
    return payload.decode().replace("\r\n", "\n").rstrip("\n")


def check_delivered(inbox: Inbox, accepted: Sequence[Accepted]) -> Counter[str]:
    """Every accepted message reached the sink, as it was submitted; returns how often each Message-ID arrived."""
    by_message_id = {a.message_id: a for a in accepted}
    assert len(by_message_id) == len(accepted), "the API gave two messages the same Message-ID"
    seen: Counter[str] = Counter()
    for received in list(inbox.messages):
        message_id = received["Message-ID"]
        assert message_id in by_message_id, f"the sink got a message nobody sent: {message_id}"
        expected = by_message_id[message_id]
        assert parseaddr(received["From"]) == SENDER
        assert received["To"] == expected.to and received["Subject"] == expected.subject
        assert body_of(received) == expected.text
        seen[message_id] += 1
    missing = set(by_message_id) - set(seen)
    assert not missing, f"{len(missing)} accepted messages never reached the sink"
    return seen


def check_exactly_once(inbox: Inbox, accepted: Sequence[Accepted]) -> None:
    seen = check_delivered(inbox, accepted)
    duplicates = {m: n for m, n in seen.items() if n > 1}
    assert not duplicates, f"{len(duplicates)} messages arrived more than once"
    assert len(inbox.messages) == len(accepted)


def check_duplicates_only_in_flight(inbox: Inbox, accepted: Sequence[Accepted], in_flight: set[str]) -> None:
    """Every accepted message arrived, at most twice, and twice only if it was in flight at the kill."""
    seen = check_delivered(inbox, accepted)
    duplicates = {m for m, n in seen.items() if n > 1}
    assert all(seen[m] == 2 for m in duplicates), "a message arrived three times or more"
    assert duplicates <= in_flight, f"duplicates of messages not in flight at the kill: {duplicates - in_flight}"
    assert len(inbox.messages) == len(accepted) + len(duplicates)


def test_1000_messages_arrive_once_each_as_submitted_and_read_sent(
    backend: dict[str, str], servers: Callable[..., Server]
) -> None:
    with smtp_peer() as (port, inbox):
        server = servers("data", {**backend, **UNLIMITED})
        portal, token = sending_portal(server, port)
        clients = [client(server, portal, token) for _ in range(4)]
        try:
            accepted = submit_all(clients, 1000, "m")
            wait_all_sent(clients[:1], [1000], timeout=120)
            assert total(clients[0]) == 1000  # no other status left behind
        finally:
            for c in clients:
                c.close()
        check_exactly_once(inbox, accepted)


# After a restart the killed process's claims are not waited out (their lease is 150 s by default): on SQLite
# the restarted dispatcher ends them as it takes the lock; on PostgreSQL it takes the old dispatcher, whose
# heartbeat stands still, for dead after the peer timeout (10 s).
RESUMED_WITHIN = {"sqlite": 15.0, "postgresql": 30.0}


def test_kill_9_mid_send_then_restart_delivers_everything_with_duplicates_only_among_those_in_flight(
    backend: dict[str, str], servers: Callable[..., Server]
) -> None:
    env = {
        **backend,
        **UNLIMITED,
        # At most 2 x 5 messages claimed at once, so most are still queued (unclaimed) at the kill.
        "SMTPSETTINGS_OUTBOX_BATCH_SIZE": "5",
    }
    # The sink records each message, then holds its 250 back for a second: the kill finds messages on the
    # wire, some of them already delivered but never acknowledged to the server.
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
            # Frozen first, so the count read next is the state the kill finds.
            server.kill(signal.SIGSTOP)
            in_flight = {
                str(row[0])
                for row in server.query("SELECT message_id FROM outbox_messages WHERE status = 'sending'")
            }
            [(queued,)] = server.query("SELECT count(*) FROM outbox_messages WHERE status = 'queued'")
            delivered_before = len(inbox.messages)
            server.kill(signal.SIGKILL)
            server.process.wait(10)

            assert in_flight and int(queued) > 0 and delivered_before < len(accepted)
            inbox.data_delay = 0.0
            restarting = time.monotonic()
            restarted = servers("data", env)  # the same data dir (keys, SQLite file) and database
            for c in clients:
                c.base_url = httpx.URL(restarted.base_url)
            within = RESUMED_WITHIN["postgresql" if backend else "sqlite"]
            wait_all_sent(clients, [30, 30], timeout=within - (time.monotonic() - restarting))
        finally:
            for c in clients:
                c.close()
    check_duplicates_only_in_flight(inbox, accepted, in_flight)


def test_two_instances_on_one_postgresql_database_deliver_2000_messages_once_each(
    pg_cluster: PgCluster, servers: Callable[..., Server], tmp_path: Path
) -> None:
    env = {**UNLIMITED, "SMTPSETTINGS_DATABASE_URL": pg_cluster.create_database()}
    with smtp_peer() as (port, inbox):
        # Each instance names itself in EHLO, so the sink tells which one sent each message.
        a = servers("a", {**env, "SMTPSETTINGS_SMTP_HELO_NAME": "a.instance.test"})
        # Every instance needs the same key ring: B gets a copy of A's, as an operator would deploy it.
        (tmp_path / "b").mkdir(mode=0o700)
        (tmp_path / "b" / "keys.json").write_bytes((tmp_path / "a" / "keys.json").read_bytes())
        b = servers("b", {**env, "SMTPSETTINGS_SMTP_HELO_NAME": "b.instance.test"})
        portals = [sending_portal(a, port) for _ in range(4)]
        # Each portal's messages go half through A, half through B: two clients per portal, one per instance.
        clients = [client(server, p, t) for p, t in portals for server in (a, b)]
        try:
            accepted = submit_all(clients, 2000, "p")
            wait_all_sent(clients[::2], [500] * 4, timeout=180)
        finally:
            for c in clients:
                c.close()
        check_exactly_once(inbox, accepted)
        senders = Counter(inbox.helo_names)
    assert set(senders) == {"a.instance.test", "b.instance.test"}, senders


def test_two_workers_run_one_dispatcher_and_metrics_count_every_message_once(
    backend: dict[str, str], servers: Callable[..., Server]
) -> None:
    count = 300
    with smtp_peer() as (port, inbox):
        server = servers("data", {**backend, **UNLIMITED}, workers=2)
        portal, token = sending_portal(server, port)
        clients = clients_on_every_worker(server, portal, token, per_worker=2)
        try:
            accepted = submit_all([c for c, _ in clients], count, "w")
            for c, pid in clients:  # each kept its connection to its worker throughout
                assert serving_pid(server, c.get(MESSAGES, params={"count": "1"})) == pid
            wait_all_sent([clients[0][0]], [count], timeout=120)
            deadline = time.monotonic() + 10
            while (numbers := scrape(clients[0][0])) != (count, count):
                assert time.monotonic() < deadline, (
                    f"/metrics: sent_total and messages{{status=sent}} are {numbers}"
                )
                time.sleep(0.2)
        finally:
            for c, _ in clients:
                c.close()
        check_exactly_once(inbox, accepted)
    assert server.log_text().count('"outbox_dispatcher_started"') == 1


def scrape(c: httpx.Client) -> tuple[float | None, float | None]:
    """``smtpsettings_outbox_sent_total`` and ``smtpsettings_outbox_messages{status="sent"}`` from /metrics."""
    response = c.get("/metrics")
    assert response.status_code == 200
    sent_total = sent_gauge = None
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            if sample.name == "smtpsettings_outbox_sent_total":
                sent_total = sample.value
            elif sample.name == "smtpsettings_outbox_messages" and sample.labels.get("status") == "sent":
                sent_gauge = sample.value
    return sent_total, sent_gauge


def clients_on_every_worker(
    server: Server, portal: Portal, token: str, *, per_worker: int
) -> list[tuple[httpx.Client, int]]:
    """Keep-alive clients whose connections were accepted by each of the server's workers, ``per_worker`` each.

    The workers share the listening socket and the kernel decides which accepts a connection, so clients are
    opened until every worker has its share; each is tagged with the pid of the worker serving it.
    """
    # granian's main process and the delivery process accept nothing
    workers = len(server_pids(server)) - 1 - len(server.delivery_pids())
    kept: list[tuple[httpx.Client, int]] = []
    spare: list[httpx.Client] = []
    for _ in range(100):
        c = client(server, portal, token)
        pid = serving_pid(server, c.get(MESSAGES, params={"count": "1"}))
        if sum(1 for _, p in kept if p == pid) < per_worker:
            kept.append((c, pid))
        else:
            spare.append(c)  # kept open until the end, so the next connection is a new one
        if len(kept) == workers * per_worker:
            break
    for c in spare:
        c.close()
    assert len({pid for _, pid in kept}) == workers >= 2, (
        f"connections reached workers {Counter(p for _, p in kept)}"
    )
    return kept


def server_pids(server: Server) -> list[int]:
    """The server's processes: everything in its process group (its workers are its children)."""
    pids = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                stat = Path(f"/proc/{name}/stat").read_text()
            except OSError:
                continue
            if int(stat.rpartition(")")[2].split()[2]) == server.process.pid:
                pids.append(int(name))
    return pids


def serving_pid(server: Server, response: httpx.Response) -> int:
    """The pid of the server process holding the other end of the connection ``response`` came on."""
    client_port = response.extensions["network_stream"].get_extra_info("client_addr")[1]
    server_port = httpx.URL(server.base_url).port
    inode = None
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote = (int(f.split(":")[1], 16) for f in fields[1:3])
        if (local, remote) == (server_port, client_port):
            inode = fields[9]
    assert inode is not None, "the connection is not in /proc/net/tcp"
    for pid in server_pids(server):
        fd_dir = Path(f"/proc/{pid}/fd")
        for fd in fd_dir.iterdir():
            try:
                if os.readlink(fd) == f"socket:[{inode}]":
                    return pid
            except OSError:
                continue
    raise AssertionError("no server process holds the connection")


def test_rows_that_ended_before_the_retention_period_are_deleted_when_the_dispatcher_starts(
    backend: dict[str, str], servers: Callable[..., Server], tmp_path: Path
) -> None:
    """More old rows than one batch deletes: the dispatcher goes on until none is left, and only those go."""
    url = backend.get("SMTPSETTINGS_DATABASE_URL") or f"sqlite:///{tmp_path / 'kept' / 'smtpsettings.db'}"
    (tmp_path / "kept").mkdir()
    db = Database(url)
    db.migrate()
    portal_id = AccountsService(db).create_portal("kept.test", is_default=False).id
    now = utcnow()
    old, recent = now - timedelta(days=91), now - timedelta(days=89)

    def row(i: int, status: str, finished: datetime | None) -> dict[str, object]:
        return {
            "id": f"{status}-{i}-{uuid.uuid4().hex[:8]}", "portal_id": portal_id, "user_id": None, "api_key_id": None,
            "status": status, "sender": "s@x.test", "recipients": "[]", "content": None, "smtputf8": False,
            "to_addresses": '["a@x.test"]', "cc_addresses": "[]", "subject": "old", "message_id": "<m@x.test>", "size": 0,
            "idempotency_key": None, "attempts": 1, "created_at": old, "queued_at": old, "next_attempt_at": None,
            "lease_owner": None, "sent_at": None, "finished_at": finished, "last_error": None, "smtp_reply": None,
            "recipient_outcomes": None,
        }

    expired = [row(i, ("sent", "partial", "failed", "cancelled")[i % 4], old) for i in range(1100)]
    kept = [row(0, "sent", recent), row(0, "failed", recent), {**row(0, "deferred", None), "next_attempt_at": now + timedelta(days=1)}]
    db.write_sync(lambda c: c.execute(outbox_messages.insert(), [*expired, *kept]))
    db.dispose()

    server = servers("kept", {**backend, "SMTPSETTINGS_OUTBOX_ROW_RETENTION_DAYS": "90"})
    deadline = time.monotonic() + 30
    while server.query("SELECT count(*) FROM outbox_messages")[0][0] != len(kept):
        assert time.monotonic() < deadline, "the old rows were not deleted"
        time.sleep(0.1)
    left = {r[0] for r in server.query("SELECT id FROM outbox_messages")}
    assert left == {r["id"] for r in kept}
    deleted = [json.loads(line) for line in server.log_text().splitlines() if '"outbox_rows_deleted"' in line]
    assert [entry["count"] for entry in deleted] == [1100]
