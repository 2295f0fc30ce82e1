"""The outbox's rows and guarded transitions, on both databases."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from smtpsettings.domain.errors import QueueFull
from smtpsettings.domain.outbox import RecipientOutcome
from smtpsettings.domain.queue import Backlog, QueueLimits
from smtpsettings.services.admission import NEAR_REFRESH_SECONDS, Admission
from smtpsettings.store import outbox
from smtpsettings.store.database import Database, utcnow
from smtpsettings.store.tables import outbox_messages, portals

LEASE = timedelta(seconds=60)


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    yield from opened(database_url)


@pytest.fixture
def sqlite_db(tmp_path: Path) -> Iterator[Database]:
    yield from opened(f"sqlite:///{tmp_path / 'outbox.sqlite'}")


def opened(database_url: str) -> Iterator[Database]:
    database = Database(database_url)
    database.migrate()
    database.write_sync(
        lambda c: c.execute(
            portals.insert().values(id=1, hostname="one.test", is_default=False, created_at=utcnow(), password_hash_salt="s")
        )
    )
    yield database
    database.dispose()


def new(key: str | None = None, portal_id: int = 1, **changes: object) -> outbox.NewMessage:
    fields: dict[str, object] = dict(
        id=uuid.uuid4().hex,
        portal_id=portal_id,
        user_id=None,
        api_key_id=None,
        sender="portal@x.test",
        recipients=("a@x.test", "hidden@x.test"),
        content=b"Subject: hi\r\n\r\nbody\r\n",
        smtputf8=False,
        to=("a@x.test",),
        cc=(),
        subject="hi",
        message_id="<1@x.test>",
        idempotency_key=key,
    )
    fields.update(changes)
    return outbox.NewMessage(**fields)  # type: ignore[arg-type]


def enqueue(db: Database, message: outbox.NewMessage) -> tuple[outbox.MessageRecord, bool]:
    return db.write_sync(lambda c: outbox.enqueue(c, message))


def claim(db: Database, owner: str = "w1", limit: int = 10, lease: timedelta = LEASE) -> list[outbox.Claim]:
    return db.write_sync(lambda c: outbox.claim_due(c, owner, lease, limit))


def test_an_accepted_message_is_queued_due_now_and_never_shows_its_bcc(db: Database) -> None:
    record, is_new = enqueue(db, new())
    assert is_new and record.status == "queued" and record.attempts == 0
    assert record.to == ["a@x.test"] and record.cc == []
    assert record.next_attempt_at is not None and record.next_attempt_at <= utcnow()
    assert "hidden@x.test" not in repr(record)


def test_the_same_idempotency_key_answers_the_first_message(db: Database) -> None:
    first, _ = enqueue(db, new("k1"))
    again, is_new = enqueue(db, new("k1", subject="other"))
    assert not is_new and again.id == first.id and again.subject == "hi"
    other, is_new = enqueue(db, new("k2"))
    assert is_new and other.id != first.id


def test_an_idempotency_key_older_than_a_day_is_free_again(db: Database) -> None:
    first, _ = enqueue(db, new("k1"))
    db.write_sync(
        lambda c: c.execute(
            outbox_messages.update().where(outbox_messages.c.id == first.id).values(created_at=utcnow() - timedelta(hours=25))
        )
    )
    second, is_new = enqueue(db, new("k1"))
    assert is_new and second.id != first.id


def test_a_claim_leases_due_messages_once_and_counts_the_attempt(db: Database) -> None:
    ids = {enqueue(db, new())[0].id for _ in range(3)}
    first = claim(db, "w1")
    assert {c.id for c in first} == ids and all(c.attempts == 1 for c in first)
    assert first[0].recipients == ["a@x.test", "hidden@x.test"] and first[0].content.startswith(b"Subject")
    assert claim(db, "w2") == []
    record = db.read_sync(lambda c: outbox.find(c, 1, first[0].id))
    assert record is not None and record.status == "sending" and record.next_attempt_at is None


def test_an_expired_lease_is_claimed_again_and_the_old_owner_can_no_longer_finish(db: Database) -> None:
    message, _ = enqueue(db, new())
    claim(db, "dead", lease=timedelta(seconds=-1))
    [retaken] = claim(db, "alive")
    assert retaken.id == message.id and retaken.attempts == 2
    assert not db.write_sync(lambda c: outbox.mark_sent(c, message.id, "dead", "250 ok"))
    assert db.write_sync(lambda c: outbox.mark_sent(c, message.id, "alive", "250 ok"))
    record = db.read_sync(lambda c: outbox.find(c, 1, message.id))
    assert record is not None and record.status == "sent" and record.smtp_reply == "250 ok" and record.sent_at


def test_deferred_messages_wait_for_their_time(db: Database) -> None:
    message, _ = enqueue(db, new())
    claim(db)
    later = utcnow() + timedelta(minutes=5)
    assert db.write_sync(lambda c: outbox.mark_deferred(c, message.id, "w1", later, "451 busy", "451 busy"))
    assert claim(db) == []
    record = db.read_sync(lambda c: outbox.find(c, 1, message.id))
    assert record is not None and record.status == "deferred" and record.last_error == "451 busy"
    assert record.next_attempt_at is not None and abs((record.next_attempt_at - later).total_seconds()) < 1
    assert db.read_sync(outbox.next_due) is not None


def test_release_gives_the_attempt_back(db: Database) -> None:
    message, _ = enqueue(db, new())
    claim(db)
    assert db.write_sync(lambda c: outbox.release(c, message.id, "w1", utcnow()))
    [again] = claim(db)
    assert again.attempts == 1


def test_release_owner_and_heartbeat_touch_only_that_owner(db: Database) -> None:
    a, _ = enqueue(db, new())
    claim(db, "w1", limit=1)
    b, _ = enqueue(db, new())
    claim(db, "w2", limit=1)
    assert db.write_sync(lambda c: outbox.extend_leases(c, "w1", LEASE)) == 1
    assert db.write_sync(lambda c: outbox.release_owner(c, "w1")) == 1
    statuses = {m.id: m.status for m in db.read_sync(lambda c: outbox.list_messages(c, 1))[0]}
    assert statuses == {a.id: "queued", b.id: "sending"}


def test_cancel_and_retry_are_guarded_by_status(db: Database) -> None:
    message, _ = enqueue(db, new())
    assert db.write_sync(lambda c: outbox.cancel(c, 1, message.id))
    assert not db.write_sync(lambda c: outbox.cancel(c, 1, message.id))
    assert not db.write_sync(lambda c: outbox.requeue_failed(c, 1, message.id))
    failed, _ = enqueue(db, new())
    claim(db)
    assert db.write_sync(lambda c: outbox.mark_failed(c, failed.id, "w1", "550 no such user", "550 no such user"))
    assert not db.write_sync(lambda c: outbox.cancel(c, 1, failed.id))
    assert db.write_sync(lambda c: outbox.requeue_failed(c, 1, failed.id))
    [again] = claim(db)
    assert again.id == failed.id


def test_listing_is_newest_first_with_a_total_and_filters(db: Database) -> None:
    ids = [enqueue(db, new(api_key_id="key1" if i % 2 else None))[0].id for i in range(5)]
    db.write_sync(lambda c: outbox.cancel(c, 1, ids[0]))
    page, total = db.read_sync(lambda c: outbox.list_messages(c, 1, count=2, start_index=1))
    assert total == 5 and len(page) == 2
    everything, _ = db.read_sync(lambda c: outbox.list_messages(c, 1, count=10))
    assert [m.created_at for m in everything] == sorted((m.created_at for m in everything), reverse=True)
    assert db.read_sync(lambda c: outbox.list_messages(c, 1, status="cancelled"))[1] == 1
    assert db.read_sync(lambda c: outbox.list_messages(c, 1, api_key_id="key1"))[1] == 2
    counts = db.read_sync(outbox.count_by_status)
    assert counts == {"queued": 4, "sending": 0, "sent": 0, "partial": 0, "deferred": 0, "failed": 0, "cancelled": 1}


def test_find_any_finds_a_message_by_its_id_alone_whatever_its_portal(db: Database) -> None:
    db.write_sync(
        lambda c: c.execute(
            portals.insert().values(id=2, hostname="two.test", is_default=False, created_at=utcnow(), password_hash_salt="s")
        )
    )
    message, _ = enqueue(db, new(portal_id=2))
    found = db.read_sync(lambda c: outbox.find_any(c, message.id))
    assert found is not None and found.portal_id == 2 and found.id == message.id
    assert db.read_sync(lambda c: outbox.find(c, 1, message.id)) is None
    assert db.read_sync(lambda c: outbox.find_any(c, uuid.uuid4().hex)) is None


def test_purge_drops_old_bodies_only(db: Database) -> None:
    old, _ = enqueue(db, new())
    fresh, _ = enqueue(db, new())
    claim(db)
    for m in (old, fresh):
        db.write_sync(lambda c, m=m: outbox.mark_sent(c, m.id, "w1", "250 ok"))
    db.write_sync(
        lambda c: c.execute(
            outbox_messages.update().where(outbox_messages.c.id == old.id).values(finished_at=utcnow() - timedelta(days=8))
        )
    )
    now = utcnow()
    purged = db.write_sync(
        lambda c: outbox.purge_bodies(c, sent_before=now - timedelta(days=7), failed_before=now - timedelta(days=30))
    )
    assert purged == 1
    rows = dict(db.read_sync(lambda c: c.execute(sa.select(outbox_messages.c.id, outbox_messages.c.content)).all()))
    assert rows[old.id] is None and rows[fresh.id] is not None


def test_concurrent_claimers_never_take_the_same_message(db: Database) -> None:
    for _ in range(200):
        enqueue(db, new())
    taken: list[list[str]] = [[], [], [], []]

    def claimer(i: int) -> None:
        while batch := claim(db, f"w{i}", limit=7):
            taken[i].extend(c.id for c in batch)

    threads = [threading.Thread(target=claimer, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    everything = [i for ids in taken for i in ids]
    assert len(everything) == 200 and len(set(everything)) == 200


def test_the_accepted_record_is_what_reads_back(db: Database) -> None:
    for key in (None, "k"):
        record, _ = enqueue(db, new(key, cc=("c@x.test",)))
        assert db.read_sync(lambda c, i=record.id: outbox.find(c, 1, i)) == record


def test_the_claim_reads_the_partial_due_index_so_its_cost_does_not_grow_with_the_backlog(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """SQLite, without statistics, would otherwise pick another index and sort every pending row."""
    db = Database(f"sqlite:///{tmp_path / 'plan.db'}")
    db.migrate()
    compiled = outbox._CLAIM.compiled(db.engine.dialect)
    params = compiled.bind({"now": utcnow(), "n": 10, "owner": "x", "until": utcnow()})
    plan = db.read_sync(lambda c: c.connection.driver_connection.execute("EXPLAIN QUERY PLAN " + compiled.sql, params).fetchall())
    details = " | ".join(row[-1] for row in plan)
    db.dispose()
    assert "ix_outbox_messages_due" in details and "TEMP B-TREE" not in details, details


def test_postponing_a_portal_moves_only_its_waiting_messages(db: Database) -> None:
    db.write_sync(
        lambda c: c.execute(portals.insert().values(id=2, hostname="two.test", is_default=False, created_at=utcnow(), password_hash_salt="s"))
    )
    mine = [enqueue(db, new())[0].id for _ in range(3)]
    other = enqueue(db, new(portal_id=2))[0].id
    [in_flight] = claim(db, limit=1)
    until = utcnow() + timedelta(minutes=1)
    assert db.write_sync(lambda c: outbox.postpone_portal(c, 1, until)) == 2
    assert [c.id for c in claim(db)] == [other]
    assert in_flight.id in mine


def second_portal(db: Database, portal_id: int = 2) -> None:
    db.write_sync(
        lambda c: c.execute(
            portals.insert().values(
                id=portal_id, hostname=f"p{portal_id}.test", is_default=False, created_at=utcnow(), password_hash_salt="s"
            )
        )
    )


def test_the_claim_takes_each_portal_up_to_its_share_round_robin(db: Database) -> None:
    second_portal(db)
    second_portal(db, 3)
    flood = [enqueue(db, new())[0].id for _ in range(30)]  # portal 1's backlog, oldest of all
    few = {p: [enqueue(db, new(portal_id=p))[0].id for _ in range(2)] for p in (2, 3)}
    first = db.write_sync(lambda c: outbox.claim_due(c, "w1", LEASE, 10, per_portal=3))
    by_portal = Counter(c.portal_id for c in first)
    # The walk (limit x share rows) saw only portal 1: it took its share, no more.
    assert by_portal == {1: 3}
    # Portal 1 is full now, so the next walk passes over its backlog to the others.
    second = db.write_sync(lambda c: outbox.claim_due(c, "w1", LEASE, 10, per_portal=3, busy={1: 3}))
    assert sorted(c.id for c in second) == sorted(few[2] + few[3])
    # One taken already counts against the share; a limit below the total goes round robin.
    third = db.write_sync(lambda c: outbox.claim_due(c, "w1", LEASE, 2, per_portal=3, busy={1: 2}))
    assert [c.portal_id for c in third] == [1] and third[0].id in flood


def test_round_robin_takes_every_portals_oldest_before_anyones_second(db: Database) -> None:
    for p in (2, 3):
        second_portal(db, p)
    for p in (1, 1, 1, 2, 2, 2, 3, 3, 3):
        enqueue(db, new(portal_id=p))
    claims = db.write_sync(lambda c: outbox.claim_due(c, "w1", LEASE, 3, per_portal=3))
    assert sorted(c.portal_id for c in claims) == [1, 2, 3]


def test_a_claim_together_takes_a_run_of_each_portals_messages_before_anyones_next_run(db: Database) -> None:
    for p in (2, 3):
        second_portal(db, p)
    for p in (1, 1, 1, 2, 2, 2, 3, 3, 3):
        enqueue(db, new(portal_id=p))
    claims = db.write_sync(lambda c: outbox.claim_due(c, "w1", LEASE, 5, per_portal=3, together=2))
    # Two of portal 1's and two of portal 2's (one connection can send each pair), then portal 3's first.
    assert sorted(c.portal_id for c in claims) == [1, 1, 2, 2, 3]


def test_claim_more_takes_the_named_portals_oldest_due_messages_up_to_each_count(db: Database) -> None:
    for p in (2, 3):
        second_portal(db, p)
    ids = {p: [enqueue(db, new(portal_id=p))[0].id for _ in range(4)] for p in (1, 2, 3)}
    claims = db.write_sync(lambda c: outbox.claim_more(c, "w1", LEASE, {1: 2, 3: 10}))
    assert sorted(c.id for c in claims) == sorted(ids[1][:2] + ids[3])
    # Leased: the walk does not take them again, and portal 2's are still there for it.
    rest = db.write_sync(lambda c: outbox.claim_due(c, "w2", LEASE, 20))
    assert sorted(c.id for c in rest) == sorted(ids[1][2:] + ids[2])


def waiting(db: Database) -> dict[str, tuple[str, str | None, int]]:
    rows = db.read_sync(
        lambda c: c.execute(
            sa.select(outbox_messages.c.id, outbox_messages.c.status, outbox_messages.c.last_error, outbox_messages.c.attempts)
        ).all()
    )
    return {id_: (status, error, attempts) for id_, status, error, attempts in rows}


def test_an_unavailable_destination_defers_the_portals_waiting_messages_in_one_statement(db: Database) -> None:
    second_portal(db)
    mine = [enqueue(db, new())[0].id for _ in range(3)]
    other = enqueue(db, new(portal_id=2))[0].id
    [in_flight] = claim(db, limit=1)
    until = utcnow() + timedelta(minutes=5)
    deferred = db.write_sync(
        lambda c: outbox.defer_portal(
            c, 1, until, "unavailable", give_up_before=utcnow() - timedelta(hours=1), failed_reason="gave up"
        )
    )
    assert deferred == 2
    state = waiting(db)
    assert state[in_flight.id] == ("sending", None, 1)  # left to its attempt
    assert all(state[i] == ("deferred", "unavailable", 0) for i in mine if i != in_flight.id)
    assert state[other] == ("queued", None, 0)
    assert [c.id for c in claim(db)] == [other]
    # Back: what waited for the destination is due at once.
    assert db.write_sync(lambda c: outbox.resume_portal(c, 1, until)) == 2
    assert len(claim(db)) == 2


def test_messages_past_their_horizon_fail_instead_of_waiting(db: Database) -> None:
    old = enqueue(db, new())[0].id
    fresh_claim = enqueue(db, new())[0].id
    cutoff = utcnow()
    [claimed] = claim(db, limit=1)
    assert claimed.id == old
    late = enqueue(db, new())[0].id
    until = utcnow() + timedelta(minutes=5)

    def defer(c: sa.Connection) -> tuple[bool, int]:
        untried = outbox.defer_untried(c, old, "w1", until, "unavailable", give_up_before=cutoff, failed_reason="gave up")
        return untried, outbox.defer_portal(c, 1, until, "unavailable", give_up_before=cutoff, failed_reason="gave up")

    assert db.write_sync(defer) == (True, 2)
    state = waiting(db)
    assert state[old] == ("failed", "gave up", 0)  # the claim's attempt given back: it was never tried
    assert state[fresh_claim] == ("failed", "gave up", 0)
    assert state[late] == ("deferred", "unavailable", 0)
    # Guarded like every transition: a message not held by the owner is not touched.
    again = db.write_sync(
        lambda c: outbox.defer_untried(c, late, "w1", until, "x", give_up_before=cutoff, failed_reason="x")
    )
    assert again is False


def test_an_idempotency_key_is_its_callers_own(db: Database) -> None:
    """Two API keys (or a key and a signed-in user) using the same key name make two messages."""
    first, _ = enqueue(db, new("order-42", api_key_id="k1", user_id=7))
    second, is_new = enqueue(db, new("order-42", api_key_id="k2", user_id=7, subject="other"))
    assert is_new and second.id != first.id and second.api_key_id == "k2" and second.subject == "other"
    by_user, is_new = enqueue(db, new("order-42", user_id=7))
    assert is_new and by_user.id not in (first.id, second.id)
    for caller, expected in ((dict(api_key_id="k1", user_id=7), first), (dict(user_id=7), by_user)):
        again, is_new = enqueue(db, new("order-42", subject="third", **caller))
        assert not is_new and again == expected
    assert db.read_sync(lambda c: outbox.list_messages(c, 1))[1] == 3


def test_the_backlog_counts_only_unsent_mail_of_the_portal(db: Database) -> None:
    db.write_sync(
        lambda c: c.execute(portals.insert().values(id=2, hostname="two.test", is_default=False, created_at=utcnow(), password_hash_salt="s"))
    )
    for size in (100, 200, 300, 400, 500):
        enqueue(db, new(content=b"x" * size))
    enqueue(db, new(portal_id=2, content=b"y" * 9999))
    claimed = claim(db, limit=3)  # oldest due first: 100, 200, 300 bytes
    ids = [c.id for c in claimed]
    db.write_sync(lambda c: outbox.mark_sent(c, ids[0], "w1", "250 ok"))
    db.write_sync(lambda c: outbox.mark_failed(c, ids[1], "w1", "550 no", "550 no"))
    waiting = [m.id for m in db.read_sync(lambda c: outbox.list_messages(c, 1, status="queued"))[0]]
    db.write_sync(lambda c: outbox.cancel(c, 1, waiting[0]))  # the newest: 500 bytes
    # Left unsent: 300 (sending) and 400 (queued); other portals' and finished mail is not counted.
    assert db.read_sync(lambda c: outbox.backlog(c, 1)) == Backlog(messages=2, bytes=700)
    assert db.read_sync(lambda c: outbox.backlog(c, 2)) == Backlog(messages=1, bytes=9999)
    assert db.read_sync(lambda c: outbox.backlog(c, 3)) == Backlog(messages=0, bytes=0)


def admitted(db: Database, message: outbox.NewMessage, limits: QueueLimits) -> tuple[outbox.MessageRecord, bool]:
    """``message`` enqueued if it fits ``limits``, counted afresh in the transaction."""
    return db.write_sync(lambda c: outbox.enqueue(c, message, lambda c: limits.admit(outbox.backlog(c, 1), 1)))


def test_a_refused_admission_writes_nothing_and_a_repeated_key_is_still_answered(db: Database) -> None:
    full = QueueLimits(messages=2, bytes=10_000)
    first, _ = admitted(db, new("k1"), full)
    admitted(db, new(), full)
    with pytest.raises(QueueFull):
        admitted(db, new("k2"), full)
    again, is_new = admitted(db, new("k1"), full)
    assert not is_new and again.id == first.id
    assert db.read_sync(lambda c: outbox.backlog(c, 1)).messages == 2
    # The refused key was not taken: once there is room, it makes its message.
    db.write_sync(lambda c: outbox.cancel(c, 1, first.id))
    made, is_new = admitted(db, new("k2"), full)
    assert is_new and made.id != first.id


class Clock:
    """Monotonic seconds that move only when the test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def through(db: Database, admission: Admission, message: outbox.NewMessage) -> None:
    """Accept ``message`` as the service does: checked in the transaction, then added to the kept count."""
    db.write_sync(lambda c: outbox.enqueue(c, message, lambda c: admission.check(c, 1, len(message.content))))
    admission.accepted(1, len(message.content))


