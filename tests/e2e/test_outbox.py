"""Mail through the outbox over HTTP, to real SMTP servers on loopback: acceptance, delivery, retries."""

from __future__ import annotations

import time
from collections.abc import Iterator
from email.utils import parseaddr
from typing import Any

import httpx
import pytest
from serverkit import Portal, Server, make_portal, start_server
from smtp_peers import closed_port, smtp_peer, tarpit

from smtpsettings.domain.accounts import Role

SETTINGS = "/api/2.0/smtpsettings/smtp"
MESSAGES = "/api/2.0/smtpsettings/messages"


def settings_for(port: int) -> dict[str, Any]:
    return {
        "host": "127.0.0.1",
        "port": port,
        "senderAddress": "noreply@example.com",
        "senderDisplayName": "Example Portal",
        "enableSSL": False,
        "enableAuth": False,
    }


def wait_status(client: httpx.Client, message_id: str, statuses: set[str], timeout: float = 20) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = client.get(f"{MESSAGES}/{message_id}").json()["response"]
        if body["status"] in statuses:
            return body  # type: ignore[no-any-return]
        time.sleep(0.05)
    raise AssertionError(f"message {message_id} is {body['status']}, not {statuses}, after {timeout} s")


def send(client: httpx.Client, **fields: Any) -> httpx.Response:
    body = {"to": ["a@x.test"], "subject": "Hello", "text": "Hi there", **fields}
    return client.post(MESSAGES, json=body)


def test_a_message_is_accepted_then_delivered_with_the_portals_sender(portal: Portal) -> None:
    with smtp_peer() as (port, inbox), portal.client(Role.ADMIN) as c:
        assert c.post(SETTINGS, json=settings_for(port)).status_code == 200
        accepted = send(c, cc=["b@x.test"], bcc=["hidden@x.test"], replyTo="reply@x.test", html="<p>Hi</p>")
        assert accepted.status_code == 202, accepted.text
        body = accepted.json()
        message = body["response"]
        assert body["statusCode"] == 202 and message["status"] == "queued"
        assert message["to"] == ["a@x.test"] and message["cc"] == ["b@x.test"] and "bcc" not in message
        done = wait_status(c, message["id"], {"sent"})
    assert done["attempts"] == 1 and done["sentAt"] and done["smtpReply"].startswith("250")
    [received] = inbox.messages
    assert parseaddr(received["From"]) == ("Example Portal", "noreply@example.com")
    assert received["To"] == "a@x.test" and received["Cc"] == "b@x.test" and received["Subject"] == "Hello"
    assert received["Message-ID"] == message["messageId"] and "Bcc" not in received
    assert sorted(inbox.envelopes[0].rcpt_tos) == ["a@x.test", "b@x.test", "hidden@x.test"]
    assert received.is_multipart()


def test_bad_messages_are_refused_field_by_field_and_nothing_is_queued(portal: Portal) -> None:
    with portal.client(Role.ADMIN) as c:
        refused = c.post(MESSAGES, json={"to": ["not an address"], "subject": "a\u0007b", "text": "x"})
        assert refused.status_code == 400
        errors = refused.json()["response"]["errors"]
        assert set(errors) >= {"To", "Subject"}
        too_many = send(c, to=[f"r{i}@x.test" for i in range(101)])
        assert too_many.status_code == 400 and "To" in too_many.json()["response"]["errors"]
        assert c.get(MESSAGES).json()["total"] == 0


def test_a_message_larger_than_the_limit_is_413(portal: Portal) -> None:
    with portal.client(Role.ADMIN) as c:
        response = send(c, text="x" * (10 * 1024 * 1024 + 1))
    assert response.status_code == 413 and response.json()["statusCode"] == 413


