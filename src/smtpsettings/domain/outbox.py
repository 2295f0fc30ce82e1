"""The outbox's pure rules: what a message to send must look like, and what an attempt leads to.

No HTTP, SQL or sockets here: :func:`parse_message` reads the decoded JSON body of
``POST /api/2.0/smtpsettings/messages``, :func:`classify` turns a :class:`MailError` from one delivery
attempt into the message's next state, and :func:`settle` merges one attempt's outcome for each recipient
into the message's, deciding its status: a refused recipient fails only itself.
"""

from __future__ import annotations

import ipaddress
import random
import typing
import unicodedata
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, Literal

import idna
import msgspec

from smtpsettings.domain.errors import BadArgument, ValidationFailed
from smtpsettings.domain.hosts import check_host
from smtpsettings.domain.smtp import has_control_characters
from smtpsettings.mail.errors import MailError, SendError
from smtpsettings.mail.report import Refusal

__all__ = (
    "FINISHED",
    "MAX_ADDRESS_LENGTH",
    "MAX_RECIPIENTS",
    "MAX_SUBJECT_LENGTH",
    "RECIPIENT_STATUSES",
    "Outcome",
    "OutgoingMessage",
    "RecipientOutcome",
    "Settlement",
    "check_address",
    "classify",
    "delivery_outcomes",
    "gave_up",
    "parse_message",
    "recipient_states",
    "retry_delay",
    "settle",
)

MAX_RECIPIENTS = 100
MAX_ADDRESS_LENGTH = 254  # RFC 5321's path limit (256) less the angle brackets
_MAX_ERRORS_PER_FIELD = 20  # a hostile body must not turn into an answer with an error per entry
_LISTED_PER_RECIPIENT = 10  # repeats collapse, but a list this much longer than the limit is no message
MAX_SUBJECT_LENGTH = 998  # RFC 5322's line limit: a longer subject cannot be written without folding
_MAX_LOCAL_PART_BYTES = 64  # RFC 5321 4.5.3.1.1, in octets, so UTF-8 counts as sent
# atext of RFC 5322 besides letters and digits; a dot-atom is atext runs joined by single dots.
_ATEXT_SPECIALS = frozenset("!#$%&'*+-/=?^_`{|}~")

FIRST_RETRY = timedelta(seconds=30)
LONGEST_RETRY = timedelta(hours=1)

_RANDOM = random.Random()  # jitter only: spreads retries, so it need not be unpredictable


class OutgoingMessage(msgspec.Struct, frozen=True):
    """A message as accepted: addresses checked, bodies normalised (an empty body is ``None``)."""

    to: tuple[str, ...]
    cc: tuple[str, ...]
    bcc: tuple[str, ...]
    reply_to: str | None
    subject: str
    text: str | None
    html: str | None

    @property
    def recipients(self) -> tuple[str, ...]:
        """The envelope: to, cc and bcc in that order, each address once (compared case-insensitively).

        The header lists stay as given; only the envelope drops repeats, so nobody gets the mail twice.
        """
        return _unique((*self.to, *self.cc, *self.bcc))


class Outcome(msgspec.Struct, frozen=True):
    """What a failed attempt leads to: try again at ``next_attempt_at``, or give up; ``reason`` is shown."""

    status: Literal["deferred", "failed"]
    next_attempt_at: datetime | None
    reason: str


RecipientStatus = Literal["pending", "accepted", "refused", "deferred", "failed", "cancelled"]
RECIPIENT_STATUSES: tuple[str, ...] = typing.get_args(RecipientStatus)
MessageEnd = Literal["sent", "partial", "deferred", "failed"]
FINISHED = ("sent", "partial", "failed", "cancelled")
"""The statuses a message does not leave on its own (only ``failed`` leaves, by an admin's retry)."""


class RecipientOutcome(msgspec.Struct, frozen=True):
    """One envelope recipient's outcome so far, and the reply that decided it.

    Stored: ``accepted`` (the server took the message for it), ``refused`` (a 5xx to its RCPT: final),
    ``deferred`` (a 4xx, or the attempt failed: tried again) and ``failed`` (given up, or the message
    failed as a whole). Shown besides: ``pending`` (not tried yet) and ``cancelled``.
    """

    address: str
    status: RecipientStatus
    reply: str | None = None


