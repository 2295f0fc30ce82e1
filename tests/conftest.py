"""Shared fixtures; the machinery behind them lives in ``serverkit``."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import trustme
from serverkit import Portal, Server, make_portal, start_server


@pytest.fixture(scope="session")
def ca() -> trustme.CA:
    """The CA the shared server trusts for SMTP (SMTPSETTINGS_SMTP_CA_FILE), made at run time."""
    return trustme.CA()


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory, ca: trustme.CA) -> Iterator[Server]:
    base = tmp_path_factory.mktemp("server")
    ca.cert_pem.write_to_path(str(base / "ca.pem"))
    srv = start_server(
        base / "data",
        {
            "SMTPSETTINGS_SMTP_CA_FILE": str(base / "ca.pem"),
            # Short deadlines keep the tarpit tests quick; production defaults are 10/30/60 s.
            "SMTPSETTINGS_SMTP_CONNECT_TIMEOUT": "2",
            "SMTPSETTINGS_SMTP_COMMAND_TIMEOUT": "2",
            "SMTPSETTINGS_SMTP_JOB_TIMEOUT": "8",
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
    yield srv
    srv.stop()


@pytest.fixture
def portal(server: Server) -> Portal:
    return make_portal(server)


@pytest.fixture
def portal_factory(server: Server) -> Callable[[], Portal]:
    return lambda: make_portal(server)
