"""The operator's commands on users, keys and portals, the listings' shape, and what ``--help`` imports.

Each runs as a subprocess on a real SQLite data directory, as an operator runs it.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from serverkit import PASSWORD, Server, smtpsettings_command, start_server
from test_cli import Terminal, assert_one_line_error, migrated, ok, operator_env, run

HEAVY = ("sqlalchemy", "alembic", "granian", "litestar", "cryptography", "aiosmtpd", "psycopg", "argon2")


def rows(db: Path, query: str, *params: object) -> list[tuple[object, ...]]:
    with sqlite3.connect(db) as conn:
        return conn.execute(query, params).fetchall()


@pytest.fixture
def team(tmp_path: Path) -> Path:
    """A data directory with the portal team.test: an owner, an admin with an API key, a user."""
    data = migrated(tmp_path)
    ok(data, "portal", "create", "team.test")
    for role in ("owner", "admin", "user"):
        ok(data, "user", "create", "--portal", "team.test", "--email", f"{role}@team.test", "--role", role, "--password", PASSWORD)
    ok(data, "apikey", "create", "--portal", "team.test", "--email", "admin@team.test", "--scope", "mail.send")
    return data


# --- import graph, listings, pipes -------------------------------------------------------------------


@pytest.mark.parametrize(
    "args", [("--help",), ("--version",), ("messages", "list", "--help"), ("serve", "--help"), ("deliver", "--help")],
    ids=" ".join,
)
def test_help_and_version_import_no_database_server_or_crypto_modules(tmp_path: Path, args: tuple[str, ...]) -> None:
    code = "import sys; from smtpsettings.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
    code += "print('\\n'.join(sorted(sys.modules)), file=sys.stderr)"
    result = subprocess.run(
        [sys.executable, "-c", code, *args], env=operator_env(tmp_path), capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    loaded = {name.split(".")[0] for name in result.stderr.split()}
    assert "click" in loaded
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))


def test_listings_have_a_header_unless_asked_and_say_so_on_stderr_when_empty(team: Path) -> None:
    listed = run(team, "user", "list", "--portal", "team.test")
    assert listed.stdout.splitlines()[0] == "email\trole\tname\tdisabled"
    assert len(listed.stdout.splitlines()) == 4
    bare = run(team, "user", "list", "--portal", "team.test", "--no-header")
    assert bare.stdout.splitlines() == listed.stdout.splitlines()[1:]

    empty = run(team, "messages", "list", "--portal", "team.test")
    assert (empty.returncode, empty.stdout, empty.stderr) == (0, "", "no messages\n")


def test_a_listing_read_only_in_part_through_a_closed_pipe_ends_quietly(team: Path) -> None:
    # Many more rows than a pipe's buffer holds, so the command is still writing when head has gone.
    with sqlite3.connect(team / "smtpsettings.db") as conn:
        salt = conn.execute("SELECT password_hash_salt FROM portals LIMIT 1").fetchone()[0]
        conn.executemany(
            "INSERT INTO portals (hostname, is_default, created_at, password_hash_salt) VALUES (?, 0, '2030-01-01', ?)",
            [(f"bulk{n:05d}.test", salt) for n in range(20_000)],
        )
    command = " ".join(f"'{part}'" for part in smtpsettings_command())
    result = subprocess.run(
        ["bash", "-c", f"set -o pipefail; {command} portal list | head -1"],
        env=operator_env(team),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.stdout == "hostname\tdefault\n"
    assert "Traceback" not in result.stderr and "Broken pipe" not in result.stderr and "Exception" not in result.stderr


# --- API keys and users ------------------------------------------------------------------------------


def test_apikey_list_shows_ids_owners_scopes_and_revocations_never_the_key(team: Path) -> None:
    created = ok(team, "apikey", "create", "--portal", "team.test", "--email", "owner@team.test").splitlines()
    key_id, secret = created[0].split()[3], created[-1]
    ok(team, "apikey", "revoke", key_id)

    header, *lines = ok(team, "apikey", "list", "--portal", "team.test").splitlines()
    assert header == "id\temail\tscope\tcreated\tlast_used\trevoked"
    listed = [line.split("\t") for line in lines]
    assert [(r[1], r[2]) for r in listed] == [("admin@team.test", "mail.send"), ("owner@team.test", "all")]
    assert listed[0][5] == "-" and listed[1][0] == key_id and listed[1][5].startswith("20")
    assert [r[4] for r in listed] == ["-", "-"]  # never used
    text = "\n".join(lines)
    assert secret not in text and secret.removeprefix("sk-") not in text


def test_user_set_email_and_set_role_change_the_stored_user(team: Path) -> None:
    db = team / "smtpsettings.db"
    assert ok(team, "user", "set-email", "--portal", "team.test", "--email", "user@team.test", "--new-email", "New@Team.test")
    assert ok(team, "user", "set-role", "--portal", "team.test", "--email", "new@team.test", "--role", "admin")
    assert rows(db, "SELECT role FROM users WHERE email = 'new@team.test'") == [("admin",)]
    assert rows(db, "SELECT count(*) FROM users WHERE email = 'user@team.test'") == [(0,)]

    assert_one_line_error(
        run(team, "user", "set-email", "--portal", "team.test", "--email", "new@team.test", "--new-email", "not an email"),
        "not an email",
    )
    assert_one_line_error(
        run(team, "user", "set-email", "--portal", "team.test", "--email", "new@team.test", "--new-email", "owner@team.test"),
        "already exists",
    )


def test_the_last_owner_or_admin_keeps_the_role_and_cannot_be_deleted(tmp_path: Path) -> None:
    data = migrated(tmp_path)
    ok(data, "portal", "create", "solo.test")
    ok(data, "user", "create", "--portal", "solo.test", "--email", "boss@solo.test", "--role", "owner", "--password", PASSWORD)
    demote = run(data, "user", "set-role", "--portal", "solo.test", "--email", "boss@solo.test", "--role", "user")
    assert_one_line_error(demote, "last owner or admin")
    assert_one_line_error(run(data, "user", "delete", "--portal", "solo.test", "--email", "boss@solo.test"), "last owner or admin")
    assert rows(data / "smtpsettings.db", "SELECT role FROM users WHERE email = 'boss@solo.test'") == [("owner",)]


def test_user_delete_takes_its_sessions_and_api_keys_along(team: Path) -> None:
    db = team / "smtpsettings.db"
    admin_id = rows(db, "SELECT id FROM users WHERE email = 'admin@team.test'")[0][0]
    assert rows(db, "SELECT count(*) FROM api_keys WHERE user_id = ?", admin_id) == [(1,)]
    out = ok(team, "user", "delete", "--portal", "team.test", "--email", "admin@team.test")
    assert out.strip() == "deleted admin admin@team.test from team.test"
    assert rows(db, "SELECT count(*) FROM api_keys WHERE user_id = ?", admin_id) == [(0,)]
    assert rows(db, "SELECT count(*) FROM users WHERE id = ?", admin_id) == [(0,)]


# --- disabled users, keys' last use, wrong keys over HTTP (against a running server) -------------------

SIGN_IN = "/api/2.0/authentication"
SETTINGS = "/api/2.0/smtpsettings/smtp"


@pytest.fixture
def serving(team: Path) -> Iterator[tuple[Server, str, str]]:
    """The team directory served over HTTP, with an unscoped key of the admin's: ``(server, key_id, key)``."""
    created = ok(team, "apikey", "create", "--portal", "team.test", "--email", "admin@team.test").splitlines()
    server = start_server(team, {"SMTPSETTINGS_LOGIN_MAX_FAILURES_PER_ACCOUNT": "3"})
    try:
        yield server, created[0].split()[3], created[-1]
    finally:
        server.stop()


