"""docs/deployment.md's production install, upgrade, backup and restore, run as an operator would run them.

The documented shell lines are run as printed (each is first looked up in the page, so a change there is a
change here), with four adaptations this machine needs: the paths live under a temporary prefix (the real
/opt, /etc and /var/lib are shared with everything else on the machine), the service user has a name of its
own for the same reason, ``sudo -u USER`` is ``runuser -u USER --`` (Debian's minimal install has no sudo),
and systemd is not PID 1 here, so ``systemctl start`` is the unit's ``ExecStartPre`` and ``ExecStart`` run
by hand as its ``User`` and ``Group``, with its ``Environment`` and ``UMask`` and the ``StateDirectory`` made
as systemd makes it.

The previous release is commit f5aa0b4 of this repository (before ``backup`` and ``keys export`` existed),
installed with pip into the service's virtual environment and upgraded in place by the current tree.
"""

from __future__ import annotations

import grp
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tarfile
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Any

import httpx
import pytest
from serverkit import free_port
from smtp_peers import closed_port

REPO = Path(__file__).resolve().parents[2]
DOCS = (REPO / "docs" / "deployment.md").read_text()
UNIT = (REPO / "deploy" / "smtpsettings.service").read_text()
PREVIOUS_RELEASE = "f5aa0b4"
SETTINGS = "/api/2.0/smtpsettings/smtp"
MESSAGES = "/api/2.0/smtpsettings/messages"


