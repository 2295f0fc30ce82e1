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
    "denied_network",
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
    # ::ffff:169.254.169.254 must not bypass an IPv4 deny rule.
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def denied_network(address: IPAddress | str, policy: MailPolicy) -> IPNetwork | None:
    """Return the deny network containing ``address``, or ``None`` if allowed."""
    addr = _normalise(ipaddress.ip_address(address) if isinstance(address, str) else address)
    for network in policy.deny_networks:
        if addr.version == network.version and addr in network:
            return network
    return None


def plaintext_auth_allowed(address: IPAddress | str, *, tls_active: bool, policy: MailPolicy) -> bool:
    """Whether credentials may be sent on this connection.

    Loopback is exempt because the traffic never leaves the machine (local
    relays, tests); anything else needs TLS unless the operator opted out.
    """
    if tls_active or policy.allow_plaintext_auth:
        return True
    addr = _normalise(ipaddress.ip_address(address) if isinstance(address, str) else address)
    return addr.is_loopback
