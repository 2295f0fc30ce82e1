"""Shared fixtures; the machinery behind them lives in ``serverkit``."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import trustme
from pgcluster import PgCluster, find_pg_bin
from serverkit import Portal, Server, make_portal, start_server

BACKENDS = ["sqlite", "postgresql"]


def _new_cluster() -> PgCluster:
    """A new PostgreSQL cluster; skipped (with the reason) where the binaries are absent.

    CI sets SMTPSETTINGS_REQUIRE_POSTGRES=1, and there a missing PostgreSQL fails instead of skipping.
    """
    bin_dir = find_pg_bin()
    if bin_dir is None:
        reason = "PostgreSQL server binaries (initdb, pg_ctl) not found; install Debian's postgresql package"
        if os.environ.get("SMTPSETTINGS_REQUIRE_POSTGRES") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    return PgCluster(bin_dir)


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    """A PostgreSQL cluster of the session's own, shared by the tests."""
    cluster = _new_cluster()
    yield cluster
    cluster.destroy()


@pytest.fixture
def own_cluster() -> Iterator[PgCluster]:
    """A cluster a test may stop and start: the session's shared one serves every other test."""
    cluster = _new_cluster()
    yield cluster
    cluster.destroy()


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database of each backend: a SQLite file, or a new database in the session's cluster."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'test.db'}"
    return request.getfixturevalue("pg_cluster").create_database()


@pytest.fixture(scope="session")
def ca() -> trustme.CA:
    """The CA the shared server trusts for SMTP (SMTPSETTINGS_SMTP_CA_FILE), made at run time."""
    return trustme.CA()


@pytest.fixture(scope="session", params=BACKENDS)
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, ca: trustme.CA) -> Iterator[Server]:
    """The shared server, once on SQLite and once on PostgreSQL: every test using it runs on both."""
    base = tmp_path_factory.mktemp(f"server-{request.param}")
    ca.cert_pem.write_to_path(str(base / "ca.pem"))
    database, cluster = {}, None
    if request.param == "postgresql":
        cluster = request.getfixturevalue("pg_cluster")
        database["SMTPSETTINGS_DATABASE_URL"] = cluster.create_database()
    srv = start_server(
        base / "data",
        {
            **database,
            "SMTPSETTINGS_SMTP_CA_FILE": str(base / "ca.pem"),
            # Short deadlines keep the tarpit tests quick; production defaults are 10/30/60 s.
            "SMTPSETTINGS_SMTP_CONNECT_TIMEOUT": "2",
            "SMTPSETTINGS_SMTP_COMMAND_TIMEOUT": "2",
            "SMTPSETTINGS_SMTP_JOB_TIMEOUT": "8",
            # Outbox retries within the test's patience: 0.5 s, 1 s, 2 s ... (production: 30 s, 1 min ...).
            "SMTPSETTINGS_OUTBOX_FIRST_RETRY_SECONDS": "0.5",
            # All tests sign in from 127.0.0.1: the per-address limit is tested on a server of its own.
            "SMTPSETTINGS_LOGIN_MAX_FAILURES_PER_ADDRESS": "100000",
            "SMTPSETTINGS_DEFAULT_SMTP_HOST": "mail.default.test",
            "SMTPSETTINGS_DEFAULT_SMTP_PORT": "2525",
            "SMTPSETTINGS_DEFAULT_SMTP_SENDER_ADDRESS": "portal@default.test",
            "SMTPSETTINGS_DEFAULT_SMTP_SENDER_DISPLAY_NAME": "Default Sender",
            "SMTPSETTINGS_DEFAULT_SMTP_ENABLE_AUTH": "true",
            "SMTPSETTINGS_DEFAULT_SMTP_USERNAME": "default-user",
            "SMTPSETTINGS_DEFAULT_SMTP_PASSWORD": "default-secret-Zq9",
        },
    )
    srv.pg = cluster
    yield srv
    srv.stop()


@pytest.fixture
def portal(server: Server) -> Portal:
    return make_portal(server)


@pytest.fixture
def portal_factory(server: Server) -> Callable[[], Portal]:
    return lambda: make_portal(server)
