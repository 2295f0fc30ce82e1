"""``smtpsettings backup DIR``: a consistent online copy that is itself a data directory, private from the start."""

from __future__ import annotations

import sqlite3
import subprocess
import threading
from pathlib import Path

from pgcluster import PgCluster
from serverkit import VALID_SETTINGS, make_portal, start_server
from test_cli import assert_one_line_error, migrated, mode, ok, run

from smtpsettings.domain.accounts import Role

SETTINGS = "/api/2.0/smtpsettings/smtp"


def test_a_backup_taken_while_the_server_saves_restores_the_settings_and_their_password(tmp_path: Path) -> None:
    server = start_server(tmp_path / "data")
    restored = None
    try:
        portal = make_portal(server)
        with portal.client(Role.ADMIN) as c:
            assert c.post(SETTINGS, json=VALID_SETTINGS).status_code == 200
        stop = threading.Event()
        saving = threading.Event()
        saves: list[int] = []

        def keep_saving() -> None:
            with portal.client(Role.ADMIN) as c:
                while not stop.is_set():
                    saves.append(c.post(SETTINGS, json={**VALID_SETTINGS, "port": 2000 + len(saves) % 1000}).status_code)
                    saving.set()

        writer = threading.Thread(target=keep_saving)
        writer.start()
        try:
            # Saves under way before the backup starts: a quick backup could otherwise end before the first.
            assert saving.wait(30), "the server answered no save"
            backup = tmp_path / "backup"
            result = run(server.data_dir, "backup", str(backup))
        finally:
            stop.set()
            writer.join(30)
        assert result.returncode == 0, result.stderr
        assert saves and set(saves) == {200}  # the server kept saving during the backup
        assert mode(backup) == 0o700
        assert sorted(p.name for p in backup.iterdir()) == ["keys.json", "smtpsettings.db"]
        assert all(mode(p) == 0o600 for p in backup.iterdir())
        assert not list(tmp_path.glob(".backup.partial-*"))
        with sqlite3.connect(backup / "smtpsettings.db") as conn:
            assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    finally:
        server.stop()
    # Restored as docs/deployment.md says (cp -a into place), the backup is a data directory: a server starts
    # on it with the portal, its settings and the password.
    new_host = tmp_path / "new-host" / "smtpsettings"
    new_host.parent.mkdir()
    subprocess.run(["cp", "-a", str(backup), str(new_host)], check=True)
    restored = start_server(new_host)
    try:
        portal.server = restored
        with portal.client(Role.ADMIN) as c:
            got = c.get(SETTINGS).json()["response"]
            assert got["host"] == VALID_SETTINGS["host"] and got["isDefaultSettings"] is False
            kept = {k: v for k, v in VALID_SETTINGS.items() if k != "credentialsUserPassword"}
            # Kept (same server, port and user): the restored server decrypts the stored password.
            r = c.post(SETTINGS, json={**kept, "port": got["port"], "senderDisplayName": "Restored"})
            assert r.status_code == 200, r.text
    finally:
        restored.stop()


def test_a_backup_into_an_existing_directory_is_refused_and_touches_nothing(tmp_path: Path) -> None:
    data = migrated(tmp_path)
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "other.txt").write_text("kept")
    assert_one_line_error(run(data, "backup", str(taken)), f"{taken} exists already")
    assert [p.name for p in taken.iterdir()] == ["other.txt"]


def test_a_backup_into_a_missing_parent_is_refused(tmp_path: Path) -> None:
    data = migrated(tmp_path)
    assert_one_line_error(run(data, "backup", str(tmp_path / "no" / "such")), f"the directory {tmp_path / 'no'} does not exist")


def test_a_backup_of_a_fresh_database_starts_a_server(tmp_path: Path) -> None:
    data = migrated(tmp_path)
    assert f"to {tmp_path / 'copy'}" in ok(data, "backup", str(tmp_path / "copy"))
    assert (tmp_path / "copy" / "smtpsettings.db").is_file()
    server = start_server(tmp_path / "copy")
    server.stop()


def test_a_backup_on_postgresql_is_refused_naming_pg_dump(pg_cluster: PgCluster, tmp_path: Path) -> None:
    url = pg_cluster.create_database()
    assert run(tmp_path / "data", "migrate", SMTPSETTINGS_DATABASE_URL=url).returncode == 0
    result = run(tmp_path / "data", "backup", str(tmp_path / "backup"), SMTPSETTINGS_DATABASE_URL=url)
    assert_one_line_error(result, "pg_dump", "keys export")
    assert not (tmp_path / "backup").exists()
