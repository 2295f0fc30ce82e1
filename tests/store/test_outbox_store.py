"""The outbox's rows and guarded transitions, on both databases."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from datetime import timedelta

import pytest
import sqlalchemy as sa

from smtpsettings.domain.outbox import RecipientOutcome
from smtpsettings.store import outbox
from smtpsettings.store.database import Database, utcnow
from smtpsettings.store.tables import outbox_messages, portals

LEASE = timedelta(seconds=60)


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
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