def test_the_same_idempotency_key_never_makes_a_second_message(portal: Portal) -> None:
    with smtp_peer() as (port, inbox), portal.client(Role.ADMIN) as c:
        c.post(SETTINGS, json=settings_for(port))
        first = c.post(
            MESSAGES, json={"to": ["a@x.test"], "subject": "one", "text": "x"}, headers={"Idempotency-Key": "order-42"}
        )
        again = c.post(MESSAGES, json={"to": ["a@x.test"], "subject": "two", "text": "x"}, headers={"Idempotency-Key": "order-42"})
        assert first.status_code == 202 and again.status_code == 200
        assert again.json()["response"]["id"] == first.json()["response"]["id"]
        wait_status(c, first.json()["response"]["id"], {"sent"})
        assert c.get(MESSAGES).json()["total"] == 1
        bad = c.post(MESSAGES, json={"to": ["a@x.test"], "subject": "x", "text": "x"}, headers={"Idempotency-Key": "a b"})
        assert bad.status_code == 400
    assert len(inbox.messages) == 1


def test_a_send_only_key_sends_and_reads_its_own_and_is_refused_elsewhere(server: Server, portal: Portal) -> None:
    key = server.cli("apikey", "create", "--portal", portal.hostname, "--email", portal.emails[Role.ADMIN], "--scope", "mail.send").stdout.strip().splitlines()[-1]
    with portal.client(Role.ADMIN) as admin, portal.client(headers={"Authorization": f"Bearer {key}"}) as app:
        admins_own = send(admin).json()["response"]["id"]
        mine = send(app)
        assert mine.status_code == 202
        assert app.get(f"{MESSAGES}/{mine.json()['response']['id']}").status_code == 200
        assert app.get(f"{MESSAGES}/{admins_own}").status_code == 404
        assert [m["id"] for m in app.get(MESSAGES).json()["response"]] == [mine.json()["response"]["id"]]
        assert app.get(SETTINGS).status_code == 403
        assert app.post(SETTINGS, json=settings_for(25)).status_code == 403
        assert app.get(SETTINGS + "/test").status_code == 403
        assert app.delete(f"{MESSAGES}/{mine.json()['response']['id']}").status_code == 403
    with portal.client(Role.USER) as user:
        assert send(user).status_code == 403


