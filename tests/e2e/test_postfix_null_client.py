"""Postfix as a null client of the submission port, as docs/deployment.md configures it, end to end.

A real Postfix (its own config, queue and data directories, started with ``postfix -c``) takes mail from its
``sendmail`` and relays it to a real ``smtpsettings serve`` over STARTTLS with SASL; the portal's mail server
is an aiosmtpd sink. The ``main.cf`` lines and both maps are read from the documentation, with only the host
names, the key and the file paths replaced, so the page says what was tested.

Postfix needs root (it drops to its ``postfix`` user); without root or without Postfix the tests skip.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme
from smtp_peers import Inbox, smtp_peer

from serverkit import Portal, Server, backdate_settings_changes, free_port, make_portal, start_server
from smtpsettings.domain.accounts import Role
from smtpsettings.domain.submission import SENDER_GRACE
from smtpsettings.services.accounts import AccountsService
from smtpsettings.store.database import Database

POSTFIX = Path("/usr/sbin/postfix")
DOCS = Path(__file__).resolve().parents[2] / "docs" / "deployment.md"
SETTINGS = "/api/2.0/smtpsettings/smtp"
SENDER = "noreply@example.com"
HOST = "app.example.com"
"""This host's name in the documented recipe; its addresses are rewritten to the portal's sender."""

pytestmark = pytest.mark.skipif(
    not POSTFIX.exists() or os.geteuid() != 0, reason="needs Postfix (/usr/sbin/postfix) and root to run it"
)


# -- the recipe, read from the documentation ----------------------------------------------------------------


def _blocks() -> list[list[str]]:
    """The fenced blocks of docs/deployment.md's null-client section, as lists of lines."""
    text = DOCS.read_text()
    section = text[text.index("### Postfix as a null client") : text.index("#### Bounces and loops")]
    return [block.strip("\n").splitlines() for block in re.findall(r"```\n(.*?)```", section, re.DOTALL)]


def documented_main_cf() -> dict[str, str]:
    main, _, _ = _blocks()
    assert main[0] == "# smtpsettings null client"
    pairs = [line.split(" = ", 1) if " = " in line else line.rstrip(" =").split(" =", 1) + [""] for line in main[1:]]
    return {name.strip(): value.strip() for name, value in pairs}


def test_the_documented_maps_have_the_form_the_tests_write() -> None:
    _, password, senders = _blocks()
    assert re.fullmatch(r"\[mail-relay\.example\.com\]:587 docs\.example\.com:sk-\S+", password[0]), password
    assert senders == [f"@{HOST} {SENDER}"]
    main = documented_main_cf()
    assert main["relayhost"] == "[mail-relay.example.com]:587" and main["myhostname"] == HOST
    assert main["mydestination"] == "" and main["smtp_tls_security_level"] == "encrypt"


# -- the parts: smtpsettings with a submission port, a sink, a private Postfix ---------------------------------


@dataclass
class Relay:
    server: Server
    port: int
    sink_port: int
    inbox: Inbox
    ca_file: Path

    def key(self, portal: Portal) -> str:
        db = Database(self.server.database_url)
        try:
            return AccountsService(db).create_api_key(portal.hostname, portal.emails[Role.ADMIN], "mail.send")[1]
        finally:
            db.dispose()

    def save_settings(self, portal: Portal, sender: str = SENDER) -> None:
        body = {"host": "127.0.0.1", "port": self.sink_port, "senderAddress": sender, "senderDisplayName": "Portal",
                "enableSSL": False, "enableAuth": False}  # fmt: skip
        with portal.client(Role.ADMIN) as client:
            assert client.post(SETTINGS, json=body).status_code == 200

    def refusals(self, portal: Portal) -> list[str]:
        """The replies of every refused MAIL of ``portal``, from the server's JSON log."""
        lines = (json.loads(line) for line in self.server.log_text().splitlines() if line.startswith("{"))
        return [e["reply"] for e in lines if e.get("event") == "submission_mail_refused" and e.get("portal") == portal.hostname]


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory, ca: trustme.CA) -> Iterator[Relay]:
    tmp = tmp_path_factory.mktemp("null-client")
    cert = ca.issue_cert("localhost", "127.0.0.1")
    cert.cert_chain_pems[0].write_to_path(str(tmp / "cert.pem"))
    cert.private_key_pem.write_to_path(str(tmp / "key.pem"))
    port = free_port()
    env = {
        "SMTPSETTINGS_SUBMISSION_PORT": str(port),
        "SMTPSETTINGS_SUBMISSION_TLS_CERT": str(tmp / "cert.pem"),
        "SMTPSETTINGS_SUBMISSION_TLS_KEY": str(tmp / "key.pem"),
        # Loopback is not trusted here: Postfix must do STARTTLS before it may sign in.
        "SMTPSETTINGS_SUBMISSION_PLAINTEXT_AUTH_NETWORKS": "192.0.2.1/32",
        "SMTPSETTINGS_OUTBOX_FIRST_RETRY_SECONDS": "0.5",
    }
    with smtp_peer() as (sink_port, inbox):
        server = start_server(tmp / "data", env)
        try:
            # Postfix's smtp process runs as ``postfix`` and must read the CA: outside pytest's 0700 tmp.
            ca_dir = Path(tempfile.mkdtemp(prefix="null-client-ca-"))
            ca_dir.chmod(0o755)
            ca.cert_pem.write_to_path(str(ca_dir / "ca.pem"))
            yield Relay(server, port, sink_port, inbox, ca_dir / "ca.pem")
        finally:
            server.stop()
            shutil.rmtree(ca_dir, ignore_errors=True)


