"""Names of the failed-sign-in counters, one family per channel, so one channel never locks the other.

HTTP sign-ins count per account and per client address, wrong HTTP Bearer keys per key; SMTP AUTH on the submission port counts per client
address and per API key (named by the public id at the front of the key). A misconfigured application
retrying a wrong key locks out that key, then at most its own host's SMTP clients, never the administrator's
HTTP sign-in.
"""

from __future__ import annotations

import ipaddress
from typing import Literal

__all__ = ("KINDS", "Kind", "address_group", "bucket", "parse_bucket")

Kind = Literal["http-account", "http-address", "http-key", "smtp-address", "smtp-key"]

# The kind of each counter and the prefix of its bucket name in the rate-counter table. The HTTP names are
# the ones used before SMTP AUTH had counters of its own, so counts in flight at an upgrade carry on.
KINDS: dict[Kind, str] = {
    "http-account": "login:account:",
    "http-address": "login:address:",
    "http-key": "login:key:",
    "smtp-address": "smtp:address:",
    "smtp-key": "smtp:key:",
}


def address_group(client_address: str) -> str:
    """The client address as counted: an IPv6 client by its /64, an IPv4-mapped one as its IPv4 address.

    One host commonly holds a whole /64 and could otherwise take a fresh address for each guess.
    """
    try:
        ip = ipaddress.ip_address(client_address.split("%", 1)[0])
    except ValueError:
        return client_address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is None:
            return str(ipaddress.IPv6Network((ip, 64), strict=False))
        ip = ip.ipv4_mapped
    return str(ip)


def bucket(kind: Kind, subject: str) -> str:
    """The bucket name of a counter; addresses are grouped (see :func:`address_group`)."""
    if kind in ("http-address", "smtp-address"):
        subject = address_group(subject)
    return KINDS[kind] + subject


def parse_bucket(name: str) -> tuple[Kind, str] | None:
    """``(kind, subject)`` of a failed-sign-in bucket name, or None for any other counter."""
    for kind, prefix in KINDS.items():
        if name.startswith(prefix):
            return kind, name[len(prefix) :]
    return None
