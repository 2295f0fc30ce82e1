"""The ``smtpsettings`` command as an operator runs it: a subprocess with its environment, on real data dirs."""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import re
import select
import signal
import sqlite3
import stat
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import click
import httpx
import pytest
from serverkit import PASSWORD, VALID_SETTINGS, Portal, Server, free_port, smtpsettings_command, start_server

from smtpsettings.cli import main
from smtpsettings.crypto import KeyRing
from smtpsettings.services.smtp import password_purpose

SMTP = "/api/2.0/smtpsettings/smtp"


def operator_env(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMTPSETTINGS_")}
    env["SMTPSETTINGS_DATA_DIR"] = str(data_dir)
    env.update(extra)
    return env


def run(
    data_dir: Path, *args: str, timeout: float = 60, input: str | None = None, **extra_env: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*smtpsettings_command(), *args],
        env=operator_env(data_dir, **extra_env),
        capture_output=True,
        text=True,
        timeout=timeout,
        input=input,
        stdin=None if input is not None else subprocess.DEVNULL,
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


# --- only serve and migrate create a database ---------------------------------------------------------


def migrated(tmp_path: Path) -> Path:
    """A data directory with a database, made the way an operator makes one."""
    data = tmp_path / "data"
    ok(data, "migrate")
    return data


def test_migrate_on_a_fresh_data_dir_creates_a_private_directory_and_database(tmp_path: Path) -> None:
    data = tmp_path / "nested" / "data"
    ok(data, "migrate")
    assert mode(data) == 0o700
    assert mode(data / "smtpsettings.db") == 0o600
    with sqlite3.connect(data / "smtpsettings.db") as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"portals", "smtp_settings", "audit_log"} <= tables


ADMIN_COMMANDS = [
    ("portal", "list"),
    ("portal", "create", "fresh.test"),
    ("keys", "rotate"),
    ("user", "list", "--portal", "localhost"),
    ("apikey", "revoke", "key_doesnotexist"),
    ("audit", "--portal", "localhost"),
    ("messages", "list", "--portal", "localhost"),
]


@pytest.mark.parametrize("args", ADMIN_COMMANDS, ids=lambda a: " ".join(a[:2]))
def test_an_admin_command_without_a_database_names_the_one_it_looked_for_and_creates_nothing(
    tmp_path: Path, args: tuple[str, ...]
) -> None:
    data = tmp_path / "data"
    result = run(data, *args)
    assert_one_line_error(result, f"SQLite database {data.resolve() / 'smtpsettings.db'}", "smtpsettings migrate")
    assert not data.exists()


def test_an_admin_command_run_from_another_directory_refuses_rather_than_guess(tmp_path: Path) -> None:
    ok(tmp_path / "data", "migrate")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMTPSETTINGS_")}  # no data dir given
    result = subprocess.run(
        [*smtpsettings_command(), "portal", "list"], env=env, cwd=elsewhere, capture_output=True, text=True, timeout=60
    )
    assert_one_line_error(result, str(elsewhere / "smtpsettings-data" / "smtpsettings.db"))
    assert list(elsewhere.iterdir()) == []


def test_an_admin_command_with_a_sqlite_url_into_a_missing_directory_fails_and_creates_nothing(tmp_path: Path) -> None:
    missing = tmp_path / "typo" / "smtpsettings.db"
    result = run(tmp_path / "data", "portal", "list", SMTPSETTINGS_DATABASE_URL=f"sqlite:///{missing}")
    assert_one_line_error(result, str(missing))
    assert not (tmp_path / "typo").exists()
    assert not (tmp_path / "data").exists()


def test_migrate_with_a_sqlite_url_into_a_missing_directory_names_the_directory(tmp_path: Path) -> None:
    missing = tmp_path / "typo" / "smtpsettings.db"
    result = run(tmp_path / "data", "migrate", SMTPSETTINGS_DATABASE_URL=f"sqlite:///{missing}")
    assert_one_line_error(result, f"the directory {missing.parent} does not exist")
    assert not (tmp_path / "typo").exists()


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
def test_subcommand_needing_a_missing_portal_or_key_fails_in_one_line(tmp_path: Path, args: tuple[str, ...]) -> None:
    data = migrated(tmp_path)
    assert_one_line_error(run(data, *args), "error:")


