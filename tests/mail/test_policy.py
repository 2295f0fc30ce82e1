from __future__ import annotations

import ipaddress

import pytest

from smtpsettings.mail import MailPolicy, SmtpTarget, denied_network, plaintext_auth_allowed, uses_implicit_tls


@pytest.mark.parametrize(
    ("port", "enable_ssl", "expected"),
    [(465, True, True), (587, True, False), (25, True, False), (465, False, False)],
)
def test_implicit_tls_only_on_465_with_ssl(port: int, enable_ssl: bool, expected: bool) -> None:
    target = SmtpTarget(host="mail.example.com", port=port, enable_ssl=enable_ssl, enable_auth=False)
    assert uses_implicit_tls(target) is expected


def test_target_repr_hides_password() -> None:
    target = SmtpTarget("mail.example.com", 587, True, True, "user", "hunter2-secret")
    assert "hunter2-secret" not in repr(target)
    assert "hunter2-secret" not in str(target)


@pytest.mark.parametrize(
    ("address", "network"),
    [
        ("169.254.169.254", "169.254.0.0/16"),
        ("::ffff:169.254.169.254", "169.254.0.0/16"),  # IPv4-mapped must not bypass
        ("fe80::1", "fe80::/10"),
        ("10.0.0.1", None),
        ("127.0.0.1", None),
    ],
)
def test_default_deny_networks(address: str, network: str | None) -> None:
    found = denied_network(address, MailPolicy())
    assert (str(found) if found else None) == network


def test_custom_deny_networks() -> None:
    policy = MailPolicy(deny_networks=(ipaddress.ip_network("10.0.0.0/8"),))
    assert str(denied_network("10.1.2.3", policy)) == "10.0.0.0/8"
    assert denied_network("169.254.169.254", policy) is None


@pytest.mark.parametrize(
    ("address", "tls", "allow", "expected"),
    [
        ("192.0.2.10", False, False, False),
        ("192.0.2.10", True, False, True),
        ("192.0.2.10", False, True, True),
        ("127.0.0.1", False, False, True),
        ("::1", False, False, True),
        ("::ffff:127.0.0.1", False, False, True),
        ("2001:db8::1", False, False, False),
    ],
)
def test_plaintext_auth_decision(address: str, tls: bool, allow: bool, expected: bool) -> None:
    policy = MailPolicy(allow_plaintext_auth=allow)
    assert plaintext_auth_allowed(address, tls_active=tls, policy=policy) is expected
