"""Prometheus metrics of the outbox: counters the dispatcher records, and the exposition ``/metrics`` serves.

Counters and the histogram live in each process. Under ``smtpsettings serve`` every granian worker is a
process of its own, so they use prometheus_client's multiprocess mode: each worker writes its values to
memory-mapped files in ``PROMETHEUS_MULTIPROC_DIR`` (which ``serve`` empties and exports before the workers
start, :func:`use_multiprocess_dir`), and whichever worker answers a scrape adds up the files of all of them.
Without that variable (an app built in-process, as the tests do) they are plain per-process values.

The queue depth is not counted here at all: it is read from the database at scrape time, so every worker
and every instance reports the same numbers and nothing drifts after a crash. Label values are a fixed,
small set: no recipient, portal or message ever becomes a label.
"""

from __future__ import annotations

import functools
import os
import shutil
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

from prometheus_client import values
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics import Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import CollectorRegistry

__all__ = (
    "DELIVERY_BUCKETS",
    "MULTIPROC_ENV",
    "REPLY_CLASSES",
    "exposition",
    "record_connection_opened",
    "record_deferred",
    "record_failed",
    "record_reply",
    "record_sent",
    "record_settings_read",
    "set_destinations_unavailable",
    "use_multiprocess_dir",
)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
REPLY_CLASSES = ("2xx", "3xx", "4xx", "5xx", "none")
DELIVERY_BUCKETS = (
    0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 4 * 3600, 8 * 3600, 12 * 3600, 24 * 3600,
)
"""Seconds from acceptance to sent: a loopback sink's tens of milliseconds up to the 24 h retry horizon."""


def use_multiprocess_dir(path: Path) -> None:
    """Make ``path`` an empty directory and put this process and its future children in multiprocess mode.

    Called by ``serve`` before granian starts its workers. The files of a previous run are removed: their
    counts belong to processes that are gone, and a counter that starts at zero with the server is what
    Prometheus expects after a restart. Workers are forked, so they inherit both the variable and
    prometheus_client's choice of value class, which it makes when it is first imported: should it have been
    imported before the variable was set, that choice is corrected here.
    """
    if path.is_symlink() or path.exists():
        shutil.rmtree(path)
    path.mkdir(mode=0o700, parents=True)
    os.environ[MULTIPROC_ENV] = str(path)
    if values.ValueClass is values.MutexValue:
        values.ValueClass = values.MultiProcessValue()
    _metrics.cache_clear()


class _Metrics:
    """The process's counters; built on first use, once the mode (multiprocess or not) is settled."""

    def __init__(self) -> None:
        multiprocess = bool(os.environ.get(MULTIPROC_ENV))
        if multiprocess and values.ValueClass is values.MutexValue:
            # prometheus_client was imported before the variable was set (see use_multiprocess_dir).
            values.ValueClass = values.MultiProcessValue()
        # Multiprocess mode has no ``_created`` series; without them both modes expose the same families.
        disable_created_metrics()
        # In multiprocess mode the values are read back from the files, never from a registry of objects.
        self.registry = None if multiprocess else CollectorRegistry(auto_describe=True)
        registry = self.registry
        self.sent = Counter(
            "smtpsettings_outbox_sent", "Messages the mail server accepted.", registry=registry
        )
        self.deferred = Counter(
            "smtpsettings_outbox_deferred", "Send attempts that failed temporarily; the message is retried.", registry=registry
        )
        self.failed = Counter(
            "smtpsettings_outbox_failed", "Messages given up on (a permanent refusal or the retry horizon).", registry=registry
        )
        self.replies = Counter(
            "smtpsettings_smtp_replies",
            "Outcomes of send attempts by SMTP reply class; none: no reply (connection, TLS or timeout).",
            ["class"],
            registry=registry,
        )
        # Every class shows, at zero, from the start; the children are kept, as labels() looks them up under a lock.
        self.reply_classes = {reply_class: self.replies.labels(reply_class) for reply_class in REPLY_CLASSES}
        self.delivery = Histogram(
            "smtpsettings_outbox_delivery_seconds",
            "Seconds from a message's acceptance to the mail server accepting it.",
            buckets=DELIVERY_BUCKETS,
            registry=registry,
        )
        # Set by the one worker that dispatches; "mostrecent" so that a worker taking over from one that
        # died replaces its value rather than adding to it.
        self.unavailable = Gauge(
            "smtpsettings_outbox_destinations_unavailable",
            "Portals' mail servers in back-off after failed connections (a count; which ones is in the log).",
            multiprocess_mode="mostrecent",
            registry=registry,
        )
        # What grows with the number of portals sending: reads and connections per message would show here.
        self.settings_reads = Counter(
            "smtpsettings_outbox_settings_reads",
            "Reads of a portal's SMTP settings for sending (at most one a second per portal sending).",
            registry=registry,
        )
        self.connections_opened = Counter(
            "smtpsettings_outbox_connections_opened",
            "SMTP connections the dispatcher opened (a connection reused for further messages counts once).",
            registry=registry,
        )
        self.token_cache = Gauge(
            "smtpsettings_outbox_token_cache_entries",
            "OAuth 2.0 access tokens the dispatching worker holds, as of the last connection it opened.",
            multiprocess_mode="mostrecent",
            registry=registry,
        )


