"""The outbox's rows and their guarded transitions.

Every transition of a message being sent is one UPDATE guarded by the message id, the lease owner and the
``sending`` status, and its row count is the answer: an instance whose lease expired (and whose message
another instance took over) changes nothing. No transaction is held across SMTP I/O: claim, send, then
record, as the test job does. While a message is ``sending``, ``next_attempt_at`` holds the lease's end, so
one partial index finds both due messages and expired leases.

An attempt's outcome is merged with the message's outcome per recipient
(:func:`smtpsettings.domain.outbox.settle`); ``recipients`` keeps who is still to try, so a retry claims only
those and nobody gets the message twice.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import msgspec
import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from smtpsettings.domain.outbox import (
    FINISHED,
    RecipientOutcome,
    RecipientStatus,
    Settlement,
    recipient_states,
    settle,
)
from smtpsettings.domain.queue import Backlog
from smtpsettings.store.database import Prepared, insert_for, utc, utcnow
from smtpsettings.store.tables import outbox_messages as o

__all__ = (
    "STATUSES",
    "Claim",
    "MessageRecord",
    "NewMessage",
    "backlog",
    "cancel",
    "claim_due",
    "count_by_status",
    "defer_portal",
    "defer_untried",
    "delete_finished",
    "enqueue",
    "expire_leases",
    "extend_leases",
    "find",
    "find_any",
    "list_messages",
    "mark_deferred",
    "mark_failed",
    "mark_sent",
    "next_due",
    "postpone_portal",
    "purge_bodies",
    "record_attempt",
    "release",
    "release_owner",
    "requeue_failed",
    "resume_portal",
)

STATUSES = ("queued", "sending", "sent", "partial", "deferred", "failed", "cancelled")
IDEMPOTENCY_WINDOW = timedelta(hours=24)

_json = msgspec.json.Encoder()
_addresses = msgspec.json.Decoder(list[str])
_outcomes = msgspec.json.Decoder(list[RecipientOutcome])


class NewMessage(msgspec.Struct, frozen=True, kw_only=True):
    """A message as accepted: what goes out and what the API shows."""

    id: str
    portal_id: int
    user_id: int | None
    api_key_id: str | None
    sender: str
    recipients: tuple[str, ...]
    content: bytes = msgspec.field()
    smtputf8: bool
    to: tuple[str, ...]
    cc: tuple[str, ...]
    subject: str
    message_id: str
    idempotency_key: str | None

    def __repr__(self) -> str:  # recipients and bodies are never logged
        return f"NewMessage(id={self.id!r}, portal_id={self.portal_id}, size={len(self.content)})"


class MessageRecord(msgspec.Struct, frozen=True, kw_only=True):
    """A message's state as the API reports it (never its Bcc or body)."""

    id: str
    portal_id: int
    api_key_id: str | None
    status: str
    to: list[str]
    cc: list[str]
    subject: str
    message_id: str
    attempts: int
    created_at: datetime
    next_attempt_at: datetime | None
    sent_at: datetime | None
    last_error: str | None
    smtp_reply: str | None
    has_content: bool
    recipients: list[RecipientOutcome]
    """Each To and Cc recipient's outcome so far (Bcc's never)."""


class Claim(msgspec.Struct, frozen=True, kw_only=True):
    """A message claimed for one attempt: everything the sender needs."""

    id: str
    portal_id: int
    sender: str
    recipients: list[str]
    content: bytes
    smtputf8: bool
    attempts: int
    created_at: datetime
    queued_at: datetime

    def __repr__(self) -> str:
        return f"Claim(id={self.id!r}, portal_id={self.portal_id}, attempts={self.attempts})"


_RECORD_COLUMNS = (
    o.c.id,
    o.c.portal_id,
    o.c.api_key_id,
    o.c.status,
    o.c.to_addresses,
    o.c.cc_addresses,
    o.c.subject,
    o.c.message_id,
    o.c.attempts,
    o.c.created_at,
    o.c.next_attempt_at,
    o.c.sent_at,
    o.c.last_error,
    o.c.smtp_reply,
    o.c.content.is_not(None),
    o.c.recipient_outcomes,
)