def http(server: Server, secret: str | None = None) -> httpx.Client:
    headers = {"Host": "team.test", **({"Authorization": f"Bearer {secret}"} if secret else {})}
    return httpx.Client(base_url=server.base_url, headers=headers, timeout=30)


def sign_in(server: Server, email: str, password: str) -> httpx.Response:
    with http(server) as client:
        return client.post(SIGN_IN, json={"userName": email, "password": password})


def keys_listed(data: Path) -> dict[str, list[str]]:
    return {line.split("\t")[0]: line.split("\t") for line in ok(data, "apikey", "list", "--portal", "team.test", "--no-header").splitlines()}


def test_a_disabled_user_cannot_sign_in_loses_its_sessions_and_keys_until_enabled(serving: tuple[Server, str, str]) -> None:
    server, _, key = serving
    data = server.data_dir
    signed_in = sign_in(server, "admin@team.test", PASSWORD)
    assert signed_in.status_code == 200, signed_in.text
    token = signed_in.json()["response"]["token"]
    with http(server, token) as by_session, http(server, key) as by_key:
        assert by_session.get(SETTINGS).status_code == 200
        assert by_key.get(SETTINGS).status_code == 200

        out = ok(data, "user", "disable", "--portal", "team.test", "--email", "admin@team.test")
        assert out.strip() == "disabled admin@team.test in team.test; ended 1 session(s)"
        assert by_session.get(SETTINGS).status_code == 401
        with http(server) as by_cookie:
            assert by_cookie.get(SETTINGS, headers={"Cookie": f"asc_auth_key={token}"}).status_code == 401
        assert by_key.get(SETTINGS).status_code == 401
        # The right password is refused exactly as a wrong one is, and counted the same way.
        right, wrong = sign_in(server, "admin@team.test", PASSWORD), sign_in(server, "admin@team.test", "wrong password")
        assert (right.status_code, right.json()) == (wrong.status_code, wrong.json()) == (401, right.json())
        assert rows(data / "smtpsettings.db", "SELECT count FROM rate_counters WHERE bucket LIKE 'login:account:%admin@team.test'") == [(2,)]
        listed = ok(data, "user", "list", "--portal", "team.test", "--no-header").splitlines()
        assert {line.split("\t")[0]: line.split("\t")[3] for line in listed} == {
            "owner@team.test": "no", "admin@team.test": "yes", "user@team.test": "no",
        }  # fmt: skip

        assert ok(data, "user", "enable", "--portal", "team.test", "--email", "admin@team.test").strip() == (
            "enabled admin@team.test in team.test"
        )
        assert by_key.get(SETTINGS).status_code == 200
        assert by_session.get(SETTINGS).status_code == 401  # ended for good
    assert sign_in(server, "admin@team.test", PASSWORD).status_code == 200