class Settlement(msgspec.Struct, frozen=True):
    """A message after an attempt: its status, every recipient's outcome, and whom a next attempt tries.

    ``pending`` is who is still to try while ``deferred``; for ``failed``, everyone, so that an admin's
    retry tries them all again; nobody once ``sent`` or ``partial`` (delivered in part, nobody left to try).
    """

    status: MessageEnd
    outcomes: tuple[RecipientOutcome, ...]
    pending: tuple[str, ...]
    reason: str | None


# wire name -> PascalCase name used in validation errors
_LISTS = (("to", "To"), ("cc", "Cc"), ("bcc", "Bcc"))
_BODIES = (("text", "Text"), ("html", "Html"))


def parse_message(body: object, *, max_recipients: int = MAX_RECIPIENTS) -> OutgoingMessage:
    """Validate the decoded JSON body of ``POST /messages``.

    ``to``, ``cc`` and ``bcc`` are arrays of bare addresses (``null`` or left out: none), with 1 to
    ``max_recipients`` distinct addresses among them; ``replyTo`` is one address or ``null``. ``subject``
    is required and must be a string, but may be empty (mail without a subject is legal, and a client
    that forgot the field should hear so rather than send a blank one). ``text`` and ``html`` are optional
    strings; at least one must be non-empty. Fields DocSpace does not know are ignored, as DocSpace does.

    Addresses are ``local@domain`` without a display name: the local part a dot-atom (UTF-8 allowed, for
    SMTPUTF8), the domain a host name under :func:`check_host`'s rules, not an IP address or an address
    literal. An international domain is kept in its mapped form (``Bücher.Example`` becomes
    ``bücher.example``, an ideographic full stop a dot), as a resolver reads it.

    Raises:
        BadArgument: the body is not a JSON object.
        ValidationFailed: every problem found, keyed by PascalCase field name (``To``, ``Subject``...);
            each message names the position of the value, never its whole text.
    """
    if not isinstance(body, dict):
        raise BadArgument("The request body must be a JSON object with the message.")
    errors: dict[str, list[str]] = {}

    lists: dict[str, tuple[str, ...]] = {name: () for name, _ in _LISTS}
    listed = sum(len(v) for v in (body.get(name) for name, _ in _LISTS) if isinstance(v, list))
    if listed > _LISTED_PER_RECIPIENT * max_recipients:
        # Far too many to be a message, however many repeat: refused by count alone, since checking each
        # (IDNA and all) would hold the event loop for seconds.
        _add(
            errors,
            "To",
            f"The message lists {listed} addresses in To, Cc and Bcc; at most {max_recipients} recipients are allowed.",
        )
    else:
        given: list[str] = []  # every string entry, valid or not, for the recipient count
        for name, label in _LISTS:
            lists[name], entries = _address_list(body.get(name), label, errors)
            given += entries
        if not given and not any(label in errors for _, label in _LISTS):
            _add(errors, "To", "The message has no recipients: give at least one address in To, Cc or Bcc.")
        elif len(_unique(given)) > max_recipients:
            _add(
                errors,
                "To",
                f"The message has {len(_unique(given))} recipients in To, Cc and Bcc together;"
                f" at most {max_recipients} are allowed.",
            )

    reply_to = body.get("replyTo")
    if reply_to is not None and not isinstance(reply_to, str):
        _add(errors, "ReplyTo", "The field ReplyTo must be a string (an email address) or null.")
        reply_to = None
    elif reply_to:
        problem, reply_to = _check_address(reply_to)
        if problem:
            _add(errors, "ReplyTo", f"ReplyTo is not a valid email address: {problem}.")
    reply_to = reply_to or None

    subject = body.get("subject")
    if "subject" not in body:
        _add(errors, "Subject", "The field Subject is required (it may be an empty string).")
    elif not isinstance(subject, str):
        _add(errors, "Subject", "The field Subject must be a string.")
    elif len(subject) > MAX_SUBJECT_LENGTH:
        longest = MAX_SUBJECT_LENGTH
        _add(errors, "Subject", f"The field Subject must be a string with a maximum length of {longest}.")
    elif has_control_characters(subject):
        _add(
            errors,
            "Subject",
            "The field Subject must not contain control characters (line breaks and tabs included),"
            " not even inside an encoded word (=?...?=).",
        )

    bodies: dict[str, str | None] = {}
    for name, label in _BODIES:
        value = body.get(name)
        if value is not None and not isinstance(value, str):
            _add(errors, label, f"The field {label} must be a string or null.")
            value = None
        bodies[name] = value or None
    if not any(bodies.values()) and not any(label in errors for _, label in _BODIES):
        _add(errors, "Text", "The message has no body: give Text, Html or both.")

    if errors:
        raise ValidationFailed(errors)
    assert isinstance(subject, str)  # for the type checker: a non-string was an error above
    return OutgoingMessage(
        to=lists["to"],
        cc=lists["cc"],
        bcc=lists["bcc"],
        reply_to=reply_to,
        subject=subject,
        text=bodies["text"],
        html=bodies["html"],
    )