def test_keys_rotate_keeps_the_data_dir_database_and_key_ring_private(tmp_path: Path) -> None:
    data = migrated(tmp_path)
    ok(data, "keys", "rotate")
    assert mode(data) == 0o700
    assert mode(data / "smtpsettings.db") == 0o600
    assert mode(data / "keys.json") == 0o600


def test_migrate_twice_in_a_row_succeeds_both_times(tmp_path: Path) -> None:
    data = tmp_path / "data"
    assert "up to date" in ok(data, "migrate")
    assert "up to date" in ok(data, "migrate")


def test_migrate_keeps_existing_data(tmp_path: Path) -> None:
    data = migrated(tmp_path)
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
        ("SMTPSETTINGS_TOKEN_LIFETIME_HOURS", "0"),
        ("SMTPSETTINGS_SMTP_JOB_TIMEOUT", "-5"),
        ("SMTPSETTINGS_SQLITE_SYNCHRONOUS", "off"),
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


@pytest.mark.parametrize("value", ["0", "-1"])
def test_serve_refuses_a_token_lifetime_that_would_hand_out_expired_tokens(tmp_path: Path, value: str) -> None:
    # Before, the server started and every sign-in returned a token that had already expired.
    result = run(tmp_path / "data", "serve", "--port", "1", timeout=30, SMTPSETTINGS_TOKEN_LIFETIME_HOURS=value)
    assert_one_line_error(result, "SMTPSETTINGS_TOKEN_LIFETIME_HOURS", "expected an integer of 1 or more", repr(value))
    assert not (tmp_path / "data" / "smtpsettings.db").exists()


def test_a_non_numeric_variable_says_an_integer_is_expected_not_a_str_type(tmp_path: Path) -> None:
    result = run(tmp_path / "data", "migrate", SMTPSETTINGS_PORT="abc")
    assert result.stderr.strip() == "error: SMTPSETTINGS_PORT: expected an integer from 1 to 65535, got 'abc'"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("prot = 1\n", "unknown setting 'prot'"),
        ("port = 0\n", "port: expected an integer from 1 to 65535, got 0"),
        ("[default_smtp]\nprot = 25\n", "unknown setting 'default_smtp.prot'"),
    ],
)
def test_a_config_file_error_names_the_file_and_key_not_a_variable(tmp_path: Path, text: str, message: str) -> None:
    config = tmp_path / "x.toml"
    config.write_text(text)
    result = run(tmp_path / "data", "migrate", "--config", str(config))
    assert_one_line_error(result)
    assert result.stderr.strip() == f"error: config file {config}: {message}"


# --- --config on every command, --version, help ------------------------------------------------------


def _commands(command: click.Command, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], click.Command]]:
    found = [(path, command)]
    if isinstance(command, click.Group):
        for name, sub in command.commands.items():
            found += _commands(sub, (*path, name))
    return found


def test_every_command_and_group_accepts_config() -> None:
    missing = [" ".join(path) or "(main)" for path, command in _commands(main) if "--config" not in _option_names(command)]
    assert missing == []


def _option_names(command: click.Command) -> set[str]:
    return {name for param in command.params for name in param.opts}


@pytest.mark.parametrize("where", ["before", "after", "between"])
def test_config_works_before_and_after_the_subcommand(tmp_path: Path, where: str) -> None:
    database = tmp_path / "from-the-file.db"
    config = tmp_path / "smtpsettings.toml"
    config.write_text(f'database_url = "sqlite:///{database}"\n')
    option = ("--config", str(config))
    args = {
        "before": (*option, "portal", "create", "filed.test"),
        "after": ("portal", "create", "filed.test", *option),
        "between": ("portal", *option, "create", "filed.test"),
    }[where]
    data = tmp_path / "data"
    ok(data, "migrate", "--config", str(config))
    ok(data, *args)
    assert database.is_file()
    assert not (data / "smtpsettings.db").exists()
    assert ok(data, "portal", "list", "--no-header", "--config", str(config)).strip() == "filed.test\t-"
    assert_one_line_error(run(data, "portal", "list"), str(data.resolve() / "smtpsettings.db"))


