"""The dispatchers' heartbeats and the ending of dead dispatchers' leases, on both databases."""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa
from test_outbox_store import claim, db, enqueue, new

from smtpsettings.store import dispatchers, outbox
from smtpsettings.store.database import Database, utcnow
from smtpsettings.store.tables import outbox_messages

__all__ = ("db",)  # the fixture, imported to be found here


def statuses(db: Database) -> dict[str, tuple[str, str | None]]:
    rows = db.read_sync(lambda c: c.execute(sa.select(outbox_messages.c.id, outbox_messages.c.status, outbox_messages.c.lease_owner)).all())
    return {id_: (status, owner) for id_, status, owner in rows}


def test_ending_an_owners_leases_makes_its_messages_due_at_once_and_leaves_the_rest(db: Database) -> None:
    for _ in range(4):
        enqueue(db, new())
    dead = {c.id for c in claim(db, "dead", limit=2)}
    alive = {c.id for c in claim(db, "alive", limit=1)}
    assert claim(db, "other", limit=10, lease=timedelta(hours=1)) and not claim(db, "third")  # all leased now

    assert db.write_sync(lambda c: outbox.expire_leases(c, ["dead", "gone-too"])) == 2
    assert db.write_sync(lambda c: outbox.expire_leases(c, [])) == 0
    taken = claim(db, "survivor")
    assert {c.id for c in taken} == dead and all(c.attempts == 2 for c in taken)
    rows = statuses(db)
    assert all(rows[i] == ("sending", "alive") for i in alive)
    # The dead owner's late outcome changes nothing: the message is the survivor's now.
    assert not db.write_sync(lambda c: outbox.mark_sent(c, taken[0].id, "dead", "250 ok"))


def test_an_owner_taken_for_dead_that_was_only_slow_still_records_what_nobody_claimed_since(db: Database) -> None:
    enqueue(db, new())
    [held] = claim(db, "slow")
    assert db.write_sync(lambda c: outbox.expire_leases(c, ["slow"])) == 1
    assert db.write_sync(lambda c: outbox.mark_sent(c, held.id, "slow", "250 ok"))
    assert statuses(db)[held.id] == ("sent", None) and not claim(db, "survivor")


def test_ending_every_lease_touches_only_messages_being_sent(db: Database) -> None:
    queued, _ = enqueue(db, new())
    deferred, _ = enqueue(db, new())
    sending, _ = enqueue(db, new())
    db.write_sync(
        lambda c: c.execute(
            outbox_messages.update()
            .where(outbox_messages.c.id != sending.id)
            .values(next_attempt_at=utcnow() + timedelta(hours=1))
        )
    )
    db.write_sync(lambda c: outbox.mark_deferred(c, deferred.id, "nobody", utcnow(), "x", None))  # not leased: no-op
    [held] = claim(db, "before-the-crash")
    assert held.id == sending.id

    assert db.write_sync(lambda c: outbox.expire_leases(c)) == 1
    assert db.write_sync(lambda c: outbox.expire_leases(c)) == 0  # already due
    assert [c.id for c in claim(db, "restarted")] == [sending.id]
    assert statuses(db)[queued.id] == ("queued", None)


def test_heartbeats_count_per_dispatcher_and_only_a_count_still_standing_is_removed(db: Database) -> None:
    assert db.write_sync(lambda c: dispatchers.beat(c, "a")) == {}
    assert db.write_sync(lambda c: dispatchers.beat(c, "b")) == {"a": 1}
    assert db.write_sync(lambda c: dispatchers.beat(c, "a")) == {"b": 1}

    assert db.write_sync(lambda c: dispatchers.remove_silent(c, {"a": 1, "b": 1})) == ["b"]  # a beat again
    assert db.write_sync(lambda c: dispatchers.remove_silent(c, {"b": 1})) == []  # a second survivor
    assert db.write_sync(lambda c: dispatchers.beat(c, "b")) == {"a": 2}  # b was only slow: counts anew
    db.write_sync(lambda c: dispatchers.leave(c, "b"))
    assert db.write_sync(lambda c: dispatchers.beat(c, "a")) == {}