@dataclass
class NullClient:
    """A running Postfix configured as the documentation says, for one portal."""

    base: Path

    @property
    def conf(self) -> str:
        return str(self.base / "conf")

    def sendmail(self, sender: str, recipient: str, subject: str) -> None:
        message = f"From: {sender}\nTo: {recipient}\nSubject: {subject}\n\nHello from cron.\n"
        subprocess.run(["/usr/sbin/sendmail", "-C", self.conf, "-f", sender, recipient], input=message.encode(), check=True, timeout=30)

    def flush(self) -> None:
        subprocess.run(["/usr/sbin/postqueue", "-c", self.conf, "-f"], check=True, timeout=30)

    def queue(self) -> list[dict[str, object]]:
        out = subprocess.run(["/usr/sbin/postqueue", "-c", self.conf, "-j"], check=True, capture_output=True, text=True, timeout=30)
        return [json.loads(line) for line in out.stdout.splitlines() if line.strip()]

    def log(self) -> str:
        path = self.base / "maillog"
        return path.read_text(errors="replace") if path.exists() else ""


_MASTER_CF = "\n".join(
    f"{name:<10} unix  {private}  -  n  {wakeup}  {limit}  {command}"
    for name, private, wakeup, limit, command in [
        ("pickup", "n", "60", "1", "pickup"), ("cleanup", "n", "-", "0", "cleanup"), ("qmgr", "n", "300", "1", "qmgr"),
        ("tlsmgr", "-", "1000?", "1", "tlsmgr"), ("rewrite", "-", "-", "-", "trivial-rewrite"),
        ("bounce", "-", "-", "0", "bounce"), ("defer", "-", "-", "0", "bounce"), ("trace", "-", "-", "0", "bounce"),
        ("verify", "-", "-", "1", "verify"), ("flush", "n", "1000?", "0", "flush"), ("proxymap", "-", "-", "-", "proxymap"),
        ("smtp", "-", "-", "-", "smtp"), ("relay", "-", "-", "-", "smtp"), ("showq", "n", "-", "-", "showq"),
        ("error", "-", "-", "-", "error"), ("retry", "-", "-", "-", "error"), ("discard", "-", "-", "-", "discard"),
        ("local", "-", "-", "-", "local"), ("anvil", "-", "-", "1", "anvil"), ("scache", "-", "-", "1", "scache"),
    ]
) + "\npostlog   unix-dgram n  -  n  -  1  postlogd\n"  # fmt: skip
"""No inet service: mail comes in through ``sendmail`` only, so the test takes no port of the machine's."""


@pytest.fixture
def null_client(relay: Relay) -> Iterator[Callable[..., NullClient]]:
    """Start a Postfix for a portal and its key (and ``extra`` main.cf settings); each is stopped afterwards."""
    started: list[NullClient] = []

    def start(portal: Portal, key: str, **extra: str) -> NullClient:
        base = Path(tempfile.mkdtemp(prefix="null-client-postfix-"))
        base.chmod(0o755)  # Postfix's daemons run as ``postfix`` and walk into it
        for name in ("conf", "queue", "data"):
            (base / name).mkdir(mode=0o755)
        shutil.chown(base / "data", "postfix")
        client = NullClient(base)
        started.append(client)
        relayhost = f"[127.0.0.1]:{relay.port}"
        (base / "conf" / "smtpsettings_password").write_text(f"{relayhost} {portal.hostname}:{key}\n")
        (base / "conf" / "smtpsettings_password").chmod(0o600)
        (base / "conf" / "smtpsettings_senders").write_text(f"@{HOST} {SENDER}\n")
        main = documented_main_cf()
        main.update(
            relayhost=relayhost,
            smtp_sasl_password_maps=f"texthash:{base}/conf/smtpsettings_password",
            smtp_tls_CAfile=str(relay.ca_file),
            smtp_generic_maps=f"texthash:{base}/conf/smtpsettings_senders",
        )
        # What a packaged Postfix has in its own directories; here everything is private to the test.
        main.update(
            compatibility_level="3.6",
            queue_directory=str(base / "queue"),
            data_directory=str(base / "data"),
            mail_owner="postfix",
            setgid_group="postdrop",
            maillog_file=str(base / "maillog"),
            maillog_file_prefixes=str(base),
        )
        main.update(extra)
        (base / "conf" / "main.cf").write_text("".join(f"{k} = {v}\n" for k, v in main.items()))
        (base / "conf" / "master.cf").write_text(_MASTER_CF)
        result = subprocess.run(
            [str(POSTFIX), "-c", client.conf, "start"], capture_output=True, text=True, timeout=60, check=False
        )
        assert result.returncode == 0, client.log() + result.stderr
        return client

    yield start
    for client in started:
        subprocess.run([str(POSTFIX), "-c", client.conf, "stop"], capture_output=True, timeout=60, check=False)
        status = subprocess.run([str(POSTFIX), "-c", client.conf, "status"], capture_output=True, timeout=60, check=False)
        if status.returncode == 0:  # still running: stop it without waiting for its processes
            subprocess.run([str(POSTFIX), "-c", client.conf, "abort"], capture_output=True, timeout=60, check=False)
        shutil.rmtree(client.base, ignore_errors=True)