@pytest.fixture(scope="module")
def patient_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server whose first retry waits an hour, so a deferred message stays deferred while a test acts on it."""
    srv = start_server(
        tmp_path_factory.mktemp("patient") / "data",
        {"SMTPSETTINGS_OUTBOX_FIRST_RETRY_SECONDS": "3600", "SMTPSETTINGS_SMTP_CONNECT_TIMEOUT": "2"},
    )
    yield srv
    srv.stop()


def test_cancel_a_deferred_message_and_retry_a_failed_one(patient_server: Server) -> None:
    portal = make_portal(patient_server)
    with portal.client(Role.ADMIN) as c:
        c.post(SETTINGS, json=settings_for(closed_port()))
        deferred = send(c).json()["response"]["id"]
        waiting = wait_status(c, deferred, {"deferred"})
        assert waiting["attempts"] == 1 and waiting["nextAttemptAt"] and "refused" in waiting["lastError"].lower()
        cancelled = c.delete(f"{MESSAGES}/{deferred}")
        assert cancelled.status_code == 200 and cancelled.json()["response"]["status"] == "cancelled"
        assert c.delete(f"{MESSAGES}/{deferred}").status_code == 409
        assert c.post(f"{MESSAGES}/{deferred}/retry").status_code == 409
        assert c.get(f"{MESSAGES}/nope").status_code == 404
        assert c.get(MESSAGES, params={"status": "cancelled"}).json()["total"] == 1
        assert c.get(MESSAGES, params={"status": "bogus"}).status_code == 400
        assert c.get(MESSAGES, params={"count": "0"}).status_code == 400

        with smtp_peer(refuse_rcpt="550 5.1.1 no such user") as (port, inbox):
            c.post(SETTINGS, json=settings_for(port))
            failed = send(c).json()["response"]["id"]
            done = wait_status(c, failed, {"failed"})
        assert done["attempts"] == 1 and done["smtpReply"].startswith("550") and "no such user" in done["lastError"]
        with smtp_peer() as (port, inbox):
            c.post(SETTINGS, json=settings_for(port))
            retried = c.post(f"{MESSAGES}/{failed}/retry")
            assert retried.status_code == 200 and retried.json()["response"]["status"] == "queued"
            assert wait_status(c, failed, {"sent"})["attempts"] == 2
        assert len(inbox.messages) == 1


def test_a_451_twice_then_250_is_deferred_then_sent(portal: Portal) -> None:
    with smtp_peer(refuse_data=["451 4.7.1 greylisted", "451 4.7.1 greylisted"]) as (port, inbox), portal.client(Role.ADMIN) as c:
        c.post(SETTINGS, json=settings_for(port))
        message = send(c).json()["response"]["id"]
        seen = {wait_status(c, message, {"deferred"})["status"]}
        done = wait_status(c, message, {"sent"})
    assert seen == {"deferred"} and done["attempts"] == 3 and done["lastError"] is None
    assert len(inbox.messages) == 1


def test_a_refused_recipient_fails_only_itself_and_a_deferred_one_is_retried_alone(portal: Portal) -> None:
    replies = {
        "gone@x.test": ["550 5.1.1 no such user"],
        "busy@x.test": ["450 4.2.1 mailbox busy"],
        "hidden-busy@x.test": ["451 4.3.0 try later"],
    }
    with smtp_peer(rcpt_replies=replies) as (port, inbox), portal.client(Role.ADMIN) as c:
        c.post(SETTINGS, json=settings_for(port))
        accepted = send(c, to=["a@x.test", "gone@x.test"], cc=["busy@x.test"], bcc=["hidden-busy@x.test"]).json()
        message = accepted["response"]
        assert [(r["address"], r["status"]) for r in message["recipients"]] == [
            ("a@x.test", "pending"), ("gone@x.test", "pending"), ("busy@x.test", "pending"),
        ]
        waiting = wait_status(c, message["id"], {"deferred", "partial"})
        done = wait_status(c, message["id"], {"partial"})
        listed = c.get(MESSAGES, params={"status": "partial"}).json()
    if waiting["status"] == "deferred":  # seen between the attempts (the retry comes within a second)
        assert waiting["lastError"] == "Recipient deferred: 450 4.2.1 mailbox busy"
        assert {r["address"]: r["status"] for r in waiting["recipients"]} == {
            "a@x.test": "accepted", "gone@x.test": "refused", "busy@x.test": "deferred",
        }
    assert done["attempts"] == 2 and done["sentAt"] and done["nextAttemptAt"] is None
    assert done["lastError"] == "Delivered to 3 of 4 recipients; not to the others: 550 5.1.1 no such user"
    assert [(r["address"], r["status"], r["reply"]) for r in done["recipients"]] == [
        ("a@x.test", "accepted", "250 2.0.0 OK queued"),
        ("gone@x.test", "refused", "550 5.1.1 no such user"),
        ("busy@x.test", "accepted", "250 2.0.0 OK queued"),
    ]
    assert "hidden-busy" not in str(done)  # a Bcc recipient is never shown
    assert [m["id"] for m in listed["response"]] == [message["id"]]
    # The first attempt went to the one accepted; the retry only to the two deferred, once each.
    assert [sorted(e.rcpt_tos) for e in inbox.envelopes] == [["a@x.test"], ["busy@x.test", "hidden-busy@x.test"]]


def test_a_message_every_recipient_refuses_fails_without_data(portal: Portal) -> None:
    with smtp_peer(rcpt_replies={"a@x.test": ["550 5.1.1 no such user"], "b@x.test": ["553 5.1.3 bad address"]}) as (port, inbox), portal.client(Role.ADMIN) as c:
        c.post(SETTINGS, json=settings_for(port))
        message = send(c, to=["a@x.test", "b@x.test"]).json()["response"]
        done = wait_status(c, message["id"], {"failed"})
    assert done["attempts"] == 1 and done["smtpReply"] == "550 5.1.1 no such user" and done["sentAt"] is None
    assert [(r["status"], r["reply"]) for r in done["recipients"]] == [
        ("refused", "550 5.1.1 no such user"), ("refused", "553 5.1.3 bad address"),
    ]
    assert inbox.envelopes == []


def test_a_tarpit_defers_within_the_deadline(portal: Portal) -> None:
    with tarpit() as port, portal.client(Role.ADMIN) as c:
        c.post(SETTINGS, json=settings_for(port))
        started = time.monotonic()
        message = send(c).json()["response"]["id"]
        done = wait_status(c, message, {"deferred"}, timeout=30)
        assert time.monotonic() - started < 20
        c.delete(f"{MESSAGES}/{message}")
    assert done["lastError"]


def test_a_portal_over_its_rate_waits_for_the_next_window_without_spending_attempts(tmp_path_factory: pytest.TempPathFactory) -> None:
    srv = start_server(tmp_path_factory.mktemp("rate") / "data", {"SMTPSETTINGS_OUTBOX_MESSAGES_PER_MINUTE": "3"})
    try:
        portal, other = make_portal(srv), make_portal(srv)
        with smtp_peer() as (port, inbox), portal.client(Role.ADMIN) as c, other.client(Role.ADMIN) as o:
            c.post(SETTINGS, json=settings_for(port))
            o.post(SETTINGS, json=settings_for(port))
            ids = [send(c).json()["response"]["id"] for _ in range(5)]
            deadline = time.monotonic() + 20
            while c.get(MESSAGES, params={"status": "sent"}).json()["total"] < 3 and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(0.5)  # a fourth would have gone by now
            waiting = [c.get(f"{MESSAGES}/{i}").json()["response"] for i in ids]
            assert sorted(m["status"] for m in waiting) == ["queued"] * 2 + ["sent"] * 3
            for m in waiting:
                if m["status"] == "queued":
                    assert m["attempts"] == 0 and m["nextAttemptAt"]
            # Another portal's mail is not held up by this one's rate.
            wait_status(o, send(o).json()["response"]["id"], {"sent"})
        assert len(inbox.messages) == 4
    finally:
        srv.stop()


def test_an_idempotency_key_is_the_callers_own_not_the_portals(server: Server, portal: Portal) -> None:
    """Two send-only keys of one portal (and a signed-in admin) using the same key make a message each, and
    none is answered another's message, which it may not read."""
    keys = [
        server.cli("apikey", "create", "--portal", portal.hostname, "--email", portal.emails[Role.ADMIN], "--scope", "mail.send")
        .stdout.strip()
        .splitlines()[-1]
        for _ in range(2)
    ]
    order = {"Idempotency-Key": "order-42"}
    with (
        portal.client(headers={"Authorization": f"Bearer {keys[0]}"}) as k1,
        portal.client(headers={"Authorization": f"Bearer {keys[1]}"}) as k2,
        portal.client(Role.ADMIN) as admin,
    ):
        first = k1.post(MESSAGES, json={"to": ["one@x.test"], "subject": "K1's", "text": "x"}, headers=order)
        second = k2.post(MESSAGES, json={"to": ["two@x.test"], "subject": "K2's", "text": "x"}, headers=order)
        third = admin.post(MESSAGES, json={"to": ["three@x.test"], "subject": "admin's", "text": "x"}, headers=order)
        assert [r.status_code for r in (first, second, third)] == [202, 202, 202], second.text
        mine, theirs, admins = (r.json()["response"] for r in (first, second, third))
        assert len({mine["id"], theirs["id"], admins["id"]}) == 3
        assert (theirs["to"], theirs["subject"]) == (["two@x.test"], "K2's")
        assert k2.get(f"{MESSAGES}/{mine['id']}").status_code == 404
        # Each caller repeating its key is answered its own first message, and nothing new is queued.
        for client, expected in ((k1, mine), (k2, theirs), (admin, admins)):
            again = client.post(MESSAGES, json={"to": ["other@x.test"], "subject": "again", "text": "x"}, headers=order)
            assert again.status_code == 200 and again.json()["response"]["id"] == expected["id"]
            assert again.json()["response"]["subject"] == expected["subject"]
        assert admin.get(MESSAGES).json()["total"] == 3


