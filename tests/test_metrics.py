"""Prometheus metrics: the recording functions, multiprocess mode across forked workers, and a real server's /metrics."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from serverkit import start_server
from smtpsettings import metrics

STATUSES = ("queued", "sending", "sent", "deferred", "failed", "cancelled")
COUNTERS = ("smtpsettings_outbox_sent", "smtpsettings_outbox_deferred", "smtpsettings_outbox_failed")


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of an exposition by (name, sorted labels); parsing it is also the format's check."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def families(text: str) -> dict[str, str]:
    return {f.name: f.type for f in text_string_to_metric_families(text)}


def value(text: str, name: str, **labels: str) -> float:
    return samples(text)[(name, tuple(sorted(labels.items())))]


@pytest.mark.parametrize(
    ("code", "expected"),
    [(250, "2xx"), (354, "3xx"), (421, "4xx"), (451, "4xx"), (550, "5xx"), (599, "5xx"), (None, "none"), (0, "none"), (999, "none")],
)
def test_reply_codes_fall_into_five_classes(code: int | None, expected: str) -> None:
    assert metrics.reply_class(code) == expected


def test_recorded_outcomes_show_in_the_exposition_of_one_process() -> None:
    before, _ = metrics.exposition(None)
    metrics.record_sent(0.2)
    metrics.record_sent(7200.0)
    metrics.record_deferred()
    metrics.record_failed()
    metrics.record_reply(250)
    metrics.record_reply(550)
    metrics.record_reply(None)
    body, content_type = metrics.exposition({s: i for i, s in enumerate(STATUSES)})
    old, new = before.decode(), body.decode()

    assert content_type.startswith("text/plain; version=0.0.4")
    delta = {k: v - samples(old).get(k, 0.0) for k, v in samples(new).items()}
    assert delta[("smtpsettings_outbox_sent_total", ())] == 2
    assert delta[("smtpsettings_outbox_deferred_total", ())] == 1
    assert delta[("smtpsettings_outbox_failed_total", ())] == 1
    assert {c: delta[("smtpsettings_smtp_replies_total", (("class", c),))] for c in metrics.REPLY_CLASSES} == {
        "2xx": 1, "3xx": 0, "4xx": 0, "5xx": 1, "none": 1
    }
    assert delta[("smtpsettings_outbox_delivery_seconds_count", ())] == 2
    assert delta[("smtpsettings_outbox_delivery_seconds_bucket", (("le", "0.25"),))] == 1
    assert delta[("smtpsettings_outbox_delivery_seconds_bucket", (("le", "3600.0"),))] == 1
    assert delta[("smtpsettings_outbox_delivery_seconds_bucket", (("le", "7200.0"),))] == 2
    assert {s: value(new, "smtpsettings_outbox_messages", status=s) for s in STATUSES} == {s: i for i, s in enumerate(STATUSES)}
    assert value(new, "smtpsettings_database_up") == 1


def test_without_the_database_the_queue_gauge_is_left_out_and_database_up_is_0() -> None:
    body = metrics.exposition(None)[0].decode()
    assert value(body, "smtpsettings_database_up") == 0
    assert "smtpsettings_outbox_messages" not in families(body)
    assert "smtpsettings_outbox_sent" in families(body)  # the counters still answer


def test_openmetrics_is_answered_to_a_scraper_that_asks_for_it() -> None:
    body, content_type = metrics.exposition({}, "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5")
    assert content_type.startswith("application/openmetrics-text; version=1.0.0")
    assert body.endswith(b"# EOF\n")


# What `serve` does: prometheus_client is imported, the directory set up, then the workers forked.
_FORKED_WORKERS = textwrap.dedent(
    """
    import os, sys
    from pathlib import Path
    from smtpsettings import metrics

    metrics.use_multiprocess_dir(Path(sys.argv[1]))
    children = []
    for worker in range(2):
        pid = os.fork()
        if pid == 0:
            metrics.record_sent(0.2)
            metrics.record_reply(250)
            if worker:
                metrics.record_deferred()
                metrics.record_reply(451)
            os._exit(0)
        children.append(pid)
    for pid in children:
        assert os.waitpid(pid, 0)[1] == 0
    sys.stdout.write(metrics.exposition({"queued": 3})[0].decode())
    """
)


def test_counters_recorded_in_forked_workers_add_up(tmp_path: Path) -> None:
    directory = tmp_path / "metrics"
    directory.mkdir()
    (directory / "counter_1.db").write_bytes(b"left by an earlier run")  # emptied at start
    env = {k: v for k, v in os.environ.items() if k != metrics.MULTIPROC_ENV}
    result = subprocess.run(
        [sys.executable, "-c", _FORKED_WORKERS, str(directory)], check=False, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    body = result.stdout
    assert value(body, "smtpsettings_outbox_sent_total") == 2
    assert value(body, "smtpsettings_outbox_deferred_total") == 1
    assert value(body, "smtpsettings_outbox_failed_total") == 0
    assert value(body, "smtpsettings_smtp_replies_total", **{"class": "2xx"}) == 2
    assert value(body, "smtpsettings_smtp_replies_total", **{"class": "4xx"}) == 1
    assert value(body, "smtpsettings_outbox_delivery_seconds_count") == 2
    assert value(body, "smtpsettings_outbox_delivery_seconds_sum") == pytest.approx(0.4)
    assert value(body, "smtpsettings_outbox_messages", status="queued") == 3
    # one file per process that recorded (and the scraping parent's own, at zero)
    assert len(list(directory.glob("counter_*.db"))) == 3
    assert not (directory / "counter_1.db").exists()


def test_a_served_metrics_page_from_two_workers(tmp_path: Path) -> None:
    data = tmp_path / "data"
    stale = data / "metrics"
    stale.mkdir(parents=True)
    # Counts a previous run left: recorded for real, in multiprocess mode, by a process now gone.
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("SMTPSETTINGS_")}, metrics.MULTIPROC_ENV: str(stale)}
    subprocess.run(
        [sys.executable, "-c", "from smtpsettings import metrics; [metrics.record_failed() for _ in range(5)]"],
        env=env, check=True, timeout=60,
    )
    old_files = {p.name for p in stale.glob("counter_*.db")}
    assert old_files

    server = start_server(data, workers=2)
    try:
        bodies = []
        for _ in range(12):  # new connections, so both workers are likely to answer some
            with httpx.Client(base_url=server.base_url, timeout=10) as c:
                r = c.get("/metrics", headers={"Accept": "text/html"})  # not the JSON API's negotiation
                assert r.status_code == 200
                assert r.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
                bodies.append(r.text)
    finally:
        server.stop()

    for body in bodies:
        types = families(body)
        assert {name: types.get(name) for name in COUNTERS} == dict.fromkeys(COUNTERS, "counter")
        assert types.get("smtpsettings_smtp_replies") == "counter"
        assert types.get("smtpsettings_outbox_delivery_seconds") == "histogram"
        assert types.get("smtpsettings_outbox_messages") == "gauge"
        assert value(body, "smtpsettings_outbox_failed_total") == 0  # the previous run's 5 are gone
        assert all(value(body, "smtpsettings_smtp_replies_total", **{"class": c}) == 0 for c in metrics.REPLY_CLASSES)
        assert value(body, "smtpsettings_outbox_delivery_seconds_count") == 0
        assert {s: value(body, "smtpsettings_outbox_messages", status=s) for s in STATUSES} == dict.fromkeys(STATUSES, 0)
        assert value(body, "smtpsettings_database_up") == 1
    # the processes write to the directory serve made: one counter file per worker that answered, and the
    # delivery process's
    written = {p.name for p in stale.glob("counter_*.db")}
    assert 1 <= len(written) <= 3 and not written & old_files
    assert stale.stat().st_mode & 0o777 == 0o700