def wait_until(condition: Callable[[], object], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.2)


def arrived(inbox: Inbox, subject: str) -> list[int]:
    return [i for i, m in enumerate(inbox.messages) if m["Subject"] == subject]


# -- the tests ----------------------------------------------------------------------------------------------


def test_mail_from_a_local_user_arrives_from_the_portals_sender(relay: Relay, null_client: Callable[..., NullClient]) -> None:
    portal = make_portal(relay.server)
    relay.save_settings(portal)
    postfix = null_client(portal, relay.key(portal))
    postfix.sendmail(f"www-data@{HOST}", "ann@example.org", "rewritten")
    wait_until(lambda: arrived(relay.inbox, "rewritten"), "the message at the sink\n" + postfix.log())
    [i] = arrived(relay.inbox, "rewritten")
    message, envelope = relay.inbox.messages[i], relay.inbox.envelopes[i]
    assert message["From"] == SENDER and envelope.mail_from == SENDER and envelope.rcpt_tos == ["ann@example.org"]
    assert "(smtpsettings) with ESMTPSA" in message["Received"]  # signed in, over TLS
    assert relay.refusals(portal) == []
    wait_until(lambda: postfix.queue() == [], "Postfix's queue to empty")


def test_a_portal_without_settings_keeps_the_mail_in_postfix_until_they_are_saved(
    relay: Relay, null_client: Callable[..., NullClient]
) -> None:
    portal = make_portal(relay.server)
    postfix = null_client(portal, relay.key(portal))
    postfix.sendmail(f"www-data@{HOST}", "ann@example.org", "held")
    wait_until(lambda: relay.refusals(portal), "a refusal at MAIL\n" + postfix.log())
    assert relay.refusals(portal) == ["451 4.3.5"]
    wait_until(lambda: [q.get("queue_name") for q in postfix.queue()] == ["deferred"], "the message deferred")
    assert "status=bounced" not in postfix.log() and not arrived(relay.inbox, "held")
    relay.save_settings(portal)
    postfix.flush()
    wait_until(lambda: arrived(relay.inbox, "held"), "the held message at the sink\n" + postfix.log())
    wait_until(lambda: postfix.queue() == [], "Postfix's queue to empty")


@pytest.mark.parametrize(
    ("notify_classes", "attempts"),
    [
        ("resource, software", 2),  # Postfix's default: the undeliverable bounce is discarded
        ("2bounce, resource, software", 3),  # one notice to the postmaster first, refused and discarded too
    ],
)
def test_a_sender_refused_for_good_bounces_a_bounded_number_of_times(
    relay: Relay, null_client: Callable[..., NullClient], notify_classes: str, attempts: int
) -> None:
    portal = make_portal(relay.server)
    relay.save_settings(portal)
    postfix = null_client(portal, relay.key(portal), notify_classes=notify_classes)
    relay.save_settings(portal, sender="new@example.com")  # Postfix's map still says noreply@
    postfix.sendmail(f"www-data@{HOST}", "ann@example.org", "stale sender")
    wait_until(lambda: relay.refusals(portal), "a refusal at MAIL\n" + postfix.log())
    assert relay.refusals(portal) == ["451 4.7.1"]  # just changed: kept and retried
    wait_until(lambda: [q.get("queue_name") for q in postfix.queue()] == ["deferred"], "the message deferred")

    backdate_settings_changes(relay.server, SENDER_GRACE)  # the grace is over: refused for good
    postfix.flush()
    wait_until(lambda: "status=bounced" in postfix.log(), "the bounce\n" + postfix.log())
    time.sleep(4)  # a loop would go on at full speed; a few seconds shows it
    settled = relay.refusals(portal)
    time.sleep(2)
    assert relay.refusals(portal) == settled, "still going: a loop"
    assert settled[0] == "451 4.7.1" and all(r == "550 5.7.1" for r in settled[1:]), settled
    assert len(settled) - 1 == attempts, settled  # the message, its bounce, and the postmaster's notice if any
    assert not arrived(relay.inbox, "stale sender")
    wait_until(lambda: postfix.queue() == [], "Postfix's queue to empty\n" + postfix.log())