def test_the_config_after_the_subcommand_wins_over_the_one_before(tmp_path: Path) -> None:
    first, second = tmp_path / "first.toml", tmp_path / "second.toml"
    first.write_text(f'database_url = "sqlite:///{tmp_path / "first.db"}"\n')
    second.write_text(f'database_url = "sqlite:///{tmp_path / "second.db"}"\n')
    ok(tmp_path / "data", "--config", str(first), "migrate", "--config", str(second))
    assert (tmp_path / "second.db").is_file()
    assert not (tmp_path / "first.db").exists()


def test_serve_accepts_config_after_the_subcommand(tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "serve.toml"
    config.write_text(f'data_dir = "{tmp_path / "served"}"\nport = {port}\nowner_email = "boss@example.com"\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMTPSETTINGS_")}
    log = (tmp_path / "serve.log").open("wb")
    process = subprocess.Popen(
        [*smtpsettings_command(), "serve", "--config", str(config)],
        env=env,
        cwd=tmp_path,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, (tmp_path / "serve.log").read_text()
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/api/2.0/health/live", timeout=2)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, (tmp_path / "serve.log").read_text()
                time.sleep(0.1)
        assert r.status_code == 200
        assert "boss@example.com" in (tmp_path / "serve.log").read_text()
        assert (tmp_path / "served" / "smtpsettings.db").is_file()
        assert not (tmp_path / "smtpsettings-data").exists()
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)
        log.close()


def test_version_prints_the_installed_package_version(tmp_path: Path) -> None:
    assert ok(tmp_path / "data", "--version").strip() == f"smtpsettings {importlib.metadata.version('smtpsettings')}"
    assert not (tmp_path / "data").exists()  # nothing opened


def test_serve_help_names_the_config_file_and_the_data_directory(tmp_path: Path) -> None:
    text = " ".join(ok(tmp_path / "data", "serve", "--help").split())
    for fragment in ("--config", "SMTPSETTINGS_CONFIG_FILE", "SMTPSETTINGS_DATA_DIR", "./smtpsettings-data", "keys.json", "smtpsettings.db"):
        assert fragment in text, fragment


# --- portals ------------------------------------------------------------------------------------


def test_portal_create_and_list_show_the_portals_and_which_is_default(tmp_path: Path) -> None:
    data = migrated(tmp_path)
    assert ok(data, "portal", "create", "main.test", "--default").strip() == "created portal main.test (default)"
    assert ok(data, "portal", "create", "second.test").strip() == "created portal second.test"
    header, *lines = ok(data, "portal", "list").strip().splitlines()
    assert header == "hostname\tdefault"
    assert sorted(lines) == ["main.test\tdefault", "second.test\t-"]


def test_portal_create_normalizes_case(tmp_path: Path) -> None:
    data = migrated(tmp_path)
    ok(data, "portal", "create", "Mixed.Example.TEST")
    assert ok(data, "portal", "list", "--no-header").strip() == "mixed.example.test\t-"


def test_duplicate_portal_is_a_one_line_error(tmp_path: Path) -> None:
    data = migrated(tmp_path)
    ok(data, "portal", "create", "dup.test")
    assert_one_line_error(run(data, "portal", "create", "dup.test"), "dup.test")
    assert ok(data, "portal", "list", "--no-header").strip() == "dup.test\t-"


def test_duplicate_portal_differing_only_in_case_is_a_one_line_error(tmp_path: Path) -> None:
    data = migrated(tmp_path)
    ok(data, "portal", "create", "dup.test")
    assert_one_line_error(run(data, "portal", "create", "DUP.test"))


@pytest.mark.parametrize("hostname", ["not a host", "bad_name.test", "-lead.test", "a..b"])
def test_portal_create_with_an_invalid_hostname_is_a_one_line_error(tmp_path: Path, hostname: str) -> None:
    data = migrated(tmp_path)
    assert_one_line_error(run(data, "portal", "create", "--", hostname))
    assert ok(data, "portal", "list").strip() == ""


# --- users --------------------------------------------------------------------------------------


def test_user_create_with_each_role_and_user_list_shows_them(tmp_path: Path) -> None:
    data = migrated(tmp_path)
    ok(data, "portal", "create", "team.test")
    for role in ("owner", "admin", "user", "guest"):
        out = ok(data, "user", "create", "--portal", "team.test", "--email", f"{role}@team.test", "--password", PASSWORD, "--role", role)
        assert out.strip() == f"created {role} {role}@team.test in team.test"
    rows = {tuple(line.split("\t")[:2]) for line in ok(data, "user", "list", "--portal", "team.test", "--no-header").strip().splitlines()}
    assert rows == {(f"{r}@team.test", r) for r in ("owner", "admin", "user", "guest")}


def test_user_list_shows_only_the_users_of_the_named_portal(tmp_path: Path) -> None:
    data = migrated(tmp_path)
    for host in ("one.test", "two.test"):
        ok(data, "portal", "create", host)
        ok(data, "user", "create", "--portal", host, "--email", f"admin@{host}", "--password", PASSWORD, "--role", "admin")
    out = ok(data, "user", "list", "--portal", "one.test")
    assert "admin@one.test" in out
    assert "two.test" not in out


def test_user_create_with_an_invalid_role_fails_without_a_traceback(tmp_path: Path) -> None:
    data = migrated(tmp_path)
    ok(data, "portal", "create", "team.test")
    result = run(data, "user", "create", "--portal", "team.test", "--email", "x@team.test", "--password", PASSWORD, "--role", "superuser")
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert "superuser" in result.stderr
    assert ok(data, "user", "list", "--portal", "team.test").strip() == ""


def test_user_create_with_a_short_password_is_a_one_line_error(tmp_path: Path) -> None:
    data = migrated(tmp_path)
    ok(data, "portal", "create", "team.test")
    result = run(data, "user", "create", "--portal", "team.test", "--email", "x@team.test", "--password", "short", "--role", "admin")
    assert_one_line_error(result, "password")


def test_user_create_with_an_invalid_email_is_a_one_line_error(tmp_path: Path) -> None:
    data = migrated(tmp_path)
    ok(data, "portal", "create", "team.test")
    result = run(data, "user", "create", "--portal", "team.test", "--email", "not an email", "--password", PASSWORD, "--role", "admin")
    assert_one_line_error(result)


def test_duplicate_user_is_a_one_line_error(tmp_path: Path) -> None:
    data = migrated(tmp_path)
    ok(data, "portal", "create", "team.test")
    args = ("user", "create", "--portal", "team.test", "--email", "a@team.test", "--password", PASSWORD, "--role", "admin")
    ok(data, *args)
    assert_one_line_error(run(data, *args))


def test_user_create_reads_the_password_from_stdin_and_it_signs_in(server: Server) -> None:
    host = f"stdin-{uuid.uuid4().hex[:8]}.test"
    server.cli("portal", "create", host)
    result = cli_with_input(server, "new-Password-1\n", "user", "create", "--portal", host, "--email", f"ann@{host}", "--role", "admin", "--password-stdin")
    assert result.returncode == 0, result.stderr
    assert "new-Password-1" not in result.stdout + result.stderr
    assert sign_in(server, host, f"ann@{host}", "new-Password-1").status_code == 200


def test_user_create_without_a_password_on_a_non_terminal_asks_for_password_stdin(tmp_path: Path) -> None:
    data = migrated(tmp_path)
    ok(data, "portal", "create", "team.test")
    result = run(data, "user", "create", "--portal", "team.test", "--email", "x@team.test", "--role", "admin")
    assert_one_line_error(result, "--password-stdin")
    assert ok(data, "user", "list", "--portal", "team.test").strip() == ""


def test_user_create_refuses_both_password_options(tmp_path: Path) -> None:
    data = migrated(tmp_path)
    ok(data, "portal", "create", "team.test")
    args = ("user", "create", "--portal", "team.test", "--email", "x@team.test", "--role", "admin")
    result = run(data, *args, "--password", PASSWORD, "--password-stdin", input=PASSWORD + "\n")
    assert_one_line_error(result, "--password-stdin")


# --- set-password -------------------------------------------------------------------------------


def cli_with_input(server: Server, stdin: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*smtpsettings_command(), *args], env=server.env, input=stdin, capture_output=True, text=True, timeout=60)


def sign_in(server: Server, host: str, email: str, password: str) -> httpx.Response:
    with httpx.Client(base_url=server.base_url, headers={"Host": host}, timeout=30) as c:
        return c.post("/api/2.0/authentication", json={"userName": email, "password": password})


def test_set_password_replaces_the_password_and_ends_the_users_sessions(server: Server, portal: Portal) -> None:
    admin, owner = portal.emails["admin"], portal.emails["owner"]  # type: ignore[index]
    with portal.client("admin") as attacker, portal.client("admin") as second, portal.client("owner") as bystander:  # type: ignore[arg-type]
        assert attacker.get(SMTP).status_code == 200
        result = cli_with_input(
            server, "a-New-Secret-9\n", "user", "set-password", "--portal", portal.hostname, "--email", admin, "--password-stdin"
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == f"password set for {admin} in {portal.hostname}; ended 2 session(s)"
        assert "a-New-Secret-9" not in result.stdout + result.stderr
        # Whoever held a token of the old password is out at once; other users are not touched.
        assert attacker.get(SMTP).status_code == 401
        assert second.get("/api/2.0/authentication").json()["response"] is False
        assert bystander.get(SMTP).status_code == 200
    assert sign_in(server, portal.hostname, admin, PASSWORD).status_code == 401
    assert sign_in(server, portal.hostname, admin, "a-New-Secret-9").status_code == 200
    assert sign_in(server, portal.hostname, owner, PASSWORD).status_code == 200


def test_set_password_leaves_the_users_api_keys_working(server: Server, portal: Portal) -> None:
    admin = portal.emails["admin"]  # type: ignore[index]
    _, key = create_api_key(server, portal.hostname, admin)
    result = cli_with_input(server, "a-New-Secret-9\n", "user", "set-password", "--portal", portal.hostname, "--email", admin, "--password-stdin")
    assert result.returncode == 0, result.stderr
    with bearer_client(server, portal.hostname, key) as c:
        assert c.get(SMTP).status_code == 200


@pytest.mark.parametrize(
    ("email", "password", "fragment"),
    [("nobody@{host}", "a-New-Secret-9", "nobody@"), ("admin@{host}", "short", "at least 8"), ("admin@{host}", "", "at least 8")],
    ids=["unknown user", "short", "empty"],
)
def test_set_password_refusals_are_one_line_and_keep_the_old_password(
    server: Server, portal: Portal, email: str, password: str, fragment: str
) -> None:
    with portal.client("admin") as admin:  # type: ignore[arg-type]
        result = cli_with_input(
            server, password + "\n", "user", "set-password", "--portal", portal.hostname, "--email", email.format(host=portal.hostname), "--password-stdin"
        )
        assert_one_line_error(result, fragment)
        assert admin.get(SMTP).status_code == 200
    assert sign_in(server, portal.hostname, portal.emails["admin"], PASSWORD).status_code == 200  # type: ignore[index]


def test_set_password_on_an_unknown_portal_is_a_one_line_error(tmp_path: Path) -> None:
    result = run(migrated(tmp_path), "user", "set-password", "--portal", "nowhere.test", "--email", "a@nowhere.test", "--password-stdin", input="a-New-Secret-9\n")
    assert_one_line_error(result, "nowhere.test")


def test_set_password_without_a_terminal_or_password_stdin_refuses_rather_than_reading_stdin(tmp_path: Path) -> None:
    data = migrated(tmp_path)
    ok(data, "portal", "create", "team.test")
    ok(data, "user", "create", "--portal", "team.test", "--email", "a@team.test", "--role", "admin", "--password", PASSWORD)
    result = run(data, "user", "set-password", "--portal", "team.test", "--email", "a@team.test", input="a-New-Secret-9\n")
    assert_one_line_error(result, "standard input is not a terminal", "--password-stdin")


class Terminal:
    """A command run on a pseudo-terminal, as an operator at a shell runs it."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.master, slave = os.openpty()
        self.process = subprocess.Popen(args, env=env, stdin=slave, stdout=slave, stderr=slave, start_new_session=True)
        os.close(slave)
        self.transcript = b""
        self._matched = 0  # each expect looks only at the output after the previous match

    def expect(self, text: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while (found := self.transcript.find(text.encode(), self._matched)) < 0:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"no {text!r} in {self.transcript!r}"
            ready, _, _ = select.select([self.master], [], [], remaining)
            if ready:
                try:
                    chunk = os.read(self.master, 4096)
                except OSError:  # the command ended and closed the terminal
                    chunk = b""
                assert chunk, f"the command ended without {text!r}: {self.transcript!r}"
                self.transcript += chunk
        self._matched = found + len(text)

    def type(self, line: str) -> None:
        os.write(self.master, line.encode() + b"\n")

    def finish(self, timeout: float = 30) -> int:
        """Wait for the command; its exit code, with the rest of its output added to the transcript."""
        code = self.process.wait(timeout)
        with contextlib.suppress(OSError):  # EIO once the last output is read
            while select.select([self.master], [], [], 0)[0] and (chunk := os.read(self.master, 4096)):
                self.transcript += chunk
        os.close(self.master)
        return code


def test_set_password_asks_twice_on_a_terminal_without_echo(tmp_path: Path) -> None:
    data = migrated(tmp_path)
    ok(data, "portal", "create", "team.test")
    ok(data, "user", "create", "--portal", "team.test", "--email", "a@team.test", "--role", "admin", "--password", PASSWORD)
    term = Terminal([*smtpsettings_command(), "user", "set-password", "--portal", "team.test", "--email", "a@team.test"], operator_env(data))
    # The space after the colon is written once echo is off: typing earlier would echo.
    term.expect("New password: ")
    term.type("typed-Secret-41")
    term.expect("Repeat it: ")
    term.type("typed-Secret-42")  # a typo: asked again
    term.expect("do not match")
    term.expect("New password: ")
    term.type("typed-Secret-41")
    term.expect("Repeat it: ")
    term.type("typed-Secret-41")
    term.expect("password set for a@team.test")
    assert term.finish() == 0
    assert b"typed-Secret-4" not in term.transcript
    assert "a@team.test" in ok(data, "user", "list", "--portal", "team.test")
    server = start_server(data)
    try:
        assert sign_in(server, "team.test", "a@team.test", "typed-Secret-41").status_code == 200
        assert sign_in(server, "team.test", "a@team.test", PASSWORD).status_code == 401
    finally:
        server.stop()


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
    data = migrated(tmp_path)
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
    out = server.cli("audit", "--portal", portal.hostname, "--no-header").stdout
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
    out = server.cli("audit", "--portal", portal.hostname, "--no-header").stdout
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
    assert len(server.cli("audit", "--portal", busy.hostname, "--no-header").stdout.strip().splitlines()) == 1


def test_audit_limit_shows_the_newest_entries(server: Server, portal: Portal) -> None:
    with portal.client("admin") as admin:  # type: ignore[arg-type]
        for port in (2501, 2502, 2503):
            assert admin.post(SMTP, json={**VALID_SETTINGS, "port": port}).status_code == 200
    lines = server.cli("audit", "--portal", portal.hostname, "--limit", "2", "--no-header").stdout.strip().splitlines()
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
        assert server.cli("portal", "list", "--no-header").stdout.strip() == "localhost\tdefault"
        users = server.cli("user", "list", "--portal", "localhost", "--no-header").stdout.strip().splitlines()
        assert [line.split("\t")[:2] for line in users] == [["owner@example.com", "owner"]]
    finally:
        server.stop()