def _record(row: Any) -> MessageRecord:
    (id_, portal_id, key_id, status, to, cc, subject, message_id, attempts, created, next_at, sent, error, reply, has,
     outcomes) = row  # fmt: skip
    to, cc = _addresses.decode(to), _addresses.decode(cc)
    return MessageRecord(
        id=id_,
        portal_id=portal_id,
        api_key_id=key_id,
        status=status,
        to=to,
        cc=cc,
        subject=subject,
        message_id=message_id,
        attempts=attempts,
        created_at=utc(created),
        # While sending, the column holds the lease's end, which is not an attempt the caller can wait for.
        next_attempt_at=utc(next_at) if next_at is not None and status in ("queued", "deferred") else None,
        sent_at=utc(sent) if sent is not None else None,
        last_error=error,
        smtp_reply=reply,
        has_content=bool(has),
        recipients=recipient_states([*to, *cc], _outcomes.decode(outcomes) if outcomes else None, status),
    )


# -- accepting -------------------------------------------------------------------------------------------

_BY_KEY = sa.select(*_RECORD_COLUMNS).where(
    o.c.portal_id == sa.bindparam("portal_id"),
    o.c.idempotency_caller == sa.bindparam("caller"),
    o.c.idempotency_key == sa.bindparam("key"),
    o.c.created_at > sa.bindparam("since"),
)


def _caller(message: NewMessage) -> str:
    """Whose idempotency key it is: the API key that sent the message, else the signed-in user."""
    if message.api_key_id is not None:
        return f"key:{message.api_key_id}"
    return "portal" if message.user_id is None else f"user:{message.user_id}"


_INSERT = Prepared(o.insert().values({c.name: sa.bindparam(c.name) for c in o.columns}))
_INSERT_KEYED = Prepared.per_dialect(
    lambda dialect: insert_for(dialect, o)
    .values({c.name: sa.bindparam(c.name) for c in o.columns})
    .on_conflict_do_nothing(index_elements=[o.c.portal_id, o.c.idempotency_caller, o.c.idempotency_key])
    .returning(o.c.id)
)


def enqueue(
    conn: Connection, message: NewMessage, admit: Callable[[Connection], None] | None = None
) -> tuple[MessageRecord, bool]:
    """Insert ``message`` (status ``queued``, due now); with an idempotency key its caller used within 24 h,
    the first one.

    Returns the record and whether it is new. ``admit`` is called in this transaction before the insert
    (:func:`backlog` counts what it needs) and raises to refuse the message; a repeated key answers its
    message without asking it. A key older than the window is released for reuse first, in the same
    transaction. Two instances inserting the same key at once: the unique constraint refuses the second,
    which then answers the first's message.
    """
    now = utcnow()
    key = message.idempotency_key
    caller = None if key is None else _caller(message)
    if key is not None:
        params = {"portal_id": message.portal_id, "caller": caller, "key": key, "since": now - IDEMPOTENCY_WINDOW}
        existing = conn.execute(_BY_KEY, params).first()
        if existing is not None:
            return _record(existing), False
        conn.execute(
            o.update()
            .where(o.c.portal_id == message.portal_id, o.c.idempotency_caller == caller, o.c.idempotency_key == key)
            .values(idempotency_key=None, idempotency_caller=None)
        )
    if admit is not None:
        admit(conn)
    values = {
        "id": message.id,
        "portal_id": message.portal_id,
        "user_id": message.user_id,
        "api_key_id": message.api_key_id,
        "status": "queued",
        "sender": message.sender,
        "recipients": _json.encode(list(message.recipients)).decode(),
        "content": message.content,
        "smtputf8": message.smtputf8,
        "to_addresses": _json.encode(list(message.to)).decode(),
        "cc_addresses": _json.encode(list(message.cc)).decode(),
        "subject": message.subject,
        "message_id": message.message_id,
        "size": len(message.content),
        "idempotency_key": key,
        "idempotency_caller": caller,
        "attempts": 0,
        "created_at": now,
        "queued_at": now,
        "next_attempt_at": now,
        "lease_owner": None,
        "sent_at": None,
        "finished_at": None,
        "last_error": None,
        "smtp_reply": None,
        "recipient_outcomes": None,
    }
    if key is None:
        _INSERT.execute(conn, **values)
    elif _INSERT_KEYED.row(conn, values) is None:
        existing = conn.execute(_BY_KEY, params).first()
        if existing is None:  # pragma: no cover - the conflicting row was released in between
            raise IntegrityError("idempotency key conflict", None, Exception())
        return _record(existing), False
    # What was just written, as it reads back (no second statement: acceptance is on the request path).
    record = MessageRecord(
        id=message.id,
        portal_id=message.portal_id,
        api_key_id=message.api_key_id,
        status="queued",
        to=list(message.to),
        cc=list(message.cc),
        subject=message.subject,
        message_id=message.message_id,
        attempts=0,
        created_at=now,
        next_attempt_at=now,
        sent_at=None,
        last_error=None,
        smtp_reply=None,
        has_content=True,
        recipients=recipient_states([*message.to, *message.cc], None, "queued"),
    )
    return record, True


