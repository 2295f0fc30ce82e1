"""Instances with data directories of their own on one PostgreSQL database: the key ring goes with the data.

The database records which keys its secrets use; an instance whose ring lacks one refuses to start, saying
what to copy, and ``keys export`` / ``keys import`` carry the ring across. Once it has the ring, a save
through the second instance of a secret stored through the first works.
"""

from __future__ import annotations

import json
import stat
from pathlib import Path

import psycopg
import pytest
from pgcluster import PgCluster
from serverkit import VALID_SETTINGS, Server, free_port, make_portal, start_server
from test_cli import assert_one_line_error, run

from smtpsettings.crypto import KeyRing
from smtpsettings.domain.accounts import Role

SETTINGS = "/api/2.0/smtpsettings/smtp"


def ring_ids(data_dir: Path) -> list[str]:
    return [k["id"] for k in json.loads((data_dir / "keys.json").read_text())["keys"]]


def refused_start(data_dir: Path, url: str) -> str:
    """The one line a ``serve`` that must not start writes; the test fails if it serves instead."""
    result = run(data_dir, "serve", "--port", str(free_port()), timeout=60, SMTPSETTINGS_DATABASE_URL=url)
    assert_one_line_error(result)
    assert "listening" not in result.stdout
    return result.stderr.strip()


def cli(data_dir: Path, url: str, *args: str) -> str:
    result = run(data_dir, *args, SMTPSETTINGS_DATABASE_URL=url)
    assert result.returncode == 0, result.stderr
    return result.stdout


def copy_ring(url: str, source: Path, target: Path, via: Path) -> str:
    """``keys export`` on ``source``'s instance, ``keys import`` on ``target``'s, as the docs say; what import said."""
    cli(source, url, "keys", "export", str(via))
    return cli(target, url, "keys", "import", str(via))


def starts(data_dir: Path, url: str) -> None:
    start_server(data_dir, {"SMTPSETTINGS_DATABASE_URL": url}).stop()


@pytest.fixture
def shared(pg_cluster: PgCluster, tmp_path: Path) -> tuple[str, Path]:
    return pg_cluster.create_database(), tmp_path


def test_an_instance_without_the_ring_refuses_to_start_and_starts_once_it_is_imported(shared: tuple[str, Path]) -> None:
    url, base = shared
    a = start_server(base / "a", {"SMTPSETTINGS_DATABASE_URL": url})
    b: Server | None = None
    try:
        (key_a,) = ring_ids(a.data_dir)
        line = refused_start(base / "b", url)
        assert f"there is no key ring at {base / 'b' / 'keys.json'}" in line
        assert key_a in line and "smtpsettings keys export FILE" in line and "smtpsettings keys import FILE" in line
        assert not (base / "b" / "keys.json").exists()  # no useless ring of its own left in the way

        exported = base / "moved.json"
        out = cli(a.data_dir, url, "keys", "export", str(exported))
        assert key_a in out
        assert stat.S_IMODE(exported.stat().st_mode) == 0o600
        ring = json.loads((a.data_dir / "keys.json").read_text())
        assert ring["keys"][0]["key"] not in out  # the command says which keys, never the keys
        cli(base / "b", url, "keys", "import", str(exported))
        assert stat.S_IMODE((base / "b" / "keys.json").stat().st_mode) == 0o600

        b = start_server(base / "b", {"SMTPSETTINGS_DATABASE_URL": url})
        portal = make_portal(a)
        with portal.client(Role.ADMIN) as through_a:
            assert through_a.post(SETTINGS, json=VALID_SETTINGS).status_code == 200
        portal.server = b
        without_password = {k: v for k, v in VALID_SETTINGS.items() if k != "credentialsUserPassword"}
        with portal.client(Role.ADMIN) as through_b:
            r = through_b.post(SETTINGS, json={**without_password, "senderDisplayName": "Saved through B"})
            assert r.status_code == 200, r.text
    finally:
        a.stop()
        if b is not None:
            b.stop()


def test_a_ring_of_its_own_is_refused_naming_the_missing_key_and_the_refusal_records_nothing(shared: tuple[str, Path]) -> None:
    url, base = shared
    starts(base / "a", url)
    (key_a,) = ring_ids(base / "a")
    # B was given a ring of its own (say, by starting it once on another database).
    cli(base / "b", "sqlite:///" + str(base / "b-own.db"), "migrate")
    starts(base / "b", "sqlite:///" + str(base / "b-own.db"))
    (key_b,) = ring_ids(base / "b")
    line = refused_start(base / "b", url)
    assert f"the key ring {base / 'b' / 'keys.json'} lacks key(s) {key_a} that the database's secrets use" in line
    # B's key was not recorded: A, which lacks it, still starts.
    with psycopg.connect(url) as conn:
        assert key_b not in [r[0] for r in conn.execute("SELECT key_id FROM encryption_keys")]
    starts(base / "a", url)
    said = copy_ring(url, base / "a", base / "b", base / "moved.json")
    assert said.startswith(f"imported 1 key(s) into {base / 'b' / 'keys.json'}: {key_a}")
    assert ring_ids(base / "b") == [key_b, key_a]  # A's key is now B's primary: what B writes, A reads
    starts(base / "b", url)


def test_after_a_rotation_an_instance_with_the_old_ring_refuses_until_it_imports_the_new_one(shared: tuple[str, Path]) -> None:
    url, base = shared
    a = start_server(base / "a", {"SMTPSETTINGS_DATABASE_URL": url})
    try:
        copy_ring(url, a.data_dir, base / "b", base / "first.json")
        starts(base / "b", url)
        cli(a.data_dir, url, "keys", "rotate")
        new_key = ring_ids(a.data_dir)[-1]
        assert f"lacks key(s) {new_key}" in refused_start(base / "b", url)
        assert copy_ring(url, a.data_dir, base / "b", base / "second.json").strip().endswith(new_key)
        starts(base / "b", url)
    finally:
        a.stop()


def test_a_key_added_to_a_ring_by_hand_is_recorded_by_the_first_save_under_it(shared: tuple[str, Path]) -> None:
    url, base = shared
    a = start_server(base / "a", {"SMTPSETTINGS_DATABASE_URL": url})
    try:
        copy_ring(url, a.data_dir, base / "b", base / "before.json")  # B has the ring as it was
        added = KeyRing(a.data_dir / "keys.json").add_key()  # not `keys rotate`: the database is not told
        assert added not in [r[0] for r in a.query("SELECT key_id FROM encryption_keys")]
        portal = make_portal(a)
        with portal.client(Role.ADMIN) as c:
            assert c.post(SETTINGS, json=VALID_SETTINGS).status_code == 200
        assert added in [r[0] for r in a.query("SELECT key_id FROM encryption_keys")]
    finally:
        a.stop()
    # So B, lacking it, is refused at start instead of failing on the password saved under it.
    assert f"lacks key(s) {added}" in refused_start(base / "b", url)
