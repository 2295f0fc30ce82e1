"""Where a connection may go: host names, IP literals and token URLs as admins type them.

The rules say what is wrong in words an admin can act on ("a URL is not a host name"), because these values
arrive from a form and a 400 that only says "invalid" sends the admin guessing.
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

import idna

__all__ = ("check_host", "check_token_url")


# How inet_aton, which some resolvers try first, reads the parts of 127.1 or 0x7f000001.
_NUMBER_LABEL = re.compile(r"0[xX][0-9A-Fa-f]*|[0-9]+")
_NOT_IN_A_NAME = (
    ("/", "a URL is not a host name; give only the name"),
    ("@", "an email address is not a host name"),
)


def check_host(value: str) -> tuple[str | None, str]:
    """Whether ``value`` (stripped) names a server to connect to: ``(problem, the host to store)``.

    Accepted: an RFC 1123 host name; an international name valid under IDNA 2008, stored as typed (the
    mail client connects to its A-label); an IPv4 address in dotted decimal; an IPv6 address, bare or in
    brackets. IP addresses are stored bare and compressed (``[::1]`` becomes ``::1``) so that a server
    has one spelling: the stored-password rule compares hosts, and TLS and the resolver want it bare.
    ``problem`` says what is wrong, for the 400 message, e.g. ``"'smtp://x' contains '/' (a URL is not
    a host name; give only the name)"``. A trailing dot is refused: certificates never match it.
    """
    shown = _shown(value)
    if any(char.isspace() for char in value):
        return f"{shown} contains a space", value
    for char, why in _NOT_IN_A_NAME:
        if char in value:
            return f"{shown} contains {char!r} ({why})", value
    if value.startswith("[") or ":" in value:
        return _check_ip_literal(value)
    try:
        return None, str(ipaddress.IPv4Address(value))
    except ValueError:
        pass
    labels = value.split(".")
    if all(_NUMBER_LABEL.fullmatch(label) for label in labels):
        return f"{shown} is not a valid IPv4 address: give four numbers from 0 to 255, like 192.0.2.25", value
    for char in value:
        if char.isascii() and not (char.isalnum() or char in ".-"):
            return f"{shown} contains {char!r}, which a host name cannot contain", value
    name = value
    if not value.isascii():
        try:
            # Case, full-width forms and ideographic full stops, as a browser or resolver library maps them.
            name = idna.uts46_remap(value, std3_rules=True, transitional=False)
        except idna.IDNAError as exc:
            return f"{shown} is not a valid international host name ({exc})", value
        labels = name.split(".")
    if "" in labels[:-1]:
        return f"{shown} has an empty label (two dots in a row, or a dot at the start)", value
    if labels[-1] == "":
        return f"{shown} ends with a dot: leave it out", value
    a_labels: list[str] = []
    for label in labels:
        a_label = label if label.isascii() else "xn--" + label.encode("punycode").decode("ascii")
        if len(a_label) > 63:
            return f"{shown}: a label is longer than 63 characters", value
        if label.startswith("-") or label.endswith("-"):
            return f"{shown}: a label starts or ends with '-'", value
        try:  # IDNA 2008: allowed code points, joiners, bidi; and an A-label typed as such must decode
            if not label.isascii():
                idna.alabel(label)
            elif label[:4].lower() == "xn--":
                idna.ulabel(label)
        except idna.IDNAError as exc:
            return f"{shown} is not a valid international host name ({exc})", value
        a_labels.append(a_label)
    if len(".".join(a_labels)) > 253:
        return f"{shown}: the name is longer than 253 characters (counted as it goes over DNS)", value
    if labels[-1].isdigit():
        return f"{shown} ends with an all-numeric label, which no domain has", value
    return None, value


def _shown(value: str) -> str:
    return repr(value if len(value) <= 60 else value[:57] + "...")


def _check_ip_literal(value: str) -> tuple[str | None, str]:
    """:func:`check_host` for a value with brackets or a colon: an IPv6 address, or a name with a port."""
    shown = _shown(value)
    port = f"{shown} includes a port: give the port in the Port field"
    inside = value
    if value.startswith("["):
        inside, bracket, after = value[1:].partition("]")
        if bracket and after.startswith(":") and after[1:].isdigit():
            return port, value
        if not bracket or after:
            return f"{shown} is not an IPv6 address in brackets, like [2001:db8::25]", value
        try:
            return None, str(ipaddress.IPv4Address(inside))  # the SMTP address-literal form, [192.0.2.25]
        except ValueError:
            pass
    elif value.count(":") == 1:
        return port, value
    if "%" in inside:
        return f"{shown} has an IPv6 zone index ('%'), which is not supported", value
    try:
        return None, str(ipaddress.IPv6Address(inside))
    except ValueError:
        return f"{shown} is not a valid IPv6 address", value


def check_token_url(url: str) -> str | None:
    """What is wrong with ``url`` as a token endpoint, or ``None``.

    https only, except plain http to a loopback address (tests, an identity provider on the same
    machine): the client secret and assertions travel in the request. No user name or password in the
    URL (it would be stored unencrypted and shown in every answer) and no fragment.
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        return f"{_shown(url)} cannot be read ({exc})"
    scheme = parts.scheme.lower()
    if scheme not in ("https", "http") or not parts.netloc:
        return f"{_shown(url)} does not start with https://"
    if "@" in parts.netloc:
        return f"{_shown(url)} holds a user name or password; the secret goes in Oauth2.ClientSecret"
    if parts.fragment or url.endswith("#"):
        return f"{_shown(url)} has a fragment ('#')"
    host = parts.hostname or ""
    problem, _ = check_host(host) if host else (f"{_shown(url)} names no host", host)
    if problem:
        return problem
    if port == 0:
        return f"{_shown(url)} has port 0"
    if scheme == "http" and not _loopback(host):
        return f"{_shown(url)} uses http://, which is allowed only to a loopback address such as 127.0.0.1"
    return None


def _loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
