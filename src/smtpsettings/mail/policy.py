"""Operator policy: deadlines, trust, and what the service refuses to do.

Admins choose the target; operators (via configuration) decide which networks
may be reached and whether credentials may travel unencrypted. The decisions
are pure functions so they can be tested without sockets.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

__all__ = [
    "DEFAULT_DENY_NETWORKS",
    "IPAddress",
    "IPNetwork",
    "MailPolicy",
    "denied_match",
    "denied_network",
    "embedded_ipv4",
    "plaintext_auth_allowed",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

DEFAULT_DENY_NETWORKS: tuple[IPNetwork, ...] = (
    ipaddress.ip_network("169.254.0.0/16"),  # link-local, incl. cloud metadata 169.254.169.254
    ipaddress.ip_network("fe80::/10"),
)


@dataclass(frozen=True)
class MailPolicy:
    """Operator settings for every send.

    Attributes:
        connect_timeout: Seconds for DNS, TCP connect and each TLS handshake.
        command_timeout: Seconds to wait for each SMTP reply (greeting included).
        total_timeout: Seconds for the whole send, whatever the step.
        ca_file: Extra CA bundle trusted in addition to the system store.
        allow_plaintext_auth: Permit AUTH without TLS to non-loopback hosts.
        helo_name: Name sent in EHLO/HELO; ``None`` uses the local FQDN.
        deny_networks: Resolved addresses inside these are never connected to.
    """

    connect_timeout: float = 10.0
    command_timeout: float = 30.0
    total_timeout: float = 60.0
    ca_file: str | None = None
    allow_plaintext_auth: bool = False
    helo_name: str | None = None
    deny_networks: tuple[IPNetwork, ...] = DEFAULT_DENY_NETWORKS


def _normalise(address: IPAddress) -> IPAddress:
    # ::ffff:127.0.0.1 is loopback for the plaintext-AUTH exemption; nothing wider is (see embedded_ipv4).
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


# RFC 6052 section 2.2: the octets (0..15) holding the IPv4 address for each prefix length; octet 8 ("u")
# is always skipped.
_RFC6052_OCTETS: dict[int, tuple[int, int, int, int]] = {
    32: (4, 5, 6, 7),
    40: (5, 6, 7, 9),
    48: (6, 7, 9, 10),
    56: (7, 9, 10, 11),
    64: (9, 10, 11, 12),
    96: (12, 13, 14, 15),
}
# The well-known NAT64 prefix is a /96 (RFC 6052); the local-use /48 (RFC 8215) may be used with any RFC 6052
# length that fits inside it, so every such position is checked.
_NAT64_PREFIXES: tuple[tuple[ipaddress.IPv6Network, tuple[int, ...]], ...] = (
    (ipaddress.IPv6Network("64:ff9b::/96"), (96,)),
    (ipaddress.IPv6Network("64:ff9b:1::/48"), (48, 56, 64, 96)),
)
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")  # deprecated (RFC 4291), still routed by some stacks
_IPV4_TRANSLATED = ipaddress.IPv6Network("::ffff:0:0:0/96")  # SIIT (RFC 2765)


def embedded_ipv4(address: IPAddress) -> tuple[ipaddress.IPv4Address, ...]:
    """The IPv4 addresses an IPv6 address carries and may deliver packets to.

    IPv4-mapped, IPv4-compatible, IPv4-translated, NAT64 (well-known and local-use prefixes), 6to4 and
    Teredo (the client address) spellings all reach an IPv4 host. A deny rule for 169.254.0.0/16 must hold
    for ``64:ff9b::a9fe:a9fe`` and ``::169.254.169.254`` as much as for ``169.254.169.254``, so the deny
    check looks at these as well as at the address itself.
    """
    if not isinstance(address, ipaddress.IPv6Address):
        return ()
    found: list[ipaddress.IPv4Address] = []
    packed = address.packed
    if address.ipv4_mapped is not None:
        found.append(address.ipv4_mapped)
    if address in _IPV4_TRANSLATED or (address in _IPV4_COMPATIBLE and int(address) > 1):  # not :: or ::1
        found.append(ipaddress.IPv4Address(packed[12:]))
    for prefix, lengths in _NAT64_PREFIXES:
        if address in prefix:
            found.extend(ipaddress.IPv4Address(bytes(packed[i] for i in _RFC6052_OCTETS[n])) for n in lengths)
    if address.sixtofour is not None:
        found.append(address.sixtofour)
    if address.teredo is not None:
        found.append(address.teredo[1])  # the client, where the packets go
    return tuple(dict.fromkeys(found))


def denied_match(address: IPAddress | str, policy: MailPolicy) -> tuple[IPNetwork, IPAddress] | None:
    """The deny network that ``address`` or an IPv4 address embedded in it falls in, and that address.

    ``None`` when the address is allowed. See :func:`embedded_ipv4` for the spellings looked through.
    """
    addr = ipaddress.ip_address(address) if isinstance(address, str) else address
    for candidate in (addr, *embedded_ipv4(addr)):
        for network in policy.deny_networks:
            if candidate.version == network.version and candidate in network:
                return network, candidate
    return None


def denied_network(address: IPAddress | str, policy: MailPolicy) -> IPNetwork | None:
    """Return the deny network containing ``address`` (or an IPv4 address embedded in it), or ``None``."""
    match = denied_match(address, policy)
    return match[0] if match is not None else None


def plaintext_auth_allowed(address: IPAddress | str, *, tls_active: bool, policy: MailPolicy) -> bool:
    """Whether credentials may be sent on this connection.

    Loopback is exempt because the traffic never leaves the machine (local
    relays, tests); anything else needs TLS unless the operator opted out.
    """
    if tls_active or policy.allow_plaintext_auth:
        return True
    addr = _normalise(ipaddress.ip_address(address) if isinstance(address, str) else address)
    return addr.is_loopback