def _address_list(value: Any, label: str, errors: dict[str, list[str]]) -> tuple[tuple[str, ...], list[str]]:
    """The checked addresses of one list field, and all of its string entries (for counting)."""
    if value is None:
        return (), []
    if not isinstance(value, list):
        _add(errors, label, f"The field {label} must be an array of email addresses.")
        return (), []
    checked: list[str] = []
    entries: list[str] = []
    for index, item in enumerate(value):
        if not isinstance(item, str):
            _add(errors, label, f"{label}[{index}] must be a string (an email address).")
            continue
        entries.append(item)
        problem, address = _check_address(item)
        if problem:
            _add(errors, label, f"{label}[{index}] is not a valid email address: {problem}.")
        else:
            checked.append(address)
    return tuple(checked), entries


def check_address(value: str) -> tuple[str | None, str]:
    """``(problem, the address to use)`` for one bare address, by the rules of :func:`parse_message`."""
    return _check_address(value)


def _check_address(value: str) -> tuple[str | None, str]:
    """``(problem, the address to use)``; ``problem`` completes "... is not a valid email address: "."""
    if not value:
        return "it is empty", value
    if "<" in value or ">" in value:
        return "give the bare address, like ann@example.com, without a name or angle brackets", value
    if any(_is_control_or_space(char) for char in value):
        return "it contains white space or a control character", value
    if len(value) > MAX_ADDRESS_LENGTH:
        return f"it is longer than {MAX_ADDRESS_LENGTH} characters", value
    local, at, domain = value.rpartition("@")
    if not at:
        return "it has no @", value
    problem = _local_part_problem(local)
    if problem:
        return problem, value
    if not domain:
        return "nothing follows the @", value
    if domain.startswith("[") or ":" in domain or _is_ip_address(domain):
        return "the domain is an IP address; address literals are not accepted, give a domain name", value
    problem, _ = check_host(domain)
    if problem:
        return f"the domain {problem}", value
    if not domain.isascii():
        # Case, full-width forms and ideographic full stops mapped, so the envelope carries real dots.
        domain = idna.uts46_remap(domain, std3_rules=True, transitional=False)
    return None, f"{local}@{domain}"


def _local_part_problem(local: str) -> str | None:
    if not local:
        return "nothing comes before the @"
    if "@" in local:
        return "it has more than one @"
    if len(local.encode("utf-8")) > _MAX_LOCAL_PART_BYTES:
        return f"the part before the @ is longer than {_MAX_LOCAL_PART_BYTES} bytes"
    if local.startswith(".") or local.endswith(".") or ".." in local:
        return "the part before the @ starts or ends with a dot, or has two dots in a row"
    for char in local:
        if char.isascii() and not (char.isalnum() or char == "." or char in _ATEXT_SPECIALS):
            return f"the part before the @ contains {char!r} (quoted local parts are not accepted)"
    return None