@dataclass
class Host:
    """A machine as the docs see it: real commands, with the docs' paths under ``prefix``."""

    prefix: Path
    user: str
    port: int
    journal: Path
    service: subprocess.Popen[bytes] | None = None

    def path(self, documented: str) -> Path:
        return self.prefix / documented.lstrip("/")

    def adapt(self, line: str) -> str:
        line = line.replace("sudo -u smtpsettings ", f"runuser -u {self.user} -- ")
        for option in ("-g", "-o"):
            line = line.replace(f"{option} smtpsettings ", f"{option} {self.user} ")
        line = line.replace("smtpsettings:smtpsettings", f"{self.user}:{self.user}")
        line = line.replace("/usr/sbin/nologin smtpsettings", f"/usr/sbin/nologin {self.user}")
        for documented in ("/opt/smtpsettings", "/etc/smtpsettings", "/etc/systemd/system", "/var/lib/smtpsettings",
                           "/var/backups/smtpsettings", "/usr/local/bin"):  # fmt: skip
            line = line.replace(documented, str(self.path(documented)))
        return line.replace("port = 8080", f"port = {self.port}")

    def run(self, documented: str, *, check: bool = True, **placeholders: str) -> subprocess.CompletedProcess[str]:
        """One shell line of the docs, found there as printed, adapted and run with bash."""
        assert documented in DOCS, f"docs/deployment.md no longer says: {documented}"
        line = self.adapt(documented)
        for placeholder, value in placeholders.items():
            line = line.replace(placeholder, value)
        env = {"PATH": f"{self.path('/usr/local/bin')}:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
        result = subprocess.run(["bash", "-c", line], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
        if check:
            assert result.returncode == 0, f"{line}\n{result.stdout}\n{result.stderr}"
        return result

    def unit(self, key: str) -> list[str]:
        return [self.adapt(v.strip()) for k, _, v in (line.partition("=") for line in UNIT.splitlines()) if k == key]

    def as_service(self) -> dict[str, Any]:
        """What the unit gives its processes: its user and group, environment and umask."""
        account = pwd.getpwnam(self.user)
        env = dict(v.split("=", 1) for v in self.unit("Environment"))
        env["PATH"] = "/usr/bin:/bin"
        return dict(user=account.pw_uid, group=account.pw_gid, extra_groups=[], umask=0o077, env=env, cwd="/")

    def start(self) -> None:
        """``systemctl start smtpsettings``: the StateDirectory, ExecStartPre, then ExecStart."""
        state = self.path("/var/lib/smtpsettings")
        state.mkdir(mode=0o700, exist_ok=True)
        os.chown(state, pwd.getpwnam(self.user).pw_uid, grp.getgrnam(self.user).gr_gid)
        (migrate,) = self.unit("ExecStartPre")
        done = subprocess.run(migrate.split(), capture_output=True, text=True, timeout=120, **self.as_service())
        assert done.returncode == 0, done.stderr
        (serve,) = self.unit("ExecStart")
        with self.journal.open("ab") as journal:
            self.service = subprocess.Popen(
                serve.split(), stdin=subprocess.DEVNULL, stdout=journal, stderr=subprocess.STDOUT, start_new_session=True, **self.as_service()
            )
        deadline = time.monotonic() + 60
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                if self.service.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise AssertionError(f"the service did not start:\n{self.journal.read_text()}")
                time.sleep(0.1)

    def stop(self) -> None:
        """``systemctl stop smtpsettings`` (KillMode=mixed: SIGTERM to the main process, then the rest)."""
        if self.service is None:
            return
        if self.service.poll() is None:
            os.kill(self.service.pid, signal.SIGTERM)
            self.service.wait(30)
        try:
            os.killpg(self.service.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.service = None

    def client(self, email: str, password: str) -> httpx.Client:
        return httpx.Client(base_url=f"http://127.0.0.1:{self.port}", auth=(email, password), timeout=30)


def source_tree(target: Path, commit: str | None) -> Path:
    """A release to install: ``git archive`` of ``commit``, or the working tree as it is (without .git, .venv)."""
    if commit is None:
        shutil.copytree(REPO, target, ignore=shutil.ignore_patterns(".git", ".venv", "build", "*.egg-info", "__pycache__"))
    else:
        archive = subprocess.run(["git", "-C", str(REPO), "archive", commit], capture_output=True, check=True, timeout=60)
        with tarfile.open(fileobj=BytesIO(archive.stdout)) as tar:
            tar.extractall(target, filter="data")
    return target


@pytest.fixture
def host() -> Iterator[Host]:
    # Not under pytest's tmp_path, which is private to root: the service user must reach its venv.
    prefix = Path(tempfile.mkdtemp(prefix="smtpsettings-host-"))
    prefix.chmod(0o755)
    for documented in ("/usr/local/bin", "/etc/systemd/system", "/var/lib", "/var/backups", "/opt"):
        (prefix / documented.lstrip("/")).mkdir(parents=True)
    machine = Host(prefix, f"smtpst{uuid.uuid4().hex[:8]}", free_port(), prefix / "journal.log")
    try:
        yield machine
    finally:
        machine.stop()
        subprocess.run(["userdel", machine.user], capture_output=True, timeout=60)
        shutil.rmtree(prefix, ignore_errors=True)


def first_start(host: Host) -> tuple[str, str]:
    """``journalctl -u smtpsettings | grep -A4 'First start'``: the owner's email and password."""
    text = host.journal.read_text()
    shown = text[text.index("First start") :]
    email = re.search(r"Email:\s+(\S+)", shown)
    password = re.search(r"Password:\s+(\S+)", shown)
    assert email and password, text
    return email.group(1), password.group(1)


def test_install_upgrade_backup_and_restore_as_the_docs_say(host: Host, tmp_path: Path) -> None:
    old = source_tree(host.prefix / "previous-release", PREVIOUS_RELEASE)
    new = source_tree(host.prefix / "new-release", None)

    # Production install, with the previous release.
    host.run("useradd --system --home-dir /var/lib/smtpsettings --shell /usr/sbin/nologin smtpsettings")
    host.run("python3 -m venv /opt/smtpsettings/venv")
    host.run("/opt/smtpsettings/venv/bin/pip install /path/to/smtpsettings", **{"/path/to/smtpsettings": str(old)})
    host.run("ln -s /opt/smtpsettings/venv/bin/smtpsettings /usr/local/bin/smtpsettings")
    host.run("install -d -m 0755 /etc/smtpsettings")
    host.run("install -m 0640 -g smtpsettings /dev/null /etc/smtpsettings/smtpsettings.toml")
    host.run("""printf 'data_dir = "/var/lib/smtpsettings"\\nhost = "127.0.0.1"\\nport = 8080\\n' > /etc/smtpsettings/smtpsettings.toml""")
    host.run("install -m 0644 deploy/smtpsettings.service /etc/systemd/system/")
    config = host.path("/etc/smtpsettings/smtpsettings.toml")
    assert (config.stat().st_mode & 0o777, config.stat().st_gid) == (0o640, grp.getgrnam(host.user).gr_gid)
    host.start()
    data = host.path("/var/lib/smtpsettings")
    assert data.stat().st_mode & 0o777 == 0o700 and (data / "keys.json").stat().st_uid == pwd.getpwnam(host.user).pw_uid
    owner = first_start(host)
    listed = host.run("sudo -u smtpsettings smtpsettings --config /etc/smtpsettings/smtpsettings.toml portal list")
    assert "localhost" in listed.stdout

    # Settings with a password, and a message that waits in the outbox (its mail server does not answer).
    settings = {
        "host": "127.0.0.1",
        "port": closed_port(),
        "senderAddress": "noreply@example.com",
        "senderDisplayName": "Before the upgrade",
        "credentialsUserName": "mailer",
        "credentialsUserPassword": "kept-Across-the-upgrade-1",
        "enableSSL": False,
        "enableAuth": True,
    }
    with host.client(*owner) as c:
        assert c.post(SETTINGS, json=settings).status_code == 200
        queued = c.post(MESSAGES, json={"to": ["ann@example.org"], "subject": "Queued before the upgrade", "text": "hi"})
        assert queued.status_code == 202, queued.text
        message_id = queued.json()["response"]["id"]

    # Upgrade. The previous release has no `backup` command: the backup before the upgrade is the stopped
    # service's data directory, copied as the docs say for such a release.
    host.run("install -d -o smtpsettings -g smtpsettings -m 0700 /var/backups/smtpsettings     # once")
    refused = host.run(
        "sudo -u smtpsettings smtpsettings --config /etc/smtpsettings/smtpsettings.toml \\\n  backup /var/backups/smtpsettings/before-upgrade",
        check=False,
    )
    assert refused.returncode != 0 and "No such command 'backup'" in refused.stderr  # as the docs say it answers
    host.stop()
    host.run("cp -a /var/lib/smtpsettings /var/backups/smtpsettings/before-upgrade")
    upgraded = host.run("/opt/smtpsettings/venv/bin/pip install --upgrade /path/to/new-release", **{"/path/to/new-release": str(new)})
    assert "Successfully installed smtpsettings-" in upgraded.stdout  # the check the docs ask for
    host.run("sudo -u smtpsettings smtpsettings --config /etc/smtpsettings/smtpsettings.toml migrate")
    host.start()
    with host.client(*owner) as c:
        got = c.get(SETTINGS).json()["response"]
        assert (got["senderDisplayName"], got["credentialsUserName"]) == ("Before the upgrade", "mailer")
        kept = {k: v for k, v in settings.items() if k != "credentialsUserPassword"}
        # Saved again without the password: the new release decrypts the one the old release stored.
        resaved = c.post(SETTINGS, json={**kept, "senderDisplayName": "After the upgrade"})
        assert resaved.status_code == 200, resaved.text
        message = c.get(f"{MESSAGES}/{message_id}")
        assert message.status_code == 200, message.text
        assert message.json()["response"]["subject"] == "Queued before the upgrade"
        assert message.json()["response"]["status"] in ("queued", "deferred", "sending")
        assert c.get("/api/2.0/health/ready").status_code == 200

    # Backup while it runs, and a restore into a new data directory that it then serves from.
    backup = host.run(
        "sudo -u smtpsettings smtpsettings --config /etc/smtpsettings/smtpsettings.toml backup /var/backups/smtpsettings/$(date +%F)"
    )
    taken = next(p for p in host.path("/var/backups/smtpsettings").iterdir() if p.name != "before-upgrade")
    assert str(taken) in backup.stdout
    with host.client(*owner) as c:
        assert c.post(SETTINGS, json={**kept, "senderDisplayName": "After the backup"}).status_code == 200
    host.stop()
    host.run("mv /var/lib/smtpsettings /var/lib/smtpsettings.before-restore   # keep it until the restore is checked")
    host.run("cp -a /var/backups/smtpsettings/2026-12-01 /var/lib/smtpsettings", **{"2026-12-01": taken.name})
    host.run("chown -R smtpsettings:smtpsettings /var/lib/smtpsettings")
    host.start()
    with host.client(*owner) as c:
        got = c.get(SETTINGS).json()["response"]
        assert got["senderDisplayName"] == "After the upgrade"  # what was saved after the backup is gone
        assert c.post(SETTINGS, json={**kept, "senderDisplayName": "Restored"}).status_code == 200
        assert c.get(f"{MESSAGES}/{message_id}").json()["response"]["subject"] == "Queued before the upgrade"
    host.stop()
    assert "Traceback" not in host.journal.read_text()