@functools.cache
def _metrics() -> _Metrics:
    return _Metrics()


def record_sent(latency_seconds: float) -> None:
    """A message was accepted by the mail server, ``latency_seconds`` after it was accepted by us."""
    m = _metrics()
    m.sent.inc()
    m.delivery.observe(max(0.0, latency_seconds))


def record_deferred() -> None:
    """An attempt failed temporarily and the message waits for another."""
    _metrics().deferred.inc()


def record_failed() -> None:
    """A message failed for good."""
    _metrics().failed.inc()


def set_destinations_unavailable(count: int) -> None:
    """How many destinations the dispatcher holds in back-off now."""
    _metrics().unavailable.set(count)


def record_settings_read() -> None:
    """The dispatcher read a portal's settings to send with them."""
    _metrics().settings_reads.inc()


def record_connection_opened(token_cache_entries: int) -> None:
    """The dispatcher opened an SMTP connection; its token cache then held ``token_cache_entries`` tokens."""
    m = _metrics()
    m.connections_opened.inc()
    m.token_cache.set(token_cache_entries)


def record_reply(code: int | None) -> None:
    """The outcome of one send attempt: the server's final reply code, or None when there was no reply."""
    _metrics().reply_classes[reply_class(code)].inc()


def reply_class(code: int | None) -> str:
    if code is not None and 200 <= code < 600:
        return f"{code // 100}xx"
    return "none"  # also a code outside SMTP's range: the label set stays bounded


class _Collected:
    """Anything with ``collect()``, as prometheus_client's encoders take it."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        yield from self._families


def _queue_families(queue: Mapping[str, int] | None) -> list[Metric]:
    up = GaugeMetricFamily("smtpsettings_database_up", "1 when the last scrape could read the database, else 0.")
    up.add_metric([], 0 if queue is None else 1)
    if queue is None:
        return [up]
    depth = GaugeMetricFamily(
        "smtpsettings_outbox_messages", "Messages in the outbox by status, read from the database.", labels=["status"]
    )
    for status, count in queue.items():
        depth.add_metric([status], count)
    return [depth, up]


def exposition(queue: Mapping[str, int] | None, accept: str | None = None) -> tuple[bytes, str]:
    """The scrape's body and its Content-Type.

    ``queue`` is the count of messages by status, or None when the database could not be read: then the
    gauge is left out (rather than reporting a false zero) and ``smtpsettings_database_up`` is 0. ``accept``
    is the scraper's Accept header: OpenMetrics when it asks for it, else the classic text format.
    """
    m = _metrics()  # this worker's counters exist (at zero) even before it has recorded anything
    directory = os.environ.get(MULTIPROC_ENV)
    if directory:
        counters: CollectorRegistry = CollectorRegistry()
        MultiProcessCollector(counters, directory)
    else:
        assert m.registry is not None
        counters = m.registry
    families = [*counters.collect(), *_queue_families(queue)]
    encode, content_type = choose_encoder(accept or "")
    return encode(_Collected(families)), content_type  # type: ignore[arg-type]