# -- reading ---------------------------------------------------------------------------------------------

_FIND = Prepared(sa.select(*_RECORD_COLUMNS).where(o.c.portal_id == sa.bindparam("portal_id"), o.c.id == sa.bindparam("id")))


def find(conn: Connection, portal_id: int, message_id: str) -> MessageRecord | None:
    row = _FIND.row(conn, {"portal_id": portal_id, "id": message_id})
    return None if row is None else _record(row)


_FIND_ANY = Prepared(sa.select(*_RECORD_COLUMNS).where(o.c.id == sa.bindparam("id")))


def find_any(conn: Connection, message_id: str) -> MessageRecord | None:
    """A message of whichever portal: the command line names messages by their id alone (ids are global)."""
    row = _FIND_ANY.row(conn, {"id": message_id})
    return None if row is None else _record(row)


def list_messages(
    conn: Connection,
    portal_id: int,
    *,
    status: str | None = None,
    api_key_id: str | None = None,
    count: int = 50,
    start_index: int = 0,
) -> tuple[list[MessageRecord], int]:
    """A page of the portal's messages, newest first, and how many there are in all."""
    where = [o.c.portal_id == portal_id]
    if status is not None:
        where.append(o.c.status == status)
    if api_key_id is not None:
        where.append(o.c.api_key_id == api_key_id)
    total = conn.execute(sa.select(sa.func.count()).select_from(o).where(*where)).scalar_one()
    rows = conn.execute(
        sa.select(*_RECORD_COLUMNS).where(*where).order_by(o.c.created_at.desc(), o.c.id.desc()).limit(count).offset(start_index)
    )
    return [_record(r) for r in rows], int(total)


def count_by_status(conn: Connection) -> dict[str, int]:
    """Messages per status across all portals (every status present), for the metrics."""
    counts = dict.fromkeys(STATUSES, 0)
    for status, n in conn.execute(sa.select(o.c.status, sa.func.count()).group_by(o.c.status)):
        counts[status] = int(n)
    return counts


# The claim index's own predicate, word for word: SQLite uses a partial index only for a query that repeats it.
_PENDING = sa.text("status IN ('queued', 'deferred', 'sending')")
_NEXT_DUE = Prepared(sa.select(sa.func.min(o.c.next_attempt_at)).where(_PENDING))


def next_due(conn: Connection) -> datetime | None:
    """When the next message falls due (or a lease expires): the dispatcher sleeps until then."""
    row = _NEXT_DUE.row(conn, {})
    return utc(row[0]) if row and row[0] is not None else None


# The unsent index has the same predicate, so SQLite counts and sums the portal's backlog from it alone.
_BACKLOG = Prepared(
    sa.select(sa.func.count(), sa.func.coalesce(sa.func.sum(o.c.size), 0)).where(
        _PENDING, o.c.portal_id == sa.bindparam("portal_id")
    )
)


def backlog(conn: Connection, portal_id: int) -> Backlog:
    """The portal's unsent mail (queued, deferred or sending): messages and bytes, in one statement."""
    row = _BACKLOG.row(conn, {"portal_id": portal_id})
    messages, size = row if row is not None else (0, 0)
    return Backlog(messages=int(messages), bytes=int(size))


# -- the admin's transitions -----------------------------------------------------------------------------


def cancel(conn: Connection, portal_id: int, message_id: str) -> bool:
    """Cancel a queued or deferred message; False if it is in another state (or absent)."""
    now = utcnow()
    result = conn.execute(
        o.update()
        .where(o.c.portal_id == portal_id, o.c.id == message_id, o.c.status.in_(("queued", "deferred")))
        .values(status="cancelled", next_attempt_at=None, finished_at=now)
    )
    return result.rowcount == 1