def _is_control_or_space(char: str) -> bool:
    """C0, DEL, C1, U+2028/9 and the rest of Unicode's control, format and separator classes.

    Wider than the header rule on purpose: an address has no business holding a zero-width joiner or a
    no-break space, and either would make two spellings of one address.
    """
    return unicodedata.category(char)[0] in "CZ"


def _is_ip_address(value: str) -> bool:
    if ":" not in value and not value.replace(".", "").isdigit():  # a name: spare the two failed parses
        return False
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _unique(addresses: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    seen: set[str] = set()
    result: list[str] = []
    for address in addresses:
        key = address.casefold()
        if key not in seen:
            seen.add(key)
            result.append(address)
    return tuple(result)


def _add(errors: dict[str, list[str]], label: str, message: str) -> None:
    found = errors.setdefault(label, [])
    if len(found) < _MAX_ERRORS_PER_FIELD:
        found.append(message)
    elif len(found) == _MAX_ERRORS_PER_FIELD:
        found.append(f"More problems in {label} are not listed.")


def classify(
    error: MailError,
    *,
    attempts: int,
    accepted_at: datetime,
    now: datetime,
    horizon: timedelta,
    rng: random.Random | None = None,
    first_retry: timedelta = FIRST_RETRY,
) -> Outcome:
    """What the failed attempt number ``attempts`` of a message accepted at ``accepted_at`` leads to.

    A 5xx reply to MAIL, RCPT or DATA (a :class:`SendError` with a 5xx ``code``) is the server saying
    it will never take this message: failed at once, with the reply as the reason; so is a
    :class:`SendError` without a reply (the server lacks SMTPUTF8 for a non-ASCII address). Everything else
    (4xx replies, connection, TLS and timeout failures, refused sign-ins and tokens, our own policy, a
    5xx to anything but MAIL/RCPT/DATA) may pass: a server restarts, an admin fixes the password. So
    the message is deferred by :func:`retry_delay`, until the next try would fall after
    ``accepted_at + horizon``; then it has failed, and the reason says so and repeats the last error.
    """
    code = error.code
    # A refusal without a reply is ours and as final: an address the server cannot take (no SMTPUTF8).
    if isinstance(error, SendError) and (code is None or 500 <= code <= 599):
        return Outcome(status="failed", next_attempt_at=None, reason=error.message)
    next_attempt_at = now + retry_delay(attempts, rng or _RANDOM, first_retry)
    if next_attempt_at > accepted_at + horizon:
        return Outcome(
            status="failed",
            next_attempt_at=None,
            reason=(
                f"Gave up after {_plural(attempts, 'attempt')} over {_duration(horizon)};"
                f" the last error: {error.message}"
            ),
        )
    return Outcome(status="deferred", next_attempt_at=next_attempt_at, reason=error.message)


def gave_up(horizon: timedelta, last_error: str) -> str:
    """The reason of a message failed without an attempt of its own, when its horizon ends while it waits."""
    return f"Gave up: the retry horizon of {_duration(horizon)} ended; the last error: {last_error}"


def retry_delay(attempts: int, rng: random.Random, first: timedelta = FIRST_RETRY) -> timedelta:
    """How long to wait after failed attempt number ``attempts``: 30 s, 1 min, 2 min... at most 1 hour,
    each multiplied by a random factor in [0.5, 1.0].

    The jitter is there because failures come in crowds: when a mail server goes down, every message
    queued for it fails within seconds, and without jitter they would all come back at the same moment,
    again and again, as a burst that can itself look like an attack to the server.
    """
    doublings = min(max(attempts, 1) - 1, 16)  # 2**16 * 30 s is far past the cap; no huge powers
    delay = min(first * 2**doublings, max(LONGEST_RETRY, first))
    return delay * rng.uniform(0.5, 1.0)


def _duration(span: timedelta) -> str:
    """``24 hours``, ``90 minutes``, ``45 seconds``: the horizon as a person would say it."""
    seconds = int(span.total_seconds())
    for unit, size in (("hour", 3600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            return _plural(seconds // size, unit)
    return _plural(seconds, "second")


def _plural(count: int, unit: str) -> str:
    return f"{count} {unit}" + ("" if count == 1 else "s")


def settle(
    previous: Sequence[RecipientOutcome], attempt: Sequence[RecipientOutcome], reason: str | None
) -> Settlement:
    """The message after an attempt whose outcome per recipient tried is ``attempt``.

    Earlier outcomes are kept for the recipients not tried again (those accepted or refused before).
    The status: ``deferred`` while any recipient waits for a retry; else ``sent`` when every one was
    accepted, ``partial`` when some were, ``failed`` when none was. ``reason`` (the attempt's error) becomes
    the message's; for ``partial`` it says how many got the message, and why not the others.
    """
    merged = {o.address.casefold(): o for o in previous}
    merged.update((o.address.casefold(), o) for o in attempt)
    outcomes = tuple(merged.values())
    accepted = sum(o.status == "accepted" for o in outcomes)
    deferred = tuple(o.address for o in outcomes if o.status == "deferred")
    if deferred:
        return Settlement("deferred", outcomes, deferred, reason)
    if accepted == len(outcomes):
        return Settlement("sent", outcomes, (), None)
    if accepted:
        # The attempt's own error, or (when this attempt went well) what kept the others from it before.
        why = reason or next((o.reply for o in outcomes if o.status != "accepted" and o.reply), None)
        told = f"Delivered to {accepted} of {_plural(len(outcomes), 'recipient')}; not to the others"
        return Settlement("partial", outcomes, (), f"{told}: {why}" if why else f"{told}.")
    return Settlement("failed", outcomes, tuple(o.address for o in outcomes), reason)


def delivery_outcomes(
    accepted: Sequence[str], refusals: Sequence[Refusal], reply: str | None, retry: Outcome | None
) -> list[RecipientOutcome]:
    """Each recipient's outcome of an attempt that reached them: accepted (with the reply to DATA),
    refused by a 5xx, or, for a 4xx, as ``retry`` (:func:`classify` of that refusal) says: deferred, or
    failed once the retry horizon is reached.
    """
    outcomes = [RecipientOutcome(address, "accepted", reply) for address in accepted]
    for refusal in refusals:
        if refusal.permanent:
            outcomes.append(RecipientOutcome(refusal.address, "refused", refusal.reply))
        else:
            assert retry is not None, "a temporary refusal needs its retry"
            outcomes.append(RecipientOutcome(refusal.address, retry.status, refusal.reply))
    return outcomes


def recipient_states(
    shown: Sequence[str], outcomes: Sequence[RecipientOutcome] | None, message_status: str
) -> list[RecipientOutcome]:
    """The outcome of each of ``shown`` (To and Cc: never Bcc), for the API.

    A recipient without an outcome of its own (not tried yet; or the message is older than per-recipient
    outcomes) takes the message's: pending while queued or sending, else the message's status as it
    applies to one recipient.
    """
    known = {o.address.casefold(): o for o in outcomes or ()}
    fallback: RecipientStatus = _RECIPIENT_FALLBACK.get(message_status, "pending")
    states: list[RecipientOutcome] = []
    seen: set[str] = set()
    for address in shown:
        key = address.casefold()
        if key in seen:
            continue
        seen.add(key)
        outcome = known.get(key)
        if outcome is None:
            states.append(RecipientOutcome(address, fallback))
        elif outcome.status in ("accepted", "refused", fallback):
            states.append(RecipientOutcome(address, outcome.status, outcome.reply))
        else:  # not final, and the message moved on: deferred and then cancelled, failed and now retried
            states.append(RecipientOutcome(address, fallback, outcome.reply))
    return states


_RECIPIENT_FALLBACK: dict[str, RecipientStatus] = {
    "sent": "accepted",
    "partial": "failed",
    "deferred": "deferred",
    "failed": "failed",
    "cancelled": "cancelled",
}