def unsent(db: Database) -> int:
    return db.read_sync(lambda c: outbox.backlog(c, 1)).messages


def cancel_one(db: Database) -> None:
    """A message leaves the queue behind the admission's back (the dispatcher sent it, say)."""
    queued = db.read_sync(lambda c: outbox.list_messages(c, 1, status="queued"))[0]
    assert db.write_sync(lambda c: outbox.cancel(c, 1, queued[0].id))


async def test_acceptances_of_one_group_commit_are_held_to_the_limit_exactly(sqlite_db: Database) -> None:
    # SQLite only: PostgreSQL's acceptances commit each on its own, concurrently, and may pass a limit by
    # those in flight at once (docs/outbox.md says so).
    db = sqlite_db
    admission = Admission(db, QueueLimits(messages=5, bytes=10**9))

    def accept(message: outbox.NewMessage) -> Any:
        def write(conn: Any) -> bool:  # as OutboxService does: counted in the transaction
            _, is_new = outbox.enqueue(conn, message, lambda c: admission.check(c, 1, len(message.content)))
            admission.accepted(1, len(message.content))
            return is_new

        return db.write_grouped(write, len(message.content))

    results = await asyncio.gather(*(accept(new()) for _ in range(20)), return_exceptions=True)
    assert sum(r is True for r in results) == 5
    assert all(isinstance(r, QueueFull) for r in results if r is not True)
    assert unsent(db) == 5


