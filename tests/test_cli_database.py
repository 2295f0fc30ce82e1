"""What the command line and the server's start say when the database cannot be used: which one, and why.

A real PostgreSQL cluster refuses for real: a wrong password, a database that does not exist, a port
nothing listens on, a host name that does not resolve. Each must be one line naming the host, port and
database with the server's reason, and never the password.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from pgcluster import PgCluster
from serverkit import free_port
from test_cli import assert_one_line_error, run

PASSWORD = "Wr0ng-but-secret-42"

COMMANDS = [("migrate",), ("portal", "list"), ("serve", "--port", "0")]


def _failures(cluster: PgCluster) -> list[tuple[str, str, str]]:
    """(case, URL, fragments the error must hold: where, then why)."""
    port = cluster.port
    closed = free_port()
    return [
        (
            "wrong password",
            f"postgresql://mailer:{PASSWORD}@127.0.0.1:{port}/postgres",
            f"'postgres' on 127.0.0.1:{port} as user 'mailer'|password authentication failed for user \"mailer\"",
        ),
        (
            "missing database",
            f"postgresql://postgres:{PASSWORD}@127.0.0.1:{port}/no_such_db",
            f"'no_such_db' on 127.0.0.1:{port}|database \"no_such_db\" does not exist",
        ),
        (
            "wrong port",
            f"postgresql://postgres:{PASSWORD}@127.0.0.1:{closed}/postgres",
            f"'postgres' on 127.0.0.1:{closed}|Connection refused",
        ),
        (
            "unresolvable host",
            f"postgresql://postgres:{PASSWORD}@db.smtpsettings.invalid:{port}/postgres",
            f"on db.smtpsettings.invalid:{port}|db.smtpsettings.invalid|not known",
        ),
    ]


@pytest.fixture(scope="module")
def password_cluster(pg_cluster: PgCluster) -> PgCluster:
    """The session's cluster, where the role ``mailer`` must give its password (another one than the tests')."""
    pg_cluster.add_password_user("mailer", "the-Right-one-7")
    return pg_cluster


@pytest.mark.parametrize("case", ["wrong password", "missing database", "wrong port", "unresolvable host"])
@pytest.mark.parametrize("args", COMMANDS, ids=lambda a: a[0] if a[0] != "portal" else "portal list")
def test_a_database_that_cannot_be_used_is_named_with_the_servers_reason_and_no_password(
    password_cluster: PgCluster, tmp_path: Path, case: str, args: tuple[str, ...]
) -> None:
    url, fragments = next((u, f) for c, u, f in _failures(password_cluster) if c == case)
    if args[0] == "serve":
        args = ("serve", "--port", str(free_port()))
    result = run(tmp_path / "data", *args, timeout=60, SMTPSETTINGS_DATABASE_URL=url, SMTPSETTINGS_DATABASE_TIMEOUT="3")
    assert_one_line_error(result, "error: cannot use the PostgreSQL database", *fragments.split("|"))
    assert "try again shortly" not in result.stderr
    assert PASSWORD not in result.stderr + result.stdout


def test_an_admin_command_on_an_empty_postgresql_database_refuses_and_creates_no_schema(pg_cluster: PgCluster, tmp_path: Path) -> None:
    url = pg_cluster.create_database()
    name = url.rsplit("/", 1)[1]
    result = run(tmp_path / "data", "portal", "create", "fresh.test", SMTPSETTINGS_DATABASE_URL=url)
    assert_one_line_error(result, f"no smtpsettings database: the PostgreSQL database '{name}' on 127.0.0.1:{pg_cluster.port}")
    assert not (tmp_path / "data").exists()
    created = run(tmp_path / "data", "migrate", SMTPSETTINGS_DATABASE_URL=url)
    assert created.returncode == 0, created.stderr
    made = run(tmp_path / "data", "portal", "create", "fresh.test", SMTPSETTINGS_DATABASE_URL=url)
    assert made.returncode == 0, made.stderr
