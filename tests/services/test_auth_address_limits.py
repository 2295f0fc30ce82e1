"""The per-address limit on failed sign-ins groups IPv6 clients by /64, for HTTP sign-ins and SMTP AUTH alike.

One host commonly holds a whole /64, so counting single IPv6 addresses would give it a fresh limit for each
guess. Real services on a real SQLite file; the addresses are documentation ranges, never contacted.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from smtpsettings.config import load_settings
from smtpsettings.domain.accounts import Portal, Role
from smtpsettings.domain.errors import NotAuthenticated, TooManyRequests
from smtpsettings.domain.passwords import SignInSecret
from smtpsettings.services.accounts import AccountsService
from smtpsettings.services.auth import login_address_bucket
from smtpsettings.wiring import Services

LIMIT = 2
PASSWORD = "correct horse battery"


@pytest.mark.parametrize(
    ("address", "bucket"),
    [
        ("2001:db8:1:2::1", "login:address:2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff:ffff:ffff:ffff", "login:address:2001:db8:1:2::/64"),
        ("2001:DB8:1:2::1%eth0", "login:address:2001:db8:1:2::/64"),
        ("2001:db8:1:3::1", "login:address:2001:db8:1:3::/64"),
        ("::1", "login:address:::/64"),
        ("::ffff:192.0.2.1", "login:address:192.0.2.1"),
        ("192.0.2.1", "login:address:192.0.2.1"),
        ("testclient", "login:address:testclient"),
    ],
)
def test_ipv6_clients_share_their_64s_bucket_and_ipv4_clients_have_their_own(address: str, bucket: str) -> None:
    assert login_address_bucket(address) == bucket


@dataclass
class Setup:
    services: Services
    portal: Portal
    key: str


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[Setup]:
    settings = load_settings(
        {
            "SMTPSETTINGS_DATA_DIR": str(tmp_path),
            "SMTPSETTINGS_LOGIN_MAX_FAILURES_PER_ADDRESS": str(LIMIT),
            "SMTPSETTINGS_SUBMISSION_MAX_FAILURES_PER_ADDRESS": str(LIMIT),
            "SMTPSETTINGS_LOGIN_MAX_FAILURES_PER_ACCOUNT": "1000",
        }
    )
    services = Services(settings)
    services.db.migrate()
    accounts = AccountsService(services.db)
    portal = accounts.create_portal("one.test", is_default=False)
    accounts.create_user("one.test", email="app@one.test", password=PASSWORD, role=Role.ADMIN)
    _, key = accounts.create_api_key("one.test", "app@one.test", "mail.send")
    try:
        yield Setup(services, portal, key)
    finally:
        await services.db.dispose_async()


async def test_smtp_auth_failures_from_one_64_lock_out_its_other_addresses(setup: Setup) -> None:
    auth = setup.services.auth
    for n in range(LIMIT):
        with pytest.raises(NotAuthenticated):
            await auth.authenticate_api_key("one.test", f"sk-guess{n}", f"2001:db8:1:2::{n + 1}")
    with pytest.raises(TooManyRequests):  # the right key, from another address of the same /64
        await auth.authenticate_api_key("one.test", setup.key, "2001:db8:1:2:abcd::9")
    portal, _ = await auth.authenticate_api_key("one.test", setup.key, "2001:db8:1:3::1")  # the next /64
    assert portal.hostname == "one.test"


async def test_http_sign_in_failures_from_one_64_lock_out_its_other_addresses(setup: Setup) -> None:
    auth = setup.services.auth
    for n in range(LIMIT):
        with pytest.raises(NotAuthenticated):
            await auth.verify(setup.portal, "app@one.test", SignInSecret(f"wrong {n}"), f"2001:db8:5:6::{n + 1}")
    with pytest.raises(TooManyRequests):
        await auth.verify(setup.portal, "app@one.test", SignInSecret(PASSWORD), "2001:db8:5:6:ffff::1")
    verified = await auth.verify(setup.portal, "app@one.test", SignInSecret(PASSWORD), "2001:db8:5:7::1")
    assert verified.user.email == "app@one.test"