# -- Queue limits per portal -------------------------------------------------------------------------------

QUEUED_MESSAGES, QUEUED_BYTES = 3, 20_000


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def limited_server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Portals may hold 3 unsent messages and 20,000 unsent bytes; a failed delivery waits an hour, so what
    is accepted stays unsent while a test acts."""
    env = {
        "SMTPSETTINGS_OUTBOX_MAX_QUEUED_MESSAGES": str(QUEUED_MESSAGES),
        "SMTPSETTINGS_OUTBOX_MAX_QUEUED_BYTES": str(QUEUED_BYTES),
        "SMTPSETTINGS_OUTBOX_FIRST_RETRY_SECONDS": "3600",
        "SMTPSETTINGS_SMTP_CONNECT_TIMEOUT": "2",
    }
    if request.param == "postgresql":
        env["SMTPSETTINGS_DATABASE_URL"] = request.getfixturevalue("pg_cluster").create_database()
    srv = start_server(tmp_path_factory.mktemp(f"limited-{request.param}") / "data", env)
    yield srv
    srv.stop()


def assert_queue_full(response: httpx.Response) -> None:
    assert response.status_code == 429, response.text
    assert int(response.headers["Retry-After"]) > 0
    body = response.json()
    assert body["status"] == 1 and body["statusCode"] == 429 and "response" not in body
    assert body["error"]["type"] == "TooManyRequestsException" and "outbox is full" in body["error"]["message"]


def test_a_portal_at_its_message_limit_is_answered_429_and_keeps_what_it_had(limited_server: Server) -> None:
    portal, other = make_portal(limited_server), make_portal(limited_server)
    with portal.client(Role.ADMIN) as c, other.client(Role.ADMIN) as o:
        c.post(SETTINGS, json=settings_for(closed_port()))
        o.post(SETTINGS, json=settings_for(closed_port()))
        keyed = c.post(MESSAGES, json={"to": ["a@x.test"], "subject": "keyed", "text": "x"}, headers={"Idempotency-Key": "k"})
        accepted = [keyed.json()["response"]["id"]] + [send(c).json()["response"]["id"] for _ in range(QUEUED_MESSAGES - 1)]
        assert_queue_full(send(c))
        # A repeated key is no new message: it is answered as before.
        again = c.post(MESSAGES, json={"to": ["a@x.test"], "subject": "keyed", "text": "x"}, headers={"Idempotency-Key": "k"})
        assert again.status_code == 200 and again.json()["response"]["id"] == accepted[0]
        # Another portal's room is its own.
        assert send(o).status_code == 202
        # Nothing accepted was touched: every message is there, on its way (the server is unreachable). Tried
        # at most once each: once the destination is unavailable, the rest wait untried.
        states = [wait_status(c, i, {"deferred"}) for i in accepted]
        assert c.get(MESSAGES).json()["total"] == QUEUED_MESSAGES and all(s["attempts"] <= 1 for s in states)
        # A message that leaves the queue makes room for one more.
        assert c.delete(f"{MESSAGES}/{accepted[1]}").status_code == 200
        assert send(c).status_code == 202
        assert_queue_full(send(c))


def test_a_message_that_would_pass_the_byte_limit_is_answered_429_and_a_smaller_one_still_fits(limited_server: Server) -> None:
    portal = make_portal(limited_server)
    with portal.client(Role.ADMIN) as c:
        c.post(SETTINGS, json=settings_for(closed_port()))
        big = send(c, text="y" * (QUEUED_BYTES // 2))
        assert big.status_code == 202
        assert_queue_full(send(c, text="z" * (QUEUED_BYTES // 2)))
        assert send(c).status_code == 202
        assert c.get(MESSAGES).json()["total"] == 2
