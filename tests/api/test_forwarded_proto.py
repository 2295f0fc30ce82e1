"""Behind a TLS-terminating proxy: the scheme the client used, from the proxy's header, and from it only.

With ``X-Forwarded-Proto: https`` (or ``Forwarded: proto=https``) from a peer in
``SMTPSETTINGS_TRUSTED_PROXIES`` the sign-in cookie is ``Secure`` and the envelope's links say ``https://``;
the same header from anyone else changes nothing. The same proxies' ``X-Forwarded-For`` names the client in
each request's log line, as it does for sign-in limits and the audit log.
"""

from __future__ import annotations

import ipaddress
import json
import time
from collections.abc import Iterator

import pytest
from serverkit import PASSWORD, Server, make_portal, start_server

from smtpsettings.api.context import forwarded_client, forwarded_scheme
from smtpsettings.domain.accounts import Role

AUTH = "/api/2.0/authentication"
LOOPBACK = (ipaddress.ip_network("127.0.0.1/32"),)


def sign_in(server: Server, headers: dict[str, str]) -> tuple[str, str]:
    """The Set-Cookie header and the envelope's link of a sign-in sent with ``headers``."""
    portal = make_portal(server)
    with portal.client(headers=headers) as c:
        r = c.post(AUTH, json={"userName": portal.emails[Role.ADMIN], "password": PASSWORD})
    assert r.status_code == 200, r.text
    return r.headers["set-cookie"], r.json()["links"][0]["href"]


@pytest.fixture(scope="module")
def behind_proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(tmp_path_factory.mktemp("proxied") / "data", {"SMTPSETTINGS_TRUSTED_PROXIES": "127.0.0.1"})
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def other_proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(tmp_path_factory.mktemp("other") / "data", {"SMTPSETTINGS_TRUSTED_PROXIES": "10.0.0.0/8"})
    yield srv
    srv.stop()


@pytest.mark.parametrize(
    "headers",
    [{"X-Forwarded-Proto": "https"}, {"Forwarded": 'for=198.51.100.7;proto=https;host="docs.example.com"'}, {"X-Forwarded-Proto": "HTTPS"}],
    ids=["x-forwarded-proto", "forwarded", "upper case"],
)
def test_https_from_a_trusted_proxy_makes_the_cookie_secure_and_the_links_https(behind_proxy: Server, headers: dict[str, str]) -> None:
    cookie, href = sign_in(behind_proxy, headers)
    assert "Secure" in cookie and "HttpOnly" in cookie
    assert href.startswith("https://p") and href.endswith(AUTH)


def test_without_the_header_a_trusted_proxy_gets_plain_http(behind_proxy: Server) -> None:
    cookie, href = sign_in(behind_proxy, {})
    assert "Secure" not in cookie
    assert href.startswith("http://")


@pytest.mark.parametrize("headers", [{"X-Forwarded-Proto": "https"}, {"Forwarded": "proto=https"}])
def test_the_header_from_a_peer_that_is_not_a_trusted_proxy_is_ignored(other_proxy: Server, server: Server, headers: dict[str, str]) -> None:
    for untrusting in (other_proxy, server):  # trusting other addresses, and trusting none (the shared server)
        cookie, href = sign_in(untrusting, headers)
        assert "Secure" not in cookie
        assert href.startswith("http://")


@pytest.mark.parametrize(
    ("x_forwarded_proto", "forwarded", "expected"),
    [
        (b"https", None, "https"),
        (b"http", None, "http"),
        (b"https, http", None, "http"),  # the value the proxy next to us wrote is the last
        (None, b"for=192.0.2.1;proto=https", "https"),
        (None, b'for=192.0.2.1;proto="https"', "https"),
        (None, b"proto=http, for=192.0.2.1;proto=https", "https"),
        (None, b"for=192.0.2.1", None),
        (b"https", b"proto=http", "https"),  # X-Forwarded-Proto wins
        (b"gopher", None, None),
        (b"", None, None),
    ],
)
def test_forwarded_scheme_reads_the_proxys_value(x_forwarded_proto: bytes | None, forwarded: bytes | None, expected: str | None) -> None:
    assert forwarded_scheme("127.0.0.1", x_forwarded_proto, forwarded, LOOPBACK) == expected


def test_forwarded_scheme_believes_no_peer_outside_the_trusted_networks() -> None:
    assert forwarded_scheme("192.0.2.9", b"https", None, LOOPBACK) is None
    assert forwarded_scheme("127.0.0.1", b"https", None, ()) is None
    assert forwarded_scheme("not an address", b"https", None, LOOPBACK) is None


def logged_client(server: Server, forwarded_for: str) -> str:
    """The ``client`` of the log line of one request sent from 127.0.0.1 with ``X-Forwarded-For``."""
    portal = make_portal(server)
    with portal.client(headers={"X-Forwarded-For": forwarded_for}) as c:
        request_id = c.get("/api/2.0/authentication").headers["x-request-id"]
    deadline = time.monotonic() + 10
    while True:  # the line is written once the answer has gone out
        lines = [line for line in server.log_text().splitlines() if f'"{request_id}"' in line]
        if lines or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    (line,) = lines
    return str(json.loads(line)["client"])


def test_the_log_line_names_the_client_a_trusted_proxy_forwards(behind_proxy: Server, server: Server) -> None:
    assert logged_client(behind_proxy, "198.51.100.7") == "198.51.100.7"
    assert logged_client(server, "198.51.100.7") == "127.0.0.1"  # from a peer no one trusts: the peer


@pytest.mark.parametrize(
    ("peer", "x_forwarded_for", "expected"),
    [
        ("127.0.0.1", "198.51.100.7", "198.51.100.7"),
        ("127.0.0.1", "203.0.113.1, 198.51.100.7", "198.51.100.7"),  # what the client wrote itself is not believed
        ("127.0.0.1", "198.51.100.7, 127.0.0.1", "198.51.100.7"),  # proxies in the chain are skipped
        ("127.0.0.1", None, "127.0.0.1"),
        ("192.0.2.9", "198.51.100.7", "192.0.2.9"),  # not a trusted proxy
    ],
)
def test_forwarded_client_takes_the_rightmost_untrusted_address(peer: str, x_forwarded_for: str | None, expected: str) -> None:
    assert forwarded_client(peer, x_forwarded_for, LOOPBACK) == expected