def requeue_failed(conn: Connection, portal_id: int, message_id: str) -> bool:
    """Queue a failed message again, due now, with a fresh retry horizon; False unless failed with its body."""
    return _requeue(conn, o.c.portal_id == portal_id, o.c.id == message_id) == 1


def _requeue(conn: Connection, *which: Any) -> int:
    """Failed messages (of ``which``) that still have their body: queued again, due now; how many."""
    now = utcnow()
    retryable = (o.c.status == "failed", o.c.content.is_not(None))
    requeued = o.update().where(*which, *retryable).values(status="queued", next_attempt_at=now, queued_at=now, finished_at=None)
    return int(conn.execute(requeued).rowcount)


# -- the dispatcher's transitions ------------------------------------------------------------------------

_DUE = sa.and_(_PENDING, o.c.next_attempt_at <= sa.bindparam("now"))


def _listed(dialect: str, name: str, type_: Any) -> Any:
    """The values of the JSON array bound as ``name``: a list in one parameter, so the statement is prepared once."""
    if dialect == "postgresql":
        values = sa.func.json_array_elements_text(sa.cast(sa.bindparam(name, "[]"), sa.JSON))
    else:
        values = sa.func.json_each(sa.bindparam(name, "[]")).table_valued("value").c.value
    return sa.select(sa.cast(values, type_)).scalar_subquery()


def _claim(dialect: str) -> Any:
    """The due messages, oldest due first, but none of the portals in the JSON list ``full``.

    Walks the partial due index and stops after ``n`` rows, so its cost does not grow with the backlog;
    the walk passes over the rows of portals left out (a full portal's backlog) without counting them.
    """
    full = _listed(dialect, "full", sa.Integer)
    pick = (
        sa.select(o.c.id, o.c.portal_id)
        .where(_DUE, o.c.portal_id.not_in(full))
        .order_by(o.c.next_attempt_at)
        .limit(sa.bindparam("n"))
    )
    return _skipping_locked(pick, dialect)


def _skipping_locked(pick: Any, dialect: str) -> Any:
    """On PostgreSQL, concurrent claimers skip each other's rows instead of waiting for them or taking them twice."""
    return pick.with_for_update(of=o, skip_locked=True) if dialect == "postgresql" else pick


_CLAIM = Prepared.per_dialect(_claim)


def _portal_due(dialect: str) -> Any:
    pick = (
        sa.select(o.c.id)
        .where(_DUE, o.c.portal_id == sa.bindparam("portal"))
        .order_by(o.c.next_attempt_at)
        .limit(sa.bindparam("n"))
    )
    return _skipping_locked(pick, dialect)


_PORTAL_DUE = Prepared.per_dialect(_portal_due)
_LEASE = Prepared.per_dialect(
    lambda dialect: o.update()
    .where(o.c.id.in_(_listed(dialect, "ids", sa.String)))
    .values(
        status="sending",
        lease_owner=sa.bindparam("owner"),
        next_attempt_at=sa.bindparam("until"),
        # Counted at the claim, so a message that takes its sender down with it still runs out of attempts.
        attempts=o.c.attempts + 1,
    )
    .returning(
        o.c.id, o.c.portal_id, o.c.sender, o.c.recipients, o.c.content, o.c.smtputf8, o.c.attempts,
        o.c.created_at, o.c.queued_at,
    )
)


