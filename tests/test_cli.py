"""The ``smtpsettings`` command as an operator runs it: a subprocess with its environment, on real data dirs."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from serverkit import PASSWORD, VALID_SETTINGS, Portal, Server, smtpsettings_command, start_server

from smtpsettings.crypto import KeyRing
from smtpsettings.services.smtp import password_purpose

SMTP = "/api/2.0/smtpsettings/smtp"


def operator_env(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMTPSETTINGS_")}
    env["SMTPSETTINGS_DATA_DIR"] = str(data_dir)
    env.update(extra)
    return env


def run(data_dir: Path, *args: str, timeout: float = 60, **extra_env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*smtpsettings_command(), *args], env=operator_env(data_dir, **extra_env), capture_output=True, text=True, timeout=timeout
    )


def ok(data_dir: Path, *args: str) -> str:
    result = run(data_dir, *args)
    assert result.returncode == 0, f"smtpsettings {' '.join(args)}: {result.stderr}"
    assert "Traceback" not in result.stderr
    return result.stdout


def assert_one_line_error(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr
    assert "Traceback" not in result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def ciphertext_of(db_path: Path, hostname: str) -> str:
    with sqlite3.connect(db_path) as conn:
        row = conn.execute(
            "SELECT s.password_ciphertext FROM smtp_settings s JOIN portals p ON p.id = s.portal_id WHERE p.hostname = ?",
            (hostname,),
        ).fetchone()
    assert row is not None and row[0], f"no stored password for {hostname}"
    return str(row[0])


def portal_id_of(db_path: Path, hostname: str) -> int:
    with sqlite3.connect(db_path) as conn:
        row = conn.execute("SELECT id FROM portals WHERE hostname = ?", (hostname,)).fetchone()
    return int(row[0])


def key_ids(key_file: Path) -> list[str]:
    return [k["id"] for k in json.loads(key_file.read_text())["keys"]]


def bearer_client(server: Server, hostname: str, secret: str) -> httpx.Client:
    return httpx.Client(base_url=server.base_url, headers={"Host": hostname, "Authorization": f"Bearer {secret}"}, timeout=30)


def create_api_key(server: Server, hostname: str, email: str) -> tuple[str, str]:
    out = server.cli("apikey", "create", "--portal", hostname, "--email", email).stdout
    lines = out.strip().splitlines()
    key = lines[-1]
    match = re.search(r"\bkey_[A-Za-z0-9_-]+", out)
    assert match, out
    return match.group(0), key


# --- every subcommand works on a fresh data directory -----------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ("migrate",),
        ("portal", "list"),
        ("portal", "create", "fresh.test"),
        ("keys", "rotate"),
    ],
    ids=lambda a: " ".join(a),
)
def test_subcommand_on_a_fresh_data_dir_creates_the_database_and_succeeds(tmp_path: Path, args: tuple[str, ...]) -> None:
    data = tmp_path / "data"
    ok(data, *args)
    assert (data / "smtpsettings.db").is_file()
    with sqlite3.connect(data / "smtpsettings.db") as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"portals", "smtp_settings", "audit_log"} <= tables


@pytest.mark.parametrize(
    "args",
    [
        ("user", "list", "--portal", "nowhere.test"),
        ("user", "create", "--portal", "nowhere.test", "--email", "a@nowhere.test", "--password", PASSWORD, "--role", "admin"),
        ("apikey", "create", "--portal", "nowhere.test", "--email", "a@nowhere.test"),
        ("apikey", "revoke", "key_doesnotexist"),
        ("audit", "--portal", "nowhere.test"),
    ],
    ids=lambda a: " ".join(a[:2]),
)
def test_subcommand_needing_a_missing_portal_or_key_on_a_fresh_data_dir_fails_in_one_line(
    tmp_path: Path, args: tuple[str, ...]
) -> None:
    data = tmp_path / "data"
    result = run(data, *args)
    assert_one_line_error(result, "error:")
    assert (data / "smtpsettings.db").is_file()


def test_fresh_data_dir_is_private_and_so_are_the_database_and_key_ring(tmp_path: Path) -> None:
    data = tmp_path / "nested" / "data"
    ok(data, "keys", "rotate")
    assert mode(data) == 0o700
    assert mode(data / "smtpsettings.db") == 0o600
    assert mode(data / "keys.json") == 0o600


def test_migrate_twice_in_a_row_succeeds_both_times(tmp_path: Path) -> None:
    data = tmp_path / "data"
    assert "up to date" in ok(data, "migrate")
    assert "up to date" in ok(data, "migrate")


def test_migrate_keeps_existing_data(tmp_path: Path) -> None:
    data = tmp_path / "data"
    ok(data, "portal", "create", "kept.test")
    ok(data, "migrate")
    assert "kept.test" in ok(data, "portal", "list")


# --- configuration errors ------------------------------------------------------------------------


@pytest.mark.parametrize("args", [("migrate",), ("portal", "list"), ("serve",)], ids=lambda a: " ".join(a))
def test_a_non_numeric_port_is_a_one_line_error_naming_the_variable(tmp_path: Path, args: tuple[str, ...]) -> None:
    result = run(tmp_path / "data", *args, timeout=30, SMTPSETTINGS_PORT="notanumber")
    assert_one_line_error(result, "SMTPSETTINGS_PORT")


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("SMTPSETTINGS_PORT", "70000"),
        ("SMTPSETTINGS_DEFAULT_SMTP_PORT", "abc"),
        ("SMTPSETTINGS_LOG_FORMAT", "xml"),
        ("SMTPSETTINGS_TRUSTED_PROXIES", "not-a-network"),
        ("SMTPSETTINGS_WORKERS", "0"),
        ("SMTPSETTINGS_DATABASE_URL", "not a database url"),
    ],
)
def test_an_invalid_setting_is_a_one_line_error_naming_the_variable(tmp_path: Path, variable: str, value: str) -> None:
    result = run(tmp_path / "data", "migrate", **{variable: value})
    assert_one_line_error(result, variable)


def test_an_invalid_toml_config_file_is_a_one_line_error_naming_the_file(tmp_path: Path) -> None:
    config = tmp_path / "broken.toml"
    config.write_text("port = \n")
    result = run(tmp_path / "data", "--config", str(config), "migrate")
    assert_one_line_error(result, "broken.toml")


def test_a_data_dir_that_is_a_file_is_a_one_line_error(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "data"
    not_a_dir.write_text("")
    assert_one_line_error(run(not_a_dir, "migrate"), str(not_a_dir))


def test_an_unknown_setting_is_a_one_line_error_naming_the_variable(tmp_path: Path) -> None:
    result = run(tmp_path / "data", "migrate", SMTPSETTINGS_NO_SUCH_SETTING="1")
    assert_one_line_error(result, "SMTPSETTINGS_NO_SUCH_SETTING")


def test_a_missing_config_file_is_a_one_line_error(tmp_path: Path) -> None:
    result = run(tmp_path / "data", "--config", str(tmp_path / "absent.toml"), "migrate")
    assert_one_line_error(result, "absent.toml")


# --- portals ------------------------------------------------------------------------------------


def test_portal_create_and_list_show_the_portals_and_which_is_default(tmp_path: Path) -> None:
    data = tmp_path / "data"
    assert ok(data, "portal", "create", "main.test", "--default").strip() == "created portal main.test (default)"
    assert ok(data, "portal", "create", "second.test").strip() == "created portal second.test"
    lines = ok(data, "portal", "list").strip().splitlines()
    assert sorted(lines) == ["main.test\tdefault", "second.test"]


def test_portal_create_normalizes_case(tmp_path: Path) -> None:
    data = tmp_path / "data"
    ok(data, "portal", "create", "Mixed.Example.TEST")
    assert ok(data, "portal", "list").strip() == "mixed.example.test"


def test_duplicate_portal_is_a_one_line_error(tmp_path: Path) -> None:
    data = tmp_path / "data"
    ok(data, "portal", "create", "dup.test")
    assert_one_line_error(run(data, "portal", "create", "dup.test"), "dup.test")
    assert ok(data, "portal", "list").strip() == "dup.test"


def test_duplicate_portal_differing_only_in_case_is_a_one_line_error(tmp_path: Path) -> None:
    data = tmp_path / "data"
    ok(data, "portal", "create", "dup.test")
    assert_one_line_error(run(data, "portal", "create", "DUP.test"))


@pytest.mark.parametrize("hostname", ["not a host", "bad_name.test", "-lead.test", "a..b"])
def test_portal_create_with_an_invalid_hostname_is_a_one_line_error(tmp_path: Path, hostname: str) -> None:
    data = tmp_path / "data"
    assert_one_line_error(run(data, "portal", "create", "--", hostname))
    assert ok(data, "portal", "list").strip() == ""


# --- users --------------------------------------------------------------------------------------


def test_user_create_with_each_role_and_user_list_shows_them(tmp_path: Path) -> None:
    data = tmp_path / "data"
    ok(data, "portal", "create", "team.test")
    for role in ("owner", "admin", "user", "guest"):
        out = ok(data, "user", "create", "--portal", "team.test", "--email", f"{role}@team.test", "--password", PASSWORD, "--role", role)
        assert out.strip() == f"created {role} {role}@team.test in team.test"
    rows = {tuple(line.split("\t")[:2]) for line in ok(data, "user", "list", "--portal", "team.test").strip().splitlines()}
    assert rows == {(f"{r}@team.test", r) for r in ("owner", "admin", "user", "guest")}


def test_user_list_shows_only_the_users_of_the_named_portal(tmp_path: Path) -> None:
    data = tmp_path / "data"
    for host in ("one.test", "two.test"):
        ok(data, "portal", "create", host)
        ok(data, "user", "create", "--portal", host, "--email", f"admin@{host}", "--password", PASSWORD, "--role", "admin")
    out = ok(data, "user", "list", "--portal", "one.test")
    assert "admin@one.test" in out
    assert "two.test" not in out


def test_user_create_with_an_invalid_role_fails_without_a_traceback(tmp_path: Path) -> None:
    data = tmp_path / "data"
    ok(data, "portal", "create", "team.test")
    result = run(data, "user", "create", "--portal", "team.test", "--email", "x@team.test", "--password", PASSWORD, "--role", "superuser")
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert "superuser" in result.stderr
    assert ok(data, "user", "list", "--portal", "team.test").strip() == ""


def test_user_create_with_a_short_password_is_a_one_line_error(tmp_path: Path) -> None:
    data = tmp_path / "data"
    ok(data, "portal", "create", "team.test")
    result = run(data, "user", "create", "--portal", "team.test", "--email", "x@team.test", "--password", "short", "--role", "admin")
    assert_one_line_error(result, "password")


def test_user_create_with_an_invalid_email_is_a_one_line_error(tmp_path: Path) -> None:
    data = tmp_path / "data"
    ok(data, "portal", "create", "team.test")
    result = run(data, "user", "create", "--portal", "team.test", "--email", "not an email", "--password", PASSWORD, "--role", "admin")
    assert_one_line_error(result)


def test_duplicate_user_is_a_one_line_error(tmp_path: Path) -> None:
    data = tmp_path / "data"
    ok(data, "portal", "create", "team.test")
    args = ("user", "create", "--portal", "team.test", "--email", "a@team.test", "--password", PASSWORD, "--role", "admin")
    ok(data, *args)
    assert_one_line_error(run(data, *args))


# --- API keys -----------------------------------------------------------------------------------


def test_apikey_create_prints_the_key_alone_on_the_last_line_and_its_id(server: Server, portal: Portal) -> None:
    out = server.cli("apikey", "create", "--portal", portal.hostname, "--email", portal.emails["admin"]).stdout  # type: ignore[index]
    lines = out.strip().splitlines()
    assert re.fullmatch(r"sk-\S+", lines[-1]), out
    assert re.search(r"\bkey_\S+", "\n".join(lines[:-1])), out
    assert lines[-1] not in "\n".join(lines[:-1])


def test_apikey_authenticates_on_its_portal(server: Server, portal: Portal) -> None:
    _, key = create_api_key(server, portal.hostname, portal.emails["admin"])  # type: ignore[index]
    with bearer_client(server, portal.hostname, key) as c:
        assert c.get(SMTP).status_code == 200
        r = c.post(SMTP, json=VALID_SETTINGS)
        assert r.status_code == 200, r.text
        assert r.json()["response"]["host"] == VALID_SETTINGS["host"]


def test_apikey_is_refused_on_another_portal(server: Server, portal_factory: Callable[[], Portal]) -> None:
    mine, other = portal_factory(), portal_factory()
    _, key = create_api_key(server, mine.hostname, mine.emails["owner"])  # type: ignore[index]
    with bearer_client(server, other.hostname, key) as c:
        r = c.get(SMTP)
    assert r.status_code == 401
    assert r.json()["statusCode"] == 401


def test_apikey_of_a_plain_user_authenticates_but_is_denied_smtp_settings(server: Server, portal: Portal) -> None:
    _, key = create_api_key(server, portal.hostname, portal.emails["user"])  # type: ignore[index]
    with bearer_client(server, portal.hostname, key) as c:
        assert c.get("/api/2.0/authentication").json()["response"] is True
        assert c.get(SMTP).status_code == 403


def test_apikey_revoke_makes_the_key_fail_with_401(server: Server, portal: Portal) -> None:
    key_id, key = create_api_key(server, portal.hostname, portal.emails["admin"])  # type: ignore[index]
    with bearer_client(server, portal.hostname, key) as c:
        assert c.get(SMTP).status_code == 200
        assert key_id in server.cli("apikey", "revoke", key_id).stdout
        assert c.get(SMTP).status_code == 401


def test_apikey_revoke_leaves_other_keys_working(server: Server, portal: Portal) -> None:
    revoked_id, _ = create_api_key(server, portal.hostname, portal.emails["admin"])  # type: ignore[index]
    _, kept = create_api_key(server, portal.hostname, portal.emails["admin"])  # type: ignore[index]
    server.cli("apikey", "revoke", revoked_id)
    with bearer_client(server, portal.hostname, kept) as c:
        assert c.get(SMTP).status_code == 200


def test_apikey_revoke_twice_or_of_an_unknown_id_is_a_one_line_error(server: Server, portal: Portal) -> None:
    key_id, _ = create_api_key(server, portal.hostname, portal.emails["admin"])  # type: ignore[index]
    server.cli("apikey", "revoke", key_id)
    assert_one_line_error(server.cli("apikey", "revoke", key_id, check=False), key_id)
    assert_one_line_error(server.cli("apikey", "revoke", "key_unknown", check=False))


def test_apikey_create_for_an_unknown_user_is_a_one_line_error(server: Server, portal: Portal) -> None:
    result = server.cli("apikey", "create", "--portal", portal.hostname, "--email", f"nobody@{portal.hostname}", check=False)
    assert_one_line_error(result)


# --- key rotation while the server runs ------------------------------------------------------------


def test_keys_rotate_while_the_server_runs_re_encrypts_the_stored_password_under_a_new_key(tmp_path: Path) -> None:
    server = start_server(tmp_path / "data")
    try:
        host = "rotate.test"
        server.cli("portal", "create", host)
        server.cli("user", "create", "--portal", host, "--email", f"admin@{host}", "--password", PASSWORD, "--role", "admin")
        key_file = server.data_dir / "keys.json"
        with httpx.Client(base_url=server.base_url, headers={"Host": host}, auth=(f"admin@{host}", PASSWORD), timeout=30) as c:
            assert c.post(SMTP, json=VALID_SETTINGS).status_code == 200
            before_keys = key_ids(key_file)
            before = ciphertext_of(server.db_path, host)
            assert re.fullmatch(r"v1\.[^.]+\.[A-Za-z0-9_=-]+", before)
            assert before.split(".")[1] == before_keys[-1]

            out = server.cli("keys", "rotate").stdout
            after_keys = key_ids(key_file)
            assert after_keys[: len(before_keys)] == before_keys
            assert len(after_keys) == len(before_keys) + 1
            new_key = after_keys[-1]
            assert new_key in out
            assert "re-encrypted 1 secret" in out

            after = ciphertext_of(server.db_path, host)
            assert after.split(".")[1] == new_key
            assert after != before
            keyring = KeyRing(key_file)
            assert keyring.decrypt(after, password_purpose(portal_id_of(server.db_path, host))) == VALID_SETTINGS["credentialsUserPassword"]
            assert mode(key_file) == 0o600

            # The running server decrypts the re-encrypted password (a save reads it) and keeps it.
            same = {**VALID_SETTINGS, "senderDisplayName": "After rotation"}
            del same["credentialsUserPassword"]
            r = c.post(SMTP, json=same)
            assert r.status_code == 200, r.text
            assert c.get(SMTP).json()["response"]["senderDisplayName"] == "After rotation"
            assert ciphertext_of(server.db_path, host) == after

            # A new password is encrypted under the new key by the server that started before the rotation.
            assert c.post(SMTP, json={**VALID_SETTINGS, "credentialsUserPassword": "rotated-Secret-2"}).status_code == 200
            newest = ciphertext_of(server.db_path, host)
            assert newest.split(".")[1] == new_key
            assert keyring.decrypt(newest, password_purpose(portal_id_of(server.db_path, host))) == "rotated-Secret-2"
    finally:
        server.stop()


def test_keys_rotate_twice_keeps_every_old_key_in_the_ring(tmp_path: Path) -> None:
    data = tmp_path / "data"
    ok(data, "keys", "rotate")
    ok(data, "keys", "rotate")
    ids = key_ids(data / "keys.json")
    assert len(ids) == 3
    assert len(set(ids)) == 3


# --- audit --------------------------------------------------------------------------------------


def test_audit_shows_each_save_and_reset_with_who_from_where_and_which_fields(server: Server, portal: Portal) -> None:
    with portal.client("admin") as admin, portal.client("owner") as owner:  # type: ignore[arg-type]
        assert admin.post(SMTP, json=VALID_SETTINGS).status_code == 200
        changed = {**VALID_SETTINGS, "port": 465, "credentialsUserPassword": "second-Secret-2"}
        assert admin.post(SMTP, json=changed).status_code == 200
        assert owner.delete(SMTP).status_code == 200
    out = server.cli("audit", "--portal", portal.hostname).stdout
    lines = out.strip().splitlines()
    assert len(lines) == 3, out
    newest, second, first = (line.split("\t") for line in lines)
    assert newest[1:4] == ["reset", portal.emails["owner"], "127.0.0.1"]  # type: ignore[index]
    assert second[1:4] == ["save", portal.emails["admin"], "127.0.0.1"]  # type: ignore[index]
    assert set(second[4].split(",")) == {"port", "credentialsUserPassword"}
    assert first[1:4] == ["save", portal.emails["admin"], "127.0.0.1"]  # type: ignore[index]
    assert {"host", "senderAddress"} <= set(first[4].split(","))
    assert "isDefaultSettings" in newest[4].split(",")
    for password in (VALID_SETTINGS["credentialsUserPassword"], "second-Secret-2"):
        assert password not in out


def test_audit_records_the_peer_address_not_an_untrusted_forwarded_for(server: Server, portal: Portal) -> None:
    with portal.client("admin", headers={"X-Forwarded-For": "203.0.113.7"}) as admin:  # type: ignore[arg-type]
        assert admin.post(SMTP, json=VALID_SETTINGS).status_code == 200
    out = server.cli("audit", "--portal", portal.hostname).stdout
    assert out.strip().split("\t")[3] == "127.0.0.1"
    assert "203.0.113.7" not in out


def test_audit_does_not_record_refused_saves(server: Server, portal: Portal) -> None:
    with portal.client("admin") as admin, portal.client("user") as user:  # type: ignore[arg-type]
        assert admin.post(SMTP, json={**VALID_SETTINGS, "port": 0}).status_code == 400
        assert user.post(SMTP, json=VALID_SETTINGS).status_code == 403
    assert server.cli("audit", "--portal", portal.hostname).stdout.strip() == ""


def test_audit_shows_only_the_named_portal(server: Server, portal_factory: Callable[[], Portal]) -> None:
    busy, quiet = portal_factory(), portal_factory()
    with busy.client("admin") as admin:  # type: ignore[arg-type]
        assert admin.post(SMTP, json=VALID_SETTINGS).status_code == 200
    assert server.cli("audit", "--portal", quiet.hostname).stdout.strip() == ""
    assert len(server.cli("audit", "--portal", busy.hostname).stdout.strip().splitlines()) == 1


def test_audit_limit_shows_the_newest_entries(server: Server, portal: Portal) -> None:
    with portal.client("admin") as admin:  # type: ignore[arg-type]
        for port in (2501, 2502, 2503):
            assert admin.post(SMTP, json={**VALID_SETTINGS, "port": port}).status_code == 200
    lines = server.cli("audit", "--portal", portal.hostname, "--limit", "2").stdout.strip().splitlines()
    assert len(lines) == 2
    assert all(line.split("\t")[1] == "save" for line in lines)


# --- serve ------------------------------------------------------------------------------------


def test_serve_on_a_fresh_data_dir_prints_the_sign_in_url_owner_and_password_once(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = start_server(data)
    try:
        port = first.base_url.rsplit(":", 1)[1]
        assert f"http://localhost:{port}/" in first.stdout
        assert "owner@example.com" in first.stdout
        match = re.search(r"Password:\s+(\S+)", first.stdout)
        assert match, first.stdout
        password = match.group(1)
        with httpx.Client(base_url=first.base_url, headers={"Host": "localhost"}, timeout=30) as c:
            r = c.post("/api/2.0/authentication", json={"userName": "owner@example.com", "password": password})
            assert r.status_code == 200, r.text
    finally:
        first.stop()
    second = start_server(data)
    try:
        assert "Password:" not in second.stdout
        assert password not in second.stdout
        assert password not in second.log_text()
    finally:
        second.stop()


def test_serve_creates_a_private_key_ring_and_database(tmp_path: Path) -> None:
    server = start_server(tmp_path / "data")
    try:
        assert mode(server.data_dir / "keys.json") == 0o600
        assert mode(server.db_path) == 0o600
    finally:
        server.stop()


def test_first_start_owner_is_the_one_portal_and_user(tmp_path: Path) -> None:
    server = start_server(tmp_path / "data")
    try:
        assert server.cli("portal", "list").stdout.strip() == "localhost\tdefault"
        users = server.cli("user", "list", "--portal", "localhost").stdout.strip().splitlines()
        assert [line.split("\t")[:2] for line in users] == [["owner@example.com", "owner"]]
    finally:
        server.stop()
