"""Two instances on one PostgreSQL database behind nginx, set up as docs/deployment.md tells an operator.

nginx is Debian's, run in the foreground with the docs' "Load balancer (nginx)" configuration taken from the
page itself: only the upstream addresses, the listen address and the certificate paths are replaced, so a
change to the documented configuration is tested as written. TLS ends at nginx (a trustme certificate), so
nginx sends ``X-Forwarded-Proto: https`` as it would in production. The second instance gets the first one's
key ring with ``keys export`` / ``keys import``, as the docs say.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import ssl
import subprocess
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import trustme
from pgcluster import PgCluster
from serverkit import PASSWORD, Portal, Server, free_port, make_portal, start_server, wait_for_result
from smtp_peers import smtp_peer
from test_key_ring_instances import copy_ring
from test_sdk import OWNER_EMAIL, exercise_smtp_settings

from smtpsettings.domain.accounts import Role

with warnings.catch_warnings():
    warnings.simplefilter("ignore", UserWarning)  # the SDK's models warn about a field named "copy"
    import docspace_api_sdk as sdk

DOCS = Path(__file__).resolve().parents[2] / "docs" / "deployment.md"
SETTINGS = "/api/2.0/smtpsettings/smtp"
SMTP_PASSWORD = "smtp-Pass-behind-nginx"
CLIENT_ADDRESS = "127.0.0.2"  # the "real client": nginx sees it, the instances only through X-Forwarded-For


def documented_nginx_config(section: str) -> str:
    """The first ```nginx block under the heading ``section`` of docs/deployment.md."""
    text = DOCS.read_text()
    start = text.index(f"\n## {section}\n")
    match = re.compile(r"```nginx\n(.*?)```", re.S).search(text, start)
    assert match, f"no nginx block under {section!r}"
    return match.group(1)


def replace(text: str, pattern: str, new: str, count: int) -> str:
    """``re.subn`` that fails when the docs no longer hold what the test adapts."""
    result, n = re.subn(pattern, new, text)
    assert n == count, f"expected {count} match(es) of {pattern!r} in the documented configuration, found {n}"
    return result


@dataclass
class Nginx:
    url: str
    process: subprocess.Popen[bytes]


def start_nginx(base: Path, upstreams: list[Server], cert: trustme.LeafCert) -> Nginx:
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(nginx).exists():
        pytest.fail("nginx not found: install Debian's nginx package (.ci/run does)")
    base.mkdir()
    (base / "cert.pem").write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
    cert.private_key_pem.write_to_path(str(base / "key.pem"))
    port = free_port()
    site = documented_nginx_config("Load balancer (nginx)")
    servers = "".join(f"    server {s.base_url.removeprefix('http://')} max_fails=3 fail_timeout=10s;\n" for s in upstreams)
    site = replace(site, r"(    server 10\.0\.1\.\d+:8080 .*;\n)+", servers, 1)
    site = replace(site, r"listen 443 ssl;", f"listen 127.0.0.1:{port} ssl;", 1)
    site = replace(site, r"/etc/ssl/certs/smtpsettings\.pem", str(base / "cert.pem"), 1)
    site = replace(site, r"/etc/ssl/private/smtpsettings\.key", str(base / "key.pem"), 1)
    # The main context a packaged nginx.conf would give, kept inside the test's directory.
    temp = "".join(f"    {kind}_temp_path {base / kind};\n" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    (base / "nginx.conf").write_text(
        f"daemon off;\npid {base / 'nginx.pid'};\nerror_log {base / 'error.log'};\nworker_processes 1;\n"
        f"events {{ worker_connections 256; }}\n"
        f"http {{\n    access_log {base / 'access.log'};\n{temp}{site}}}\n"
    )
    command = [nginx, "-p", str(base), "-c", str(base / "nginx.conf"), "-e", str(base / "error.log")]
    checked = subprocess.run([*command, "-t"], capture_output=True, text=True, timeout=30)
    assert checked.returncode == 0, checked.stderr
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise AssertionError(f"nginx did not start:\n{(base / 'error.log').read_text()}")
            time.sleep(0.05)
    return Nginx(f"https://127.0.0.1:{port}", process)


@dataclass
class Site:
    nginx: Nginx
    a: Server
    b: Server
    ca_file: Path
    owner_password: str

    def client(self, portal: Portal, headers: dict[str, str] | None = None) -> httpx.Client:
        """A client of ``portal`` through nginx, connecting from CLIENT_ADDRESS and trusting the test CA."""
        context = ssl.create_default_context(cafile=str(self.ca_file))
        transport = httpx.HTTPTransport(verify=context, local_address=CLIENT_ADDRESS)
        return httpx.Client(
            base_url=self.nginx.url, transport=transport, headers={"Host": portal.hostname, **(headers or {})}, timeout=30
        )

    def request_lines(self, until: Callable[[list[dict[str, object]]], bool] = lambda _: True) -> list[dict[str, object]]:
        """Both instances' access-log lines, once ``until`` holds for them (or after 10 s): a request's line is
        written just after its answer has gone out."""
        deadline = time.monotonic() + 10
        while True:
            lines = []
            for server in (self.a, self.b):
                for line in server.log_text().splitlines():
                    entry = json.loads(line) if line.startswith("{") else {}
                    if entry.get("event") == "request":
                        lines.append({**entry, "instance": server.base_url})
            if until(lines) or time.monotonic() > deadline:
                return lines
            time.sleep(0.05)

    def served_by_both(self, method: str | None, path: str) -> list[dict[str, object]]:
        """The log lines of ``method path`` (any method when None), once both instances have logged one."""

        def mine(lines: list[dict[str, object]]) -> list[dict[str, object]]:
            return [line for line in lines if line["path"] == path and method in (None, line["method"])]

        lines = mine(self.request_lines(lambda lines: {line["instance"] for line in mine(lines)} == self.instances))
        assert {line["instance"] for line in lines} == self.instances, lines
        return lines

    @property
    def instances(self) -> set[str]:
        return {self.a.base_url, self.b.base_url}


@pytest.fixture
def site(pg_cluster: PgCluster, tmp_path: Path, ca: trustme.CA) -> Iterator[Site]:
    url = pg_cluster.create_database()
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    env = {
        "SMTPSETTINGS_DATABASE_URL": url,
        "SMTPSETTINGS_HOST": "127.0.0.1",
        "SMTPSETTINGS_TRUSTED_PROXIES": "127.0.0.1",  # nginx reaches the instances from 127.0.0.1
        "SMTPSETTINGS_SMTP_CA_FILE": str(tmp_path / "ca.pem"),
    }
    started: list[Server] = []
    nginx: Nginx | None = None
    try:
        # The docs' order: the first instance makes the ring, the second imports it before its first start.
        started.append(start_server(tmp_path / "a", env))
        match = re.search(r"Password:\s+(\S+)", started[0].stdout)
        assert match, started[0].stdout
        copy_ring(url, tmp_path / "a", tmp_path / "b", tmp_path / "ring.json")
        (tmp_path / "ring.json").unlink()  # "Delete the file afterwards"
        started.append(start_server(tmp_path / "b", env))
        nginx = start_nginx(tmp_path / "nginx", started, ca.issue_cert("127.0.0.1"))
        yield Site(nginx, started[0], started[1], tmp_path / "ca.pem", match.group(1))
    finally:
        if nginx is not None:
            nginx.process.terminate()
            nginx.process.wait(10)
        for server in started:
            server.stop()


def test_sign_in_through_nginx_is_secure_and_names_the_real_client(site: Site) -> None:
    portal = make_portal(site.a)
    forged = "203.0.113.9"
    with site.client(portal, headers={"X-Forwarded-For": forged, "X-Forwarded-Proto": "http"}) as c:
        for _ in range(2):  # round robin: one sign-in reaches each instance
            r = c.post("/api/2.0/authentication", json={"userName": portal.emails[Role.ADMIN], "password": PASSWORD})
            assert r.status_code == 200, r.text
            cookie = r.headers["set-cookie"]
            assert cookie.startswith("asc_auth_key=") and "secure" in cookie.lower().split("; ")
            assert r.json()["links"][0]["href"] == f"https://{portal.hostname}/api/2.0/authentication"
    signed_in = site.served_by_both("POST", "/api/2.0/authentication")
    assert {line["client"] for line in signed_in} == {CLIENT_ADDRESS}  # nginx's $remote_addr, not the forged header
    assert forged not in site.a.log_text() + site.b.log_text()


def test_a_password_saved_through_one_instance_is_used_through_the_other(site: Site) -> None:
    portal = make_portal(site.a)
    with smtp_peer(auth=("mailer", SMTP_PASSWORD)) as (port, inbox), site.client(portal) as c:
        c.headers["Authorization"] = "Bearer " + portal.sign_in(Role.ADMIN)
        stored = {
            "host": "127.0.0.1",
            "port": port,
            "senderAddress": "noreply@example.com",
            "senderDisplayName": "Behind nginx",
            "credentialsUserName": "mailer",
            "credentialsUserPassword": SMTP_PASSWORD,
            "enableSSL": False,
            "enableAuth": True,
        }
        kept = {k: v for k, v in stored.items() if k != "credentialsUserPassword"}

        def served(response: httpx.Response) -> object:
            """The instance that answered ``response``: the one whose log has its request id."""
            rid = response.headers["x-request-id"]
            lines = site.request_lines(lambda lines: any(line["request_id"] == rid for line in lines))
            return next(line["instance"] for line in lines if line["request_id"] == rid)

        # Alternate requests go to alternate instances: each saves, reads and tests what the other stored.
        first_saver: object = None
        for round_ in range(2):
            if round_:
                # A round is four requests or five (the test's result takes one poll or two): read until the
                # first save's instance answers, so that round robin sends the second save to the other.
                for _ in range(3):
                    read = c.get(SETTINGS)
                    assert read.status_code == 200, read.text
                    if served(read) == first_saver:
                        break
            saved = c.post(SETTINGS, json=stored if round_ == 0 else {**kept, "senderDisplayName": "Saved again"})
            assert saved.status_code == 200, saved.text
            if not round_:
                first_saver = served(saved)
            got = c.get(SETTINGS)
            assert got.status_code == 200, got.text
            assert got.json()["response"]["credentialsUserPassword"] == ""
            assert got.json()["links"][0]["href"].startswith("https://")
            started = c.get(SETTINGS + "/test")
            assert started.status_code == 200, started.text
            result = wait_for_result(c)
            assert result["error"] in (None, ""), result
        assert len(inbox.messages) == 2  # both tests signed in with the stored password and delivered
    site.served_by_both("POST", SETTINGS)
    site.served_by_both("GET", SETTINGS)
    assert all(line["status"] != 500 for line in site.request_lines())


def test_the_official_sdk_works_through_nginx(site: Site) -> None:
    configuration = sdk.Configuration(host=site.nginx.url, ssl_ca_cert=str(site.ca_file))
    with sdk.ApiClient(configuration) as api_client:
        answer = sdk.AuthenticationApi(api_client).authenticate_me(
            sdk.AuthRequestsDto(user_name=OWNER_EMAIL, password=site.owner_password)
        )
    assert answer.response is not None and answer.response.token
    configuration = sdk.Configuration(host=site.nginx.url, ssl_ca_cert=str(site.ca_file), access_token=answer.response.token)
    with sdk.ApiClient(configuration) as api_client:
        exercise_smtp_settings(api_client)
    site.served_by_both(None, SETTINGS)  # the SDK's calls alternate between the instances