def test_the_last_enabled_owner_is_not_disabled(team: Path) -> None:
    refused = run(team, "user", "disable", "--portal", "team.test", "--email", "owner@team.test")
    assert_one_line_error(refused, "last enabled owner")
    assert rows(team / "smtpsettings.db", "SELECT disabled FROM users WHERE email = 'owner@team.test'") == [(0,)]
    # With a second owner enabled, the first may be disabled; then the second is the last.
    ok(team, "user", "create", "--portal", "team.test", "--email", "owner2@team.test", "--role", "owner", "--password", PASSWORD)
    ok(team, "user", "disable", "--portal", "team.test", "--email", "owner@team.test")
    assert_one_line_error(run(team, "user", "disable", "--portal", "team.test", "--email", "owner2@team.test"), "last enabled owner")
    assert_one_line_error(run(team, "user", "disable", "--portal", "team.test", "--email", "nobody@team.test"), "no user")


def test_apikey_list_shows_when_a_key_last_authenticated_over_http(serving: tuple[Server, str, str]) -> None:
    server, key_id, key = serving
    before = keys_listed(server.data_dir)
    assert before[key_id][4] == "-"
    with http(server, key) as client:
        for _ in range(3):
            assert client.get(SETTINGS).status_code == 200
    after = keys_listed(server.data_dir)
    used = datetime.fromisoformat(after[key_id][4])
    assert abs((datetime.now(UTC) - used.replace(tzinfo=used.tzinfo or UTC)).total_seconds()) < 60
    assert {k: v[4] for k, v in after.items() if k != key_id} == {k: "-" for k in after if k != key_id}
    # Written once for the three requests (at most once a minute per key), not once per request.
    first = rows(server.db_path, "SELECT last_used_at FROM api_keys WHERE id = ?", key_id)
    with http(server, key) as client:
        assert client.get(SETTINGS).status_code == 200
    assert rows(server.db_path, "SELECT last_used_at FROM api_keys WHERE id = ?", key_id) == first


