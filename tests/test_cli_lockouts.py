"""``smtpsettings lockout list`` / ``clear`` as an operator runs them, on counters made by real failed sign-ins.

The failures are made through the services on the same SQLite file the commands then read; the addresses
are documentation ranges, never contacted.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from test_cli import assert_one_line_error, ok, run

from smtpsettings.config import load_settings
from smtpsettings.domain.accounts import Role
from smtpsettings.domain.errors import NotAuthenticated, TooManyRequests
from smtpsettings.domain.passwords import SignInSecret
from smtpsettings.services.accounts import AccountsService
from smtpsettings.wiring import Services

PASSWORD = "correct horse battery"
LIMITS = {
    "SMTPSETTINGS_LOGIN_MAX_FAILURES_PER_ACCOUNT": "2",
    "SMTPSETTINGS_LOGIN_MAX_FAILURES_PER_ADDRESS": "3",
    "SMTPSETTINGS_SUBMISSION_MAX_FAILURES_PER_ADDRESS": "3",
    "SMTPSETTINGS_SUBMISSION_MAX_FAILURES_PER_KEY": "2",
}


async def _fail(data: Path) -> tuple[str, str]:
    """Locks out: one account (HTTP), 192.0.2.7 for SMTP, one key; counts, unlocked: 198.51.100.1 (HTTP, SMTP).

    Returns the locked key's id and the key itself.
    """
    services = Services(load_settings({"SMTPSETTINGS_DATA_DIR": str(data), **LIMITS}))
    try:
        accounts = AccountsService(services.db)
        portal = accounts.create_portal("one.test", is_default=False)
        accounts.create_user("one.test", email="admin@one.test", password=PASSWORD, role=Role.ADMIN)
        key_id, key = accounts.create_api_key("one.test", "admin@one.test", "mail.send")
        auth = services.auth
        for n in range(2):
            with pytest.raises(NotAuthenticated):
                await auth.verify(portal, "Admin@one.test", SignInSecret(f"wrong {n}"), "198.51.100.1")
        for n in range(3):
            with pytest.raises(NotAuthenticated):
                await auth.authenticate_api_key("one.test", f"sk-guess{n}", "192.0.2.7")
        for _ in range(2):
            with pytest.raises(NotAuthenticated):
                await auth.authenticate_api_key("one.test", key[:-1] + ("A" if key[-1] != "A" else "B"), "198.51.100.1")
        with pytest.raises(TooManyRequests):
            await auth.authenticate_api_key("one.test", key, "2001:db8::1")
        return key_id, key
    finally:
        await services.db.dispose_async()


@pytest.fixture
def failed(tmp_path: Path) -> tuple[Path, str, str]:
    data = tmp_path / "data"
    ok(data, "migrate")
    key_id, key = asyncio.run(_fail(data))
    return data, key_id, key


def lockouts(data: Path, *args: str) -> list[list[str]]:
    result = run(data, "lockout", *args, **LIMITS)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "kind\tsubject\tfailures\tseconds_left\tlocked", result.stdout
    return [line.split("\t") for line in lines[1:]]


def test_list_shows_each_counter_with_its_kind_and_never_the_key(failed: tuple[Path, str, str]) -> None:
    data, key_id, key = failed
    rows = lockouts(data, "list")
    shown = {(kind, subject): (failures, locked) for kind, subject, failures, _, locked in rows}
    assert shown == {
        ("http-account", "one.test/admin@one.test"): ("2", "yes"),
        ("http-address", "198.51.100.1"): ("2", "no"),
        ("smtp-address", "192.0.2.7"): ("3", "yes"),
        ("smtp-address", "198.51.100.1"): ("2", "no"),
        ("smtp-key", key_id): ("2", "yes"),
    }
    assert all(0 < int(left) <= 900 for *_, left, _ in rows)
    assert key.split(".")[1] not in run(data, "lockout", "list", **LIMITS).stdout


def test_no_header_prints_the_rows_only(failed: tuple[Path, str, str]) -> None:
    data, _, _ = failed
    out = run(data, "lockout", "list", "--no-header", **LIMITS).stdout.splitlines()
    assert len(out) == 5 and all(line.split("\t")[0].startswith(("http-", "smtp-")) for line in out)


def test_clear_by_address_lifts_both_channels_of_that_address_only(failed: tuple[Path, str, str]) -> None:
    data, _, _ = failed
    cleared = lockouts(data, "clear", "--address", "198.51.100.1")
    assert sorted((kind, subject) for kind, subject, *_ in cleared) == [
        ("http-address", "198.51.100.1"),
        ("smtp-address", "198.51.100.1"),
    ]
    assert {kind for kind, *_ in lockouts(data, "list")} == {"http-account", "smtp-address", "smtp-key"}


def test_clear_by_key_and_by_account(failed: tuple[Path, str, str]) -> None:
    data, key_id, _ = failed
    assert [row[:2] for row in lockouts(data, "clear", "--key", key_id)] == [["smtp-key", key_id]]
    cleared = lockouts(data, "clear", "--portal", "ONE.test", "--email", "ADMIN@one.test")
    assert [row[:2] for row in cleared] == [["http-account", "one.test/admin@one.test"]]


def test_clear_with_no_option_clears_everything_and_then_there_are_no_lockouts(failed: tuple[Path, str, str]) -> None:
    data, key_id, key = failed
    assert len(lockouts(data, "clear")) == 5
    empty = run(data, "lockout", "list", **LIMITS)
    assert (empty.returncode, empty.stdout, empty.stderr.strip()) == (0, "", "no lockouts")

    async def sign_in_with_the_key() -> str | None:
        services = Services(load_settings({"SMTPSETTINGS_DATA_DIR": str(data), **LIMITS}))
        try:
            _, principal = await services.auth.authenticate_api_key("one.test", key, "2001:db8::1")
            return principal.api_key_id
        finally:
            await services.db.dispose_async()

    assert asyncio.run(sign_in_with_the_key()) == key_id  # the key works at once, not in 15 minutes


def test_portal_without_email_is_a_one_line_error(failed: tuple[Path, str, str]) -> None:
    data, _, _ = failed
    assert_one_line_error(run(data, "lockout", "clear", "--portal", "one.test"), "--portal and --email")
