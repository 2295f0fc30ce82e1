"""Test support: a real server process on a free loopback port, and portals/users made for each test.

The server is the installed ``smtpsettings serve`` command, so the tests exercise what an operator runs.
One server is shared by the session; each test gets a portal of its own (its own Host name), which keeps
tests independent without paying for a server start each time. Tests that need special configuration
start their own server with :func:`start_server`. The fixtures themselves are in ``conftest.py``.
"""

from __future__ import annotations

import functools
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa
from pgcluster import PgCluster

from smtpsettings.domain.accounts import Role
from smtpsettings.domain.passwords import hash_password
from smtpsettings.store import accounts as store_accounts
from smtpsettings.services.accounts import AccountsService
from smtpsettings.store.database import Database
from smtpsettings.store.tables import audit_log

PASSWORD = "correct horse battery"


def smtpsettings_command() -> list[str]:
    exe = shutil.which("smtpsettings", path=str(Path(sys.executable).parent)) or shutil.which("smtpsettings")
    return [exe] if exe else [sys.executable, "-m", "smtpsettings"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    """A running ``smtpsettings serve`` and the means to look inside it."""

    base_url: str
    data_dir: Path
    log_path: Path
    env: dict[str, str]
    process: subprocess.Popen[bytes]
    stdout: str = ""
    pg: PgCluster | None = None
    """The cluster holding the database, when it is PostgreSQL."""

    @property
    def db_path(self) -> Path:
        return self.data_dir / "smtpsettings.db"

    @property
    def database_url(self) -> str:
        return self.env.get("SMTPSETTINGS_DATABASE_URL") or f"sqlite:///{self.db_path}"

    def query(self, sql: str, **params: object) -> list[tuple[object, ...]]:
        """Run SQL against the server's database, whichever backend it is."""
        engine = sa.create_engine(self.database_url.replace("postgresql://", "postgresql+psycopg://", 1), poolclass=sa.NullPool)
        try:
            with engine.connect() as conn:
                return [tuple(row) for row in conn.execute(sa.text(sql), params)]
        finally:
            engine.dispose()

    def storage_bytes(self) -> bytes:
        """Every byte the database keeps on disk (after a checkpoint), to search for what must not be there."""
        if self.pg is not None:
            self.pg.checkpoint()
            files = [p for p in self.pg.data.rglob("*") if p.is_file()]
        else:
            with sqlite3.connect(self.db_path) as conn:
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            files = [p for p in self.db_path.parent.glob(self.db_path.name + "*")]
        return b"".join(p.read_bytes() for p in files)

    def accounts(self) -> AccountsService:
        return AccountsService(Database(self.database_url))

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([*smtpsettings_command(), *args], env=self.env, capture_output=True, text=True, timeout=60)
        if check and result.returncode != 0:
            raise AssertionError(f"smtpsettings {' '.join(args)} failed: {result.stderr}")
        return result

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def delivery_pids(self) -> list[int]:
        """The server's delivery processes (``smtpsettings deliver``, children of ``serve``): one while it runs."""
        pids = []
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            try:
                stat = Path(f"/proc/{name}/stat").read_text()
                cmdline = Path(f"/proc/{name}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            parent = int(stat.rpartition(")")[2].split()[1])
            if parent == self.process.pid and b"deliver" in cmdline:
                pids.append(int(name))
        return pids

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the server and its workers, as a crash or an operator would."""
        try:
            os.killpg(self.process.pid, sig)
        except ProcessLookupError:
            pass

    def stop(self) -> None:
        if self.process.poll() is None:
            self.kill(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill(signal.SIGKILL)
                self.process.wait(5)
        self.kill(signal.SIGKILL)  # any worker left behind


def start_server(data_dir: Path, extra_env: dict[str, str] | None = None, *, workers: int = 1) -> Server:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMTPSETTINGS_")}
    env.update(
        {
            "SMTPSETTINGS_DATA_DIR": str(data_dir),
            "SMTPSETTINGS_LOG_FORMAT": "json",
            "SMTPSETTINGS_OWNER_EMAIL": "owner@example.com",
            **(extra_env or {}),  # may replace the ones above
        }
    )
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = data_dir.parent / f"server-{port}.log"
    log = log_path.open("wb")
    process = subprocess.Popen(
        [*smtpsettings_command(), "serve", "--port", str(port), "--workers", str(workers)],
        env=env,
        stdin=subprocess.DEVNULL,  # no terminal: a first start never waits for an answer
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # granian's workers are children: signal the whole group
    )
    server = Server(f"http://127.0.0.1:{port}", data_dir, log_path, env, process)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited early:\n{log_path.read_text()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
        except OSError:
            time.sleep(0.05)
    else:
        server.stop()
        raise RuntimeError(f"server did not listen within 30 s:\n{log_path.read_text()}")
    server.stdout = log_path.read_text()
    return server


@dataclass
class Portal:
    """A portal of the shared server, with an owner, an admin, a user and a guest."""

    server: Server
    hostname: str
    emails: dict[Role, str] = field(default_factory=dict)

    def client(self, role: Role | None = None, **kwargs: object) -> httpx.Client:
        """An HTTP client speaking to this portal; signed in (Bearer token) when a role is given."""
        headers = {"Host": self.hostname, **kwargs.pop("headers", {})}  # type: ignore[dict-item]
        client = httpx.Client(base_url=self.server.base_url, headers=headers, timeout=30, **kwargs)  # type: ignore[arg-type]
        if role is not None:
            client.headers["Authorization"] = "Bearer " + self.sign_in(role)
        return client

    def sign_in(self, role: Role) -> str:
        with httpx.Client(base_url=self.server.base_url, headers={"Host": self.hostname}, timeout=30) as c:
            r = c.post("/api/2.0/authentication", json={"userName": self.emails[role], "password": PASSWORD})
            assert r.status_code == 200, r.text
            return str(r.json()["response"]["token"])


@functools.cache
def _password_hash() -> str:
    # argon2 is slow on purpose; hashing the shared test password once keeps portal setup quick.
    return hash_password(PASSWORD)


def make_portal(server: Server, *, is_default: bool = False, hostname: str | None = None) -> Portal:
    hostname = hostname or f"p{uuid.uuid4().hex[:10]}.test"
    portal = Portal(server, hostname)

    def create(conn):  # type: ignore[no-untyped-def]
        created = store_accounts.create_portal(conn, hostname, is_default=is_default)
        for role in Role:
            email = f"{role.value}@{hostname}"
            store_accounts.create_user(
                conn, created.id, email=email, display_name=role.value, role=role, password_hash=_password_hash()
            )
            portal.emails[role] = email

    db = Database(server.database_url)
    try:
        db.write_sync(create)
    finally:
        db.dispose()
    return portal


VALID_SETTINGS = {
    "host": "smtp.example.com",
    "port": 587,
    "senderAddress": "noreply@example.com",
    "senderDisplayName": "Example Portal",
    "credentialsUserName": "mailer",
    "credentialsUserPassword": "initial-Secret-1",
    "enableSSL": True,
    "enableAuth": True,
    "useNtlm": False,
}


def backdate_settings_changes(server: Server, by: timedelta) -> None:
    """Date every recorded save and reset of SMTP settings ``by`` (and a minute) before now, in the audit log
    the submission port reads them from: as if the settings had been saved that long ago."""
    db = Database(server.database_url)
    try:
        db.write_sync(lambda c: c.execute(audit_log.update().values(created_at=datetime.now(UTC) - by - timedelta(minutes=1))))
    finally:
        db.dispose()


def wait_for_result(client: httpx.Client, timeout: float = 20) -> dict[str, Any]:
    """Poll ``/smtp/test/status`` until the portal's test job has completed; its final status."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = client.get("/api/2.0/smtpsettings/smtp/test/status").json()
        if body.get("response", {}).get("completed"):
            return body["response"]  # type: ignore[no-any-return]
        time.sleep(0.1)
    raise AssertionError(f"the test job did not complete within {timeout} s")