def test_a_wrong_bearer_key_counts_against_its_key_id_and_shows_in_lockout_list(serving: tuple[Server, str, str]) -> None:
    server, key_id, key = serving
    wrong = key[:-1] + ("A" if key[-1] != "A" else "B")
    with http(server, wrong) as client:
        statuses = [client.get(SETTINGS).status_code for _ in range(4)]
    assert statuses == [401, 401, 401, 429]  # the limit (3 here) used up: refused as too many
    with http(server, "sk-000000000000.made-up") as client:
        assert client.get(SETTINGS).status_code == 401  # no such key: not counted
    listed = run(server.data_dir, "lockout", "list", "--no-header", SMTPSETTINGS_LOGIN_MAX_FAILURES_PER_ACCOUNT="3").stdout
    assert [line.split("\t")[:3] + line.split("\t")[4:] for line in listed.splitlines()] == [["http-key", key_id, "4", "yes"]]
    assert wrong.split(".")[1] not in listed
    with http(server, key) as client:
        assert client.get(SETTINGS).status_code == 429  # locked: the right key too, until the lock is lifted
    cleared = ok(server.data_dir, "lockout", "clear", "--key", key_id, "--no-header")
    assert cleared.split("\t")[:2] == ["http-key", key_id]
    deadline = time.monotonic() + 10  # a worker reads the locked keys again within 2 s
    with http(server, key) as client:
        while (status := client.get(SETTINGS).status_code) != 200:
            assert status == 429 and time.monotonic() < deadline, status
            time.sleep(0.2)


# --- portal delete -----------------------------------------------------------------------------------


def test_portal_delete_without_a_terminal_needs_yes_and_then_deletes_everything_of_it(team: Path) -> None:
    db = team / "smtpsettings.db"
    ok(team, "portal", "create", "other.test")
    # Not a terminal: without --yes it refuses rather than read answers from a pipe.
    refused = run(team, "portal", "delete", "team.test")
    assert_one_line_error(refused, "--yes")
    assert "3 user(s)" in refused.stdout and "1 API key(s)" in refused.stdout
    assert rows(db, "SELECT count(*) FROM portals WHERE hostname = 'team.test'") == [(1,)]

    assert ok(team, "portal", "delete", "team.test", "--yes").splitlines()[-1] == "deleted portal team.test"
    assert rows(db, "SELECT hostname FROM portals") == [("other.test",)]
    assert rows(db, "SELECT count(*) FROM users") == [(0,)]
    assert rows(db, "SELECT count(*) FROM api_keys") == [(0,)]


@pytest.mark.parametrize(
    ("answer", "typed", "deleted"),
    [("y", "team.test", True), ("n", None, False), ("y", "team.tes", False)],
    ids=["both-answered", "no", "host-mistyped"],
)
def test_portal_delete_on_a_terminal_asks_twice(team: Path, answer: str, typed: str | None, deleted: bool) -> None:
    db = team / "smtpsettings.db"
    ok(team, "portal", "create", "other.test")
    terminal = Terminal([*smtpsettings_command(), "portal", "delete", "team.test"], operator_env(team))
    terminal.expect("3 user(s)")
    terminal.expect("Delete portal team.test and all of the above? [y/N]")
    terminal.type(answer)
    if typed is not None:
        terminal.expect("Type the host name to confirm")
        terminal.type(typed)
    assert terminal.finish() == (0 if deleted else 1)
    left = rows(db, "SELECT hostname FROM portals ORDER BY hostname")
    assert left == ([("other.test",)] if deleted else [("other.test",), ("team.test",)])
    assert (b"deleted portal team.test" in terminal.transcript) is deleted


def test_the_only_portal_is_not_deleted(tmp_path: Path) -> None:
    data = migrated(tmp_path)
    ok(data, "portal", "create", "only.test")
    refused = run(data, "portal", "delete", "only.test")  # before any question
    assert_one_line_error(refused, "only portal")
    assert refused.stdout == ""
    assert ok(data, "portal", "list", "--no-header").strip() == "only.test\t-"