def test_admission_refuses_on_a_count_kept_under_a_second_then_counts_again(db: Database) -> None:
    clock = Clock()
    admission = Admission(db, QueueLimits(messages=10, bytes=10**9), clock=clock)
    for _ in range(10):
        through(db, admission, new())
    with pytest.raises(QueueFull):
        through(db, admission, new())
    for _ in range(5):
        cancel_one(db)
    with pytest.raises(QueueFull):  # the kept count still says full, for under a second
        through(db, admission, new())
    clock.now += 1.0
    through(db, admission, new())
    assert unsent(db) == 6
    for _ in range(4):
        through(db, admission, new())
    cancel_one(db)
    with pytest.raises(QueueFull):
        through(db, admission, new())
    admission.forget(1)  # what the service does after its own cancel: that room is free at once
    through(db, admission, new())
    assert unsent(db) == 10


def test_near_a_limit_admission_counts_afresh_and_sees_what_others_accepted(db: Database) -> None:
    """Another worker's messages are not in this one's kept count: close to a limit it counts every time."""
    clock = Clock()
    admission = Admission(db, QueueLimits(messages=10, bytes=10**9), clock=clock)
    for _ in range(8):
        through(db, admission, new())
    enqueue(db, new())  # accepted by another worker: 9 in all, 8 of them known here
    through(db, admission, new())
    clock.now += 2 * NEAR_REFRESH_SECONDS  # far below the second after which any count is read again
    with pytest.raises(QueueFull):  # the kept count says 9, the count 10
        through(db, admission, new())
    assert unsent(db) == 10


