from __future__ import annotations

import ipaddress

import pytest

from smtpsettings.mail import MailPolicy, SmtpTarget, denied_network, plaintext_auth_allowed, uses_implicit_tls
from smtpsettings.mail.policy import denied_match, embedded_ipv4


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


# -- IPv6 spellings of IPv4 addresses ---------------------------------------------------------------

LINK_LOCAL = "169.254.0.0/16"


@pytest.mark.parametrize(
    ("address", "embedded"),
    [
        ("::ffff:169.254.169.254", "169.254.169.254"),  # IPv4-mapped
        ("::169.254.169.254", "169.254.169.254"),  # IPv4-compatible
        ("::a9fe:a9fe", "169.254.169.254"),  # the same, written in hex
        ("::ffff:0:169.254.169.254", "169.254.169.254"),  # IPv4-translated (SIIT)
        ("64:ff9b::a9fe:a9fe", "169.254.169.254"),  # NAT64, well-known prefix
        ("64:ff9b::169.254.169.254", "169.254.169.254"),
        ("64:ff9b:1::a9fe:a9fe", "169.254.169.254"),  # NAT64 local-use /48, used with a /96
        ("64:ff9b:1:a9fe:a9:fe00::", "169.254.169.254"),  # local-use as a /48: octets 6, 7, 9, 10
        ("64:ff9b:1:a9:fe:a9fe::", "169.254.169.254"),  # as a /56: octets 7, 9, 10, 11
        ("64:ff9b:1:0:a9:fea9:fe00:0", "169.254.169.254"),  # as a /64: octets 9..12
        ("2002:a9fe:a9fe::1", "169.254.169.254"),  # 6to4
        ("2001:0:4136:e378:8000:63bf:5601:5601", "169.254.169.254"),  # Teredo: client bits inverted
    ],
)
def test_an_ipv6_spelling_of_a_denied_ipv4_address_is_denied(address: str, embedded: str) -> None:
    policy = MailPolicy()
    assert ipaddress.ip_address(embedded) in embedded_ipv4(ipaddress.ip_address(address))
    assert str(denied_network(address, policy)) == LINK_LOCAL
    match = denied_match(address, policy)
    assert match is not None and str(match[0]) == LINK_LOCAL and str(match[1]) == embedded


@pytest.mark.parametrize(
    "address",
    [
        "::ffff:10.0.0.1",
        "::10.0.0.1",
        "64:ff9b::a00:1",
        "2002:a00:1::1",
        "2001:0:4136:e378:8000:63bf:f5ff:fffe",  # Teredo client 10.0.0.1
        "2001:db8::a9fe:a9fe",  # documentation prefix: no IPv4 inside, the low bits mean nothing
        "2a00:1450:4001:81d::a9fe:a9fe",  # an ordinary global address ending in the same bits
    ],
)
def test_an_ipv6_address_embedding_an_allowed_or_no_ipv4_address_is_allowed(address: str) -> None:
    assert denied_network(address, MailPolicy()) is None


@pytest.mark.parametrize("address", ["::", "::1"])
def test_the_unspecified_and_loopback_addresses_are_not_ipv4_compatible(address: str) -> None:
    assert embedded_ipv4(ipaddress.ip_address(address)) == ()


def test_an_operator_deny_rule_for_loopback_holds_for_every_spelling() -> None:
    policy = MailPolicy(deny_networks=(ipaddress.ip_network("127.0.0.0/8"),))
    for address in ("127.0.0.1", "::ffff:127.0.0.1", "::127.0.0.1", "64:ff9b::7f00:1", "2002:7f00:1::"):
        assert str(denied_network(address, policy)) == "127.0.0.0/8", address


def test_the_ipv6_address_itself_is_matched_before_what_it_embeds() -> None:
    policy = MailPolicy(deny_networks=(ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network(LINK_LOCAL)))
    match = denied_match("64:ff9b::a9fe:a9fe", policy)
    assert match is not None and str(match[0]) == "64:ff9b::/96" and str(match[1]) == "64:ff9b::a9fe:a9fe"