def claim_due(
    conn: Connection,
    owner: str,
    lease: timedelta,
    limit: int,
    *,
    per_portal: int | None = None,
    busy: Mapping[int, int] | None = None,
    together: int = 1,
) -> list[Claim]:
    """Lease up to ``limit`` due messages to ``owner``: at most ``per_portal`` of a portal, counting ``busy``.

    ``busy`` is how many messages of each portal ``owner`` holds already. Portals at their share are left
    out of the walk; of the rest, each portal's oldest ``together`` come first, then each one's next
    ``together`` and so on (round robin), so a portal's backlog never takes more than ``together`` of
    another's turn. Taking a few of a portal's messages together lets one connection send them in a row,
    where one at a time each would wait behind every other portal's and find its connection closed. The
    walk looks at ``limit`` times the share in rows, a bound that keeps its cost flat: when one portal's
    backlog fills it, that portal takes its share and the next claim, leaving it out, reaches the others.
    """
    now = utcnow()
    busy = busy or {}
    share = per_portal if per_portal is not None else limit
    full = [portal for portal, n in busy.items() if n >= share]
    driver = conn.connection.driver_connection
    compiled = _CLAIM.compiled(conn.dialect)
    cursor = driver.execute(  # type: ignore[union-attr]
        compiled.sql, compiled.bind({"now": now, "n": limit if per_portal is None else limit * share, "full": _json.encode(full).decode()})
    )
    rows = cursor.fetchall()
    cursor.close()
    taken: dict[int, int] = defaultdict(int)
    ranked: list[tuple[int, int, str]] = []
    for position, (id_, portal_id) in enumerate(rows):
        taken[portal_id] += 1
        turn = busy.get(portal_id, 0) + taken[portal_id]
        if turn <= share:
            ranked.append(((turn - 1) // together, position, id_))
    return _lease(conn, owner, lease, [id_ for _, _, id_ in sorted(ranked)[:limit]], now)


def claim_more(conn: Connection, owner: str, lease: timedelta, wanted: Mapping[int, int]) -> list[Claim]:
    """Lease up to ``wanted[portal]`` more due messages of each of those portals, oldest due first.

    For portals whose messages a connection is open for: the claim's walk, bounded in rows, sees one or two
    of each portal's messages when many portals' mail is interleaved, and the connection would go for want
    of the rest. One short query per portal, on its own rows.
    """
    now = utcnow()
    driver = conn.connection.driver_connection
    compiled = _PORTAL_DUE.compiled(conn.dialect)
    ids: list[str] = []
    for portal_id, count in wanted.items():
        if count > 0:
            cursor = driver.execute(compiled.sql, compiled.bind({"now": now, "portal": portal_id, "n": count}))  # type: ignore[union-attr]
            ids += [row[0] for row in cursor.fetchall()]
            cursor.close()
    return _lease(conn, owner, lease, ids, now)


def _lease(conn: Connection, owner: str, lease: timedelta, ids: list[str], now: datetime) -> list[Claim]:
    """Lease the messages ``ids`` to ``owner``; those whose body was purged fail instead."""
    if not ids:
        return []
    driver = conn.connection.driver_connection
    compiled = _LEASE.compiled(conn.dialect)
    cursor = driver.execute(  # type: ignore[union-attr]
        compiled.sql, compiled.bind({"ids": _json.encode(ids).decode(), "owner": owner, "until": now + lease})
    )
    leased = [compiled.convert(r) for r in cursor.fetchall()]
    cursor.close()
    claims = []
    for id_, portal_id, sender, recipients, content, smtputf8, attempts, created, queued in leased:
        if content is None:  # purged while it could not be sent: nothing left to send
            _FAIL.execute(conn, id=id_, owner=owner, at=now, error="The message body was deleted.", reply=None)
            continue
        claims.append(
            Claim(
                id=id_,
                portal_id=portal_id,
                sender=sender,
                recipients=_addresses.decode(recipients),
                content=bytes(content),
                smtputf8=bool(smtputf8),
                attempts=attempts,
                created_at=utc(created),
                queued_at=utc(queued),
            )
        )
    claims.sort(key=lambda c: (c.portal_id, c.created_at))
    return claims


_HELD_BY_OWNER = sa.and_(o.c.lease_owner == sa.bindparam("owner"), o.c.status == "sending")
_OWNED = sa.and_(o.c.id == sa.bindparam("id"), _HELD_BY_OWNER)
_FAIL = Prepared(
    o.update()
    .where(_OWNED)
    .values(
        status="failed", finished_at=sa.bindparam("at"), next_attempt_at=sa.null(), lease_owner=sa.null(),
        last_error=sa.bindparam("error"), smtp_reply=sa.bindparam("reply"),
    )
)
_ATTEMPTED = Prepared(
    sa.select(o.c.recipients, o.c.recipient_outcomes, o.c.to_addresses, o.c.cc_addresses).where(_OWNED)
)
_SETTLE = Prepared(
    o.update()
    .where(_OWNED)
    .values(
        status=sa.bindparam("status"), recipients=sa.bindparam("recipients"),
        recipient_outcomes=sa.bindparam("outcomes"), next_attempt_at=sa.bindparam("next_at"),
        # When the first recipient got it; a message delivered in part keeps that time.
        sent_at=sa.case(
            (
                sa.bindparam("delivered", type_=sa.Boolean),
                sa.func.coalesce(o.c.sent_at, sa.bindparam("at", type_=o.c.sent_at.type)),
            ),
            else_=o.c.sent_at,
        ),
        finished_at=sa.bindparam("finished_at"), lease_owner=sa.null(),
        last_error=sa.bindparam("error"), smtp_reply=sa.bindparam("reply"),
    )
)
# Back to where it was, the attempt given back: the message was not tried (rate limit, shutdown).
_RELEASED = {
    "status": sa.case((o.c.attempts <= 1, sa.literal("queued")), else_=sa.literal("deferred")),
    "attempts": o.c.attempts - 1,
    "next_attempt_at": sa.bindparam("next_at"),
    "lease_owner": sa.null(),
}
_RELEASE = Prepared(o.update().where(_OWNED).values(_RELEASED))
_RELEASE_OWNER = Prepared(o.update().where(_HELD_BY_OWNER).values(_RELEASED))
_EXTEND = Prepared(o.update().where(_HELD_BY_OWNER).values(next_attempt_at=sa.bindparam("until")))

def record_attempt(
    conn: Connection,
    message_id: str,
    owner: str,
    attempt: Callable[[list[str]], list[RecipientOutcome]],
    *,
    next_attempt_at: datetime | None,
    error: str | None,
    reply: str | None,
) -> Settlement | None:
    """Record an attempt on the message ``owner`` holds; what it became, or None if ``owner`` lost it.

    ``attempt`` gives the outcome of each recipient tried, from the list of those that were to try. The
    message's status follows from all its recipients' outcomes (see
    :func:`smtpsettings.domain.outbox.settle`); ``next_attempt_at`` applies while some are deferred.
    """
    row = _ATTEMPTED.row(conn, {"id": message_id, "owner": owner})
    if row is None:
        return None
    pending, stored, to, cc = row
    previous = _outcomes.decode(stored) if stored else []
    settled = settle(previous, attempt(_addresses.decode(pending)), error)
    outcomes = settled.outcomes
    if settled.status != "deferred":  # the end: Bcc recipients need not be remembered
        shown = {a.casefold() for a in (*_addresses.decode(to), *_addresses.decode(cc))}
        outcomes = tuple(o for o in outcomes if o.address.casefold() in shown)
    now = utcnow()
    changed = _SETTLE.execute(
        conn,
        id=message_id,
        owner=owner,
        status=settled.status,
        recipients=_json.encode(list(settled.pending)).decode(),
        outcomes=_json.encode(outcomes).decode(),
        next_at=next_attempt_at if settled.status == "deferred" else None,
        delivered=any(o.status == "accepted" for o in settled.outcomes),
        at=now,
        finished_at=None if settled.status == "deferred" else now,
        error=settled.reason,
        reply=reply,
    )
    return settled if changed == 1 else None


def mark_sent(conn: Connection, message_id: str, owner: str, reply: str) -> bool:
    """Every recipient still to try was accepted."""
    return _everyone(conn, message_id, owner, "accepted", reply, None, None)


def mark_deferred(conn: Connection, message_id: str, owner: str, next_attempt_at: datetime, error: str, reply: str | None) -> bool:
    """The attempt failed for every recipient still to try; they are tried again at ``next_attempt_at``."""
    return _everyone(conn, message_id, owner, "deferred", reply, error, next_attempt_at)


def mark_failed(conn: Connection, message_id: str, owner: str, error: str, reply: str | None) -> bool:
    """The message failed for every recipient still to try (those accepted before keep it: ``partial``)."""
    return _everyone(conn, message_id, owner, "failed", reply, error, None)


def _everyone(
    conn: Connection,
    message_id: str,
    owner: str,
    status: RecipientStatus,
    reply: str | None,
    error: str | None,
    next_at: datetime | None,
) -> bool:
    def attempt(pending: list[str]) -> list[RecipientOutcome]:
        return [RecipientOutcome(address, status, reply or error) for address in pending]

    settled = record_attempt(conn, message_id, owner, attempt, next_attempt_at=next_at, error=error, reply=reply)
    return settled is not None


def release(conn: Connection, message_id: str, owner: str, next_attempt_at: datetime) -> bool:
    """Give a claimed, untried message back (due at ``next_attempt_at``) without spending its attempt."""
    return _RELEASE.execute(conn, id=message_id, owner=owner, next_at=next_attempt_at) == 1


def postpone_portal(conn: Connection, portal_id: int, until: datetime) -> int:
    """Make the portal's waiting messages due no sooner than ``until`` (its rate is used up until then).

    One statement, so the claim does not take them one batch after another only to give them back.
    """
    # Only those due now: the ones postponed before wait already. The partial due index finds these without
    # walking the portal's whole backlog, which a limited portal may have plenty of; ``portal_id + 0`` keeps
    # the planner from preferring the portal's index, which would walk it.
    result = conn.execute(
        o.update()
        .where(_PENDING, o.c.next_attempt_at <= utcnow(), (o.c.portal_id + 0) == portal_id, o.c.status != "sending")
        .values(next_attempt_at=until)
    )
    return int(result.rowcount)


# Deferred until ``until`` with ``reason``; failed with ``failed_reason`` if accepted before ``give_up_before``.
_EXPIRED = o.c.queued_at < sa.bindparam("give_up_before")
_WAITING = {
    "status": sa.case((_EXPIRED, sa.literal("failed")), else_=sa.literal("deferred")),
    # Typed, or SQLite would get the driver's own rendering of a datetime inside the CASE.
    "next_attempt_at": sa.case((_EXPIRED, sa.null()), else_=sa.bindparam("until", type_=o.c.next_attempt_at.type)),
    "finished_at": sa.case((_EXPIRED, sa.bindparam("at", type_=o.c.finished_at.type)), else_=sa.null()),
    "last_error": sa.case((_EXPIRED, sa.bindparam("failed_reason", type_=sa.Text)), else_=sa.bindparam("reason", type_=sa.Text)),
    "lease_owner": sa.null(),
}
_DEFER_UNTRIED = Prepared(o.update().where(_OWNED).values({**_WAITING, "attempts": o.c.attempts - 1}))
_DEFER_PORTAL = Prepared(
    o.update()
    .where(
        _PENDING,
        o.c.next_attempt_at < sa.bindparam("until"),
        (o.c.portal_id + 0) == sa.bindparam("portal"),  # + 0: see postpone_portal
        o.c.status != "sending",
    )
    .values(_WAITING)
)


def defer_untried(
    conn: Connection, message_id: str, owner: str, until: datetime, reason: str, *, give_up_before: datetime, failed_reason: str
) -> bool:
    """A claimed message not tried (its destination is unavailable): deferred or failed, the attempt given back."""
    params = {"until": until, "reason": reason, "give_up_before": give_up_before, "failed_reason": failed_reason}
    return _DEFER_UNTRIED.execute(conn, id=message_id, owner=owner, at=utcnow(), **params) == 1


def defer_portal(
    conn: Connection, portal_id: int, until: datetime, reason: str, *, give_up_before: datetime, failed_reason: str
) -> int:
    """Every waiting message of the portal due before ``until``: deferred until then, or failed past its horizon.

    One statement when the portal's destination becomes unavailable, so none of them costs an attempt.
    Messages being sent are left to their attempt.
    """
    params = {"until": until, "reason": reason, "give_up_before": give_up_before, "failed_reason": failed_reason}
    return _DEFER_PORTAL.execute(conn, portal=portal_id, at=utcnow(), **params)


def resume_portal(conn: Connection, portal_id: int, until: datetime) -> int:
    """The portal's destination is back: what waits for it (due by ``until``) is due now."""
    now = utcnow()
    result = conn.execute(
        o.update()
        .where(
            _PENDING,
            o.c.next_attempt_at > now,
            o.c.next_attempt_at <= until,
            (o.c.portal_id + 0) == portal_id,
            o.c.status != "sending",
        )
        .values(next_attempt_at=now)
    )
    return int(result.rowcount)


def release_owner(conn: Connection, owner: str) -> int:
    """Give back every message ``owner`` still holds (a dispatcher stopping), due now."""
    return _RELEASE_OWNER.execute(conn, owner=owner, next_at=utcnow())


def extend_leases(conn: Connection, owner: str, lease: timedelta) -> int:
    """The heartbeat: every message ``owner`` is sending stays leased for ``lease`` from now."""
    return _EXTEND.execute(conn, owner=owner, until=utcnow() + lease)


def expire_leases(conn: Connection, owners: Sequence[str] | None = None) -> int:
    """End now the leases of dispatchers known to be dead: ``owners``, or every lease (None).

    Every lease is for the dispatcher that just took an instance's lock on SQLite: no other can be at work
    on that database. The messages stay ``sending`` under their dead owner, due at once, exactly as if the
    leases had run out: the next claim takes them (counting another attempt), and an owner that was only
    slow still records its outcome if nobody has claimed the message by then.
    """
    now = utcnow()
    where = [_PENDING, o.c.status == "sending", o.c.next_attempt_at > now]
    if owners is not None:
        if not owners:
            return 0
        where.append(o.c.lease_owner.in_(owners))
    return int(conn.execute(o.update().where(*where).values(next_attempt_at=now)).rowcount)


def purge_bodies(conn: Connection, *, sent_before: datetime, failed_before: datetime) -> int:
    """Delete the bodies and envelopes of messages sent, failed or cancelled long enough ago; rows stay.

    A cancelled message's outcomes go too: it ended without settling, so they may still name Bcc recipients.
    """
    result = conn.execute(
        o.update()
        .where(
            o.c.content.is_not(None),
            sa.or_(
                sa.and_(o.c.status.in_(("sent", "partial")), o.c.finished_at < sent_before),
                sa.and_(o.c.status.in_(("failed", "cancelled")), o.c.finished_at < failed_before),
            ),
        )
        .values(
            content=None,
            recipients="[]",
            recipient_outcomes=sa.case((o.c.status == "cancelled", sa.null()), else_=o.c.recipient_outcomes),
        )
    )
    return int(result.rowcount)


# Literal, not an expanding IN: a Prepared statement is compiled once, without per-call expansion.
_FINISHED = sa.text("status IN (" + ", ".join(f"'{status}'" for status in FINISHED) + ")")
_DELETE_FINISHED = Prepared(
    o.delete().where(
        o.c.id.in_(
            sa.select(o.c.id)
            .where(o.c.finished_at < sa.bindparam("before"), _FINISHED)
            .order_by(o.c.finished_at)
            .limit(sa.bindparam("n"))
            .scalar_subquery()
        )
    )
)


def delete_finished(conn: Connection, *, before: datetime, limit: int) -> int:
    """Delete up to ``limit`` rows of messages that ended (sent, partial, failed, cancelled) before ``before``.

    Bounded, so that each call is a short transaction: the caller repeats it until fewer come back.
    """
    return _DELETE_FINISHED.execute(conn, before=before, n=limit)


# -- the operator's bulk actions (the command line) -------------------------------------------------------


def flush_portal(conn: Connection, portal_id: int) -> int:
    """Every waiting (queued or deferred) message of the portal that is not due yet: due now; the number.

    Attempts are unchanged. A running dispatcher sends them at its next poll; a destination it holds as
    unavailable in memory is not reset by this.
    """
    now = utcnow()
    result = conn.execute(
        o.update()
        .where(o.c.portal_id == portal_id, o.c.status.in_(("queued", "deferred")), o.c.next_attempt_at > now)
        .values(next_attempt_at=now)
    )
    return int(result.rowcount)


def requeue_all_failed(conn: Connection, portal_id: int) -> tuple[int, int]:
    """Queue every failed message of the portal again, as :func:`requeue_failed` does one.

    Returns:
        ``(requeued, skipped)``: skipped ones failed too long ago and their bodies are gone.
    """
    requeued = _requeue(conn, o.c.portal_id == portal_id)
    skipped = conn.execute(sa.select(sa.func.count()).select_from(o).where(o.c.portal_id == portal_id, o.c.status == "failed"))
    return requeued, int(skipped.scalar_one())


def content_of(conn: Connection, message_id: str) -> bytes | None:
    """The stored message as it goes to the mail server, or None once its body is gone."""
    content = conn.execute(sa.select(o.c.content).where(o.c.id == message_id)).scalar_one_or_none()
    return None if content is None else bytes(content)