def test_concurrent_acceptances_pass_the_limit_by_no_more_than_those_in_flight(db: Database) -> None:
    """Eight threads accepting for one portal through one worker's admission, each message checked in its own
    transaction: the portal ends at its limit, plus at most the acceptances that were in flight together."""
    admission = Admission(db, QueueLimits(messages=20, bytes=10**9))
    refused = [0] * 8

    def sender(i: int) -> None:
        for _ in range(10):
            try:
                through(db, admission, new())
            except QueueFull:
                refused[i] += 1

    threads = [threading.Thread(target=sender, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert 20 <= unsent(db) <= 20 + len(threads) and sum(refused) == 80 - unsent(db)


def _outcomes(**by_address: tuple[str, str]) -> list[RecipientOutcome]:
    return [RecipientOutcome(address.replace("_", "@") + ".test", status, reply) for address, (status, reply) in by_address.items()]


def record(db: Database, message_id: str, attempt: list[RecipientOutcome], **kw: object) -> outbox.Settlement | None:
    fields: dict[str, object] = {"next_attempt_at": None, "error": None, "reply": "250 ok"} | kw
    return db.write_sync(lambda c: outbox.record_attempt(c, message_id, "w1", lambda _pending: attempt, **fields))  # type: ignore[arg-type]


def test_a_retry_claims_only_the_deferred_recipients_and_a_refusal_makes_the_message_partial(db: Database) -> None:
    message, _ = enqueue(db, new(recipients=("a@x.test", "b@x.test", "c@x.test", "hidden@x.test"), to=("a@x.test", "b@x.test"), cc=("c@x.test",)))
    claim(db)
    later = utcnow() + timedelta(minutes=1)
    first = _outcomes(a_x=("accepted", "250 ok"), b_x=("refused", "550 no such user"), c_x=("deferred", "450 busy"), hidden_x=("deferred", "450 busy"))
    settled = record(db, message.id, first, next_attempt_at=later, error="Recipient deferred: 450 busy")
    assert settled is not None and settled.status == "deferred" and settled.pending == ("c@x.test", "hidden@x.test")

    shown = db.read_sync(lambda c: outbox.find(c, 1, message.id))
    assert shown is not None and shown.status == "deferred" and shown.sent_at is not None
    first_sent = shown.sent_at
    assert [(r.address, r.status, r.reply) for r in shown.recipients] == [
        ("a@x.test", "accepted", "250 ok"), ("b@x.test", "refused", "550 no such user"), ("c@x.test", "deferred", "450 busy"),
    ]  # never the Bcc

    db.write_sync(lambda c: c.execute(outbox_messages.update().values(next_attempt_at=utcnow())))
    [again] = claim(db)
    assert again.recipients == ["c@x.test", "hidden@x.test"]  # the accepted one is not sent twice
    settled = record(db, message.id, _outcomes(c_x=("accepted", "250 ok 2"), hidden_x=("accepted", "250 ok 2")), reply="250 ok 2")
    assert settled is not None and settled.status == "partial" and settled.pending == ()

    done = db.read_sync(lambda c: outbox.find(c, 1, message.id))
    assert done is not None and done.status == "partial" and done.smtp_reply == "250 ok 2"
    assert done.last_error == "Delivered to 3 of 4 recipients; not to the others: 550 no such user"
    assert done.sent_at == first_sent and done.next_attempt_at is None
    assert [r.status for r in done.recipients] == ["accepted", "refused", "accepted"]
    stored = db.read_sync(lambda c: c.execute(sa.select(outbox_messages.c.recipient_outcomes, outbox_messages.c.finished_at)).one())
    assert "hidden@x.test" not in stored[0] and stored[1] is not None  # ended: the Bcc's outcome is not kept
    assert db.read_sync(lambda c: outbox.list_messages(c, 1, status="partial"))[1] == 1
    assert claim(db) == []


def test_every_recipient_accepted_is_sent_and_every_one_refused_is_failed_and_retried_whole(db: Database) -> None:
    sent, _ = enqueue(db, new())
    refused, _ = enqueue(db, new())
    claim(db)
    assert record(db, sent.id, _outcomes(a_x=("accepted", "250 ok"), hidden_x=("accepted", "250 ok"))).status == "sent"  # type: ignore[union-attr]
    gone = _outcomes(a_x=("refused", "550 gone"), hidden_x=("refused", "550 gone"))
    assert record(db, refused.id, gone, error="Recipient rejected: 550 gone", reply="550 gone").status == "failed"  # type: ignore[union-attr]
    failed = db.read_sync(lambda c: outbox.find(c, 1, refused.id))
    assert failed is not None and failed.last_error == "Recipient rejected: 550 gone" and failed.sent_at is None
    assert [(r.status, r.reply) for r in failed.recipients] == [("refused", "550 gone")]
    # An admin's retry tries everyone again.
    assert db.write_sync(lambda c: outbox.requeue_failed(c, 1, refused.id))
    [again] = claim(db)
    assert again.recipients == ["a@x.test", "hidden@x.test"]
    retried = db.read_sync(lambda c: outbox.find(c, 1, refused.id))
    assert retried is not None and [r.status for r in retried.recipients] == ["refused"]  # final until tried again


def test_a_whole_failure_after_some_were_accepted_is_partial(db: Database) -> None:
    message, _ = enqueue(db, new())
    claim(db)
    record(db, message.id, _outcomes(a_x=("accepted", "250 ok"), hidden_x=("deferred", "451 later")), next_attempt_at=utcnow())
    [again] = claim(db)
    assert again.recipients == ["hidden@x.test"]
    assert db.write_sync(lambda c: outbox.mark_failed(c, message.id, "w1", "Gave up after 2 attempts", None))
    done = db.read_sync(lambda c: outbox.find(c, 1, message.id))
    assert done is not None and done.status == "partial"
    assert done.last_error == "Delivered to 1 of 2 recipients; not to the others: Gave up after 2 attempts"
    assert [r.status for r in done.recipients] == ["accepted"]


def test_only_the_lease_holder_records_an_attempt(db: Database) -> None:
    message, _ = enqueue(db, new())
    claim(db, "w2")
    assert record(db, message.id, _outcomes(a_x=("accepted", "250 ok"))) is None
    record_now = db.read_sync(lambda c: outbox.find(c, 1, message.id))
    assert record_now is not None and record_now.status == "sending"


def test_rows_that_ended_long_ago_are_deleted_in_bounded_batches(db: Database) -> None:
    ended = []
    for _ in range(5):
        m, _ = enqueue(db, new())
        ended.append(m.id)
    waiting, _ = enqueue(db, new())
    recent, _ = enqueue(db, new())
    claim(db, limit=7)
    for i in (*ended, recent.id):
        db.write_sync(lambda c, i=i: outbox.mark_sent(c, i, "w1", "250 ok"))
    db.write_sync(lambda c: outbox.mark_deferred(c, waiting.id, "w1", utcnow(), "451", "451"))
    db.write_sync(lambda c: outbox.cancel(c, 1, ended[0]))  # sent rows cannot be cancelled: a no-op
    old = utcnow() - timedelta(days=100)
    db.write_sync(
        lambda c: c.execute(
            outbox_messages.update().where(outbox_messages.c.id.in_([*ended, waiting.id])).values(finished_at=old, created_at=old)
        )
    )
    before = utcnow() - timedelta(days=90)
    assert db.write_sync(lambda c: outbox.delete_finished(c, before=before, limit=2)) == 2
    assert db.write_sync(lambda c: outbox.delete_finished(c, before=before, limit=2)) == 2
    assert db.write_sync(lambda c: outbox.delete_finished(c, before=before, limit=2)) == 1
    assert db.write_sync(lambda c: outbox.delete_finished(c, before=before, limit=2)) == 0
    left = {r[0] for r in db.read_sync(lambda c: c.execute(sa.select(outbox_messages.c.id)).all())}
    assert left == {waiting.id, recent.id}  # a deferred message is never deleted, however old
