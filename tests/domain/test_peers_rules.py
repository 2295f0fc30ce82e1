"""When a peer dispatcher counts as dead (PeerWatch): its heartbeat count standing still while watched."""

from __future__ import annotations

from smtpsettings.domain.peers import PeerWatch


def test_a_peer_is_silent_once_its_count_stood_still_for_the_timeout() -> None:
    watch = PeerWatch(10)
    assert watch.observe({"a": 1, "b": 7}, now=0) == {}
    assert watch.observe({"a": 2, "b": 7}, now=5) == {}
    assert watch.observe({"a": 3, "b": 7}, now=9.9) == {}
    assert watch.observe({"a": 4, "b": 7}, now=10) == {"b": 7}
    assert watch.observe({"a": 4, "b": 8}, now=14.9) == {}  # b beat again: it was only slow
    assert watch.observe({"a": 4, "b": 8}, now=20) == {"a": 4}  # unchanged since 10


def test_a_reading_missed_by_the_watcher_gives_every_peer_the_full_time_again() -> None:
    watch = PeerWatch(10)
    watch.observe({"a": 1}, now=0)
    watch.forget()  # the watcher lost the database: so, most likely, did a
    assert watch.observe({"a": 1}, now=30) == {}
    assert watch.observe({"a": 1}, now=39) == {}
    assert watch.observe({"a": 1}, now=40) == {"a": 1}


def test_peers_gone_from_the_table_are_forgotten_and_a_new_one_starts_its_own_time() -> None:
    watch = PeerWatch(10)
    watch.observe({"a": 5}, now=0)
    assert watch.observe({}, now=6) == {}
    assert watch.observe({"a": 1}, now=12) == {}  # a new row (a peer that beat anew): watched from now
    assert watch.observe({"a": 1}, now=22) == {"a": 1}
