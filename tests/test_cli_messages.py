"""``smtpsettings messages list`` and ``messages retry`` as an operator runs them, on both databases.

Messages are put in the outbox through the store as the API would (accepted, claimed, failed by a
dispatcher), and the command runs as a subprocess against the same database.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from smtpsettings.domain.outbox import RecipientOutcome
from smtpsettings.services.accounts import AccountsService
from smtpsettings.store import outbox
from smtpsettings.store.database import Database, utcnow
from smtpsettings.store.tables import outbox_messages
from test_cli import assert_one_line_error, run

LEASE = timedelta(seconds=60)
BCC = "hidden-bcc@x.test"
BODY_SECRET = "body-secret-7f3a"


class Outbox:
    """A database with two portals, and the command line pointed at it."""

    def __init__(self, url: str, data_dir: Path) -> None:
        self.url = url
        self.data_dir = data_dir
        self.db = Database(url)
        self.db.migrate()
        accounts = AccountsService(self.db)
        self.portal_id = accounts.create_portal("mail.test", is_default=False).id
        self.other_id = accounts.create_portal("other.test", is_default=False).id

    def cli(self, *args: str) -> tuple[int, str, str]:
        result = run(self.data_dir, *args, SMTPSETTINGS_DATABASE_URL=self.url)
        assert "Traceback" not in result.stderr
        return result.returncode, result.stdout, result.stderr

    def ok(self, *args: str) -> list[str]:
        code, out, err = self.cli(*args)
        assert code == 0, err
        assert err == ""
        return out.splitlines()

    def enqueue(self, *, portal_id: int | None = None, subject: str = "hello", created: datetime | None = None) -> str:
        message = outbox.NewMessage(
            id=uuid.uuid4().hex,
            portal_id=self.portal_id if portal_id is None else portal_id,
            user_id=None,
            api_key_id=None,
            sender="portal@x.test",
            recipients=("a@x.test", "b@x.test", BCC),
            content=f"Subject: hello\r\nBcc-was: {BCC}\r\n\r\n{BODY_SECRET}\r\n".encode(),
            smtputf8=False,
            to=("a@x.test", "b@x.test"),
            cc=(),
            subject=subject,
            message_id=f"<{uuid.uuid4().hex}@x.test>",
            idempotency_key=None,
        )
        record, _ = self.db.write_sync(lambda c: outbox.enqueue(c, message))
        if created is not None:
            self.db.write_sync(
                lambda c: c.execute(
                    outbox_messages.update().where(outbox_messages.c.id == record.id).values(created_at=created)
                )
            )
        return record.id

    def claim_all(self) -> list[outbox.Claim]:
        return self.db.write_sync(lambda c: outbox.claim_due(c, "w1", LEASE, 1000))

    def fail_all(self, error: str = "550 no such user", reply: str | None = "550 no such user") -> list[str]:
        """What a dispatcher does with a permanent refusal: every due message claimed, then failed."""
        ids = [claim.id for claim in self.claim_all()]
        for message_id in ids:
            assert self.db.write_sync(lambda c, m=message_id: outbox.mark_failed(c, m, "w1", error, reply))
        return ids

    def status(self, message_id: str) -> str:
        record = self.db.read_sync(lambda c: outbox.find_any(c, message_id))
        assert record is not None
        return record.status


@pytest.fixture
def box(database_url: str, tmp_path: Path) -> Iterator[Outbox]:
    made = Outbox(database_url, tmp_path / "data")
    yield made
    made.db.dispose()


def at(minute: int) -> datetime:
    return datetime(2030, 1, 2, 3, minute, 5, tzinfo=UTC)


# --- list ---------------------------------------------------------------------------------------------


def test_list_prints_one_tab_separated_line_per_message_newest_first_without_bcc_or_body(box: Outbox) -> None:
    failed = box.enqueue(subject="Tab\there,\r\nnew line\u2028and\x1bescape", created=at(1))
    box.fail_all(error="550-5.1.1 first line\r\n550 5.1.1 second line\tend")
    queued = box.enqueue(subject="Привет", created=at(2))
    box.enqueue(portal_id=box.other_id, subject="another portal's", created=at(3))

    lines = box.ok("messages", "list", "--portal", "mail.test", "--no-header")

    assert [line.split("\t") for line in lines] == [
        [queued, "queued", "2030-01-02T03:02:05+00:00", "0", "a@x.test,b@x.test", "Привет", "-"],
        [
            failed,
            "failed",
            "2030-01-02T03:01:05+00:00",
            "1",
            "a@x.test,b@x.test",
            "Tab here,  new line and escape",
            "550-5.1.1 first line  550 5.1.1 second line end",
        ],
    ]
    text = "\n".join(lines)
    assert BCC not in text and BODY_SECRET not in text


def test_list_filters_by_status_and_limits_to_the_newest(box: Outbox) -> None:
    failed = [box.enqueue(created=at(1)), box.enqueue(created=at(2))]
    box.fail_all()
    queued = [box.enqueue(created=at(3)), box.enqueue(created=at(4))]

    def ids(*args: str) -> list[str]:
        return [line.split("\t")[0] for line in box.ok("messages", "list", "--portal", "mail.test", "--no-header", *args)]

    assert ids("--status", "failed") == failed[::-1]
    assert ids("--status", "queued") == queued[::-1]
    assert box.cli("messages", "list", "--portal", "mail.test", "--status", "sent") == (0, "", "no messages\n")
    assert ids("--limit", "3") == [queued[1], queued[0], failed[1]]
    assert ids("--status", "failed", "--limit", "1") == [failed[1]]
    assert box.cli("messages", "list", "--portal", "other.test") == (0, "", "no messages\n")


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (("--portal", "nowhere.test"), ("nowhere.test",)),
        (("--portal", "mail.test", "--status", "lost"), ("'lost'", "failed", "queued")),
    ],
    ids=["unknown portal", "unknown status"],
)
def test_list_of_an_unknown_portal_or_status_is_a_one_line_error(
    box: Outbox, args: tuple[str, ...], fragments: tuple[str, ...]
) -> None:
    result = run(box.data_dir, "messages", "list", *args, SMTPSETTINGS_DATABASE_URL=box.url)
    assert_one_line_error(result, "error:", *fragments)
    assert result.stdout == ""


def test_list_and_show_tell_a_message_delivered_in_part_recipient_by_recipient(box: Outbox) -> None:
    message = box.enqueue(created=at(1))
    [claim] = box.claim_all()
    attempt = [
        RecipientOutcome("a@x.test", "accepted", "250 2.0.0 queued"),
        RecipientOutcome("b@x.test", "refused", "550 5.1.1 <b@x.test>: no such\r\nuser"),
        RecipientOutcome(BCC, "accepted", "250 2.0.0 queued"),
    ]
    settled = box.db.write_sync(
        lambda c: outbox.record_attempt(c, claim.id, "w1", lambda _: attempt, next_attempt_at=None, error=None, reply="250 2.0.0 queued")
    )
    assert settled is not None and settled.status == "partial"

    [header, line] = box.ok("messages", "list", "--portal", "mail.test", "--status", "partial")
    assert header.split("\t") == ["id", "status", "created", "attempts", "to", "subject", "last_error"]
    assert line.split("\t")[:2] == [message, "partial"]
    assert line.split("\t")[-1] == "Delivered to 2 of 3 recipients; not to the others: 550 5.1.1 <b@x.test>: no such  user"

    shown = box.ok("messages", "show", message)
    blank = shown.index("")
    assert shown[:blank] == ["Subject: hello", "Status: partial", "Attempts: 1", f"Last-Error: {line.split(chr(9))[-1]}"]
    assert [row.split("\t") for row in shown[blank + 1 :]] == [
        ["recipient", "status", "reply"],
        ["a@x.test", "accepted", "250 2.0.0 queued"],
        ["b@x.test", "refused", "550 5.1.1 <b@x.test>: no such  user"],
    ]
    assert BCC not in "\n".join(shown)


def test_show_of_an_unknown_id_is_a_one_line_not_found(box: Outbox) -> None:
    unknown = uuid.uuid4().hex
    result = run(box.data_dir, "messages", "show", unknown, SMTPSETTINGS_DATABASE_URL=box.url)
    assert result.returncode == 1
    assert_one_line_error(result, "no message", unknown)


# --- retry --------------------------------------------------------------------------------------------


def test_retry_requeues_a_failed_message_of_any_portal_due_now_with_a_fresh_horizon(box: Outbox) -> None:
    message = box.enqueue(portal_id=box.other_id)
    [claim] = box.claim_all()
    assert box.db.write_sync(lambda c: outbox.mark_failed(c, message, "w1", "550 no", "550 no"))
    started = utcnow()

    assert box.ok("messages", "retry", message) == [f"requeued {message}"]

    assert box.status(message) == "queued"
    [again] = box.claim_all()  # due at once
    assert again.id == message and again.attempts == 2
    assert again.queued_at >= started > claim.queued_at  # the retry horizon counts from now


def test_retry_of_a_message_that_is_not_failed_is_refused_and_changes_nothing(box: Outbox) -> None:
    queued = box.enqueue()
    code, out, err = box.cli("messages", "retry", queued)
    assert code == 1 and out == ""
    assert err == f"error: message {queued} is queued: only a failed message can be retried\n"
    assert box.status(queued) == "queued"

    [claim] = box.claim_all()
    assert box.db.write_sync(lambda c: outbox.mark_sent(c, claim.id, "w1", "250 ok"))
    code, _, err = box.cli("messages", "retry", queued)
    assert code == 1
    assert err == f"error: message {queued} is sent: only a failed message can be retried\n"
    assert box.status(queued) == "sent"


def test_retry_of_an_unknown_id_is_a_one_line_not_found(box: Outbox) -> None:
    unknown = uuid.uuid4().hex
    result = run(box.data_dir, "messages", "retry", unknown, SMTPSETTINGS_DATABASE_URL=box.url)
    assert result.returncode == 1
    assert_one_line_error(result, "no message", unknown)


def test_retry_of_a_failed_message_whose_body_was_purged_says_so(box: Outbox) -> None:
    message = box.enqueue()
    box.fail_all()
    later = utcnow() + timedelta(days=1)
    assert box.db.write_sync(lambda c: outbox.purge_bodies(c, sent_before=later, failed_before=later)) == 1

    result = run(box.data_dir, "messages", "retry", message, SMTPSETTINGS_DATABASE_URL=box.url)

    assert result.returncode == 1
    assert_one_line_error(result, message, "body was deleted")
    assert box.status(message) == "failed"


def test_the_messages_commands_are_listed_in_the_help(tmp_path: Path) -> None:
    result = run(tmp_path / "data", "messages", "--help")
    assert result.returncode == 0
    assert "list" in result.stdout and "retry" in result.stdout


# --- show, flush, bulk retry -----------------------------------------------------------------------------


def test_show_prints_headers_parsed_from_the_message_and_the_body_only_when_asked(box: Outbox) -> None:
    message = box.enqueue()
    shown = box.ok("messages", "show", message)
    assert shown[:3] == ["Subject: hello", "Status: queued", "Attempts: 0"]
    assert BODY_SECRET not in "\n".join(shown) and BCC not in "\n".join(shown)

    code, out, err = box.cli("messages", "show", message, "--body")
    assert (code, err) == (0, "")
    assert out == f"Subject: hello\r\nBcc-was: {BCC}\r\n\r\n{BODY_SECRET}\r\n".replace("\r\n", "\n")


def test_flush_makes_the_portals_waiting_messages_due_now_and_keeps_their_attempts(box: Outbox) -> None:
    deferred = box.enqueue()
    [claim] = box.claim_all()
    later = utcnow() + timedelta(hours=1)
    assert box.db.write_sync(lambda c: outbox.mark_deferred(c, claim.id, "w1", later, "421 busy", "421 busy"))
    elsewhere = box.enqueue(portal_id=box.other_id)
    box.claim_all()  # the other portal's message is being sent: not touched
    assert box.claim_all() == []

    assert box.ok("messages", "flush", "--portal", "mail.test") == ["1 message(s) of mail.test due now"]

    [again] = box.claim_all()
    assert again.id == deferred and again.attempts == 2  # the first attempt still counts
    assert box.status(elsewhere) == "sending"


def test_retry_of_a_portals_failed_messages_requeues_those_with_bodies_and_counts_the_rest(box: Outbox) -> None:
    kept, purged = box.enqueue(), box.enqueue()
    box.enqueue(portal_id=box.other_id)
    box.fail_all()
    box.db.write_sync(lambda c: c.execute(outbox_messages.update().where(outbox_messages.c.id == purged).values(content=None)))

    out = box.ok("messages", "retry", "--portal", "mail.test", "--status", "failed")

    assert out == ["requeued 1 message(s); skipped 1 whose body is gone"]
    assert (box.status(kept), box.status(purged)) == ("queued", "failed")
    assert [m for m in box.db.read_sync(lambda c: outbox.count_by_status(c)).items() if m[1]] == [("queued", 1), ("failed", 2)]
    assert_one_line_error(run(box.data_dir, "messages", "retry", SMTPSETTINGS_DATABASE_URL=box.url), "--portal")
