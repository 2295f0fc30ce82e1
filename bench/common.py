"""Shared machinery of the benchmark suite: server processes, the load generator, databases, statistics.

Everything here is loopback only, bounded in time and cleans up after itself. The server under test is the
installed ``smtpsettings serve`` command pinned to one core (``SERVER_CPU``); the load generator, the SMTP
sink, the benchmark's own clients and PostgreSQL run on the other core (``LOAD_CPU``), the way
the stack's own costs were first measured.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
WRK_SCRIPT = BENCH_DIR / "wrk" / "bench.lua"

SERVER_CPU = os.environ.get("BENCH_SERVER_CPU", "0")
LOAD_CPU = os.environ.get("BENCH_LOAD_CPU", "1")

GET_PATH = "/api/2.0/smtpsettings/smtp"
LIVE_PATH = "/api/2.0/health/live"
SMTP_PASSWORD = "bench-smtp-password"
POST_BODY = {
    "host": "smtp.example.com",
    "port": 587,
    "senderAddress": "docspace@example.com",
    "senderDisplayName": "DocSpace",
    "enableAuth": True,
    "credentialsUserName": "docspace",
    "credentialsUserPassword": SMTP_PASSWORD,
    "enableSSL": True,
    "useNtlm": False,
}


# -- command line -------------------------------------------------------------------------------------


def base_parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite", help="database backend (default sqlite)")
    p.add_argument("--runs", type=int, default=3, help="repetitions; figures are medians (default 3)")
    p.add_argument("--duration", type=float, default=6.0, help="seconds measured per load run (default 6)")
    p.add_argument("--warmup", type=float, default=2.0, help="seconds of discarded load before each run (default 2)")
    p.add_argument("--connections", type=int, default=32, help="wrk connections (default 32)")
    p.add_argument("--workdir", type=Path, default=None, help="scratch directory (default: a fresh temporary one)")
    p.add_argument("--keep", action="store_true", help="keep the scratch directory (server logs, databases)")
    p.add_argument("--json", type=Path, default=None, help="also write the results to this JSON file")
    return p


class Workdir:
    """A scratch directory that disappears at the end unless asked to stay."""

    def __init__(self, path: Path | None, keep: bool) -> None:
        self.keep = keep or path is not None
        self.path = path or Path(tempfile.mkdtemp(prefix="smtpsettings-bench-"))
        self.path.mkdir(parents=True, exist_ok=True)

    def __enter__(self) -> Path:
        return self.path

    def __exit__(self, *exc: object) -> None:
        if not self.keep:
            shutil.rmtree(self.path, ignore_errors=True)
        else:
            print(f"# kept {self.path}", file=sys.stderr)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# -- statistics -----------------------------------------------------------------------------------------


def summary(values: Iterable[float]) -> dict[str, Any]:
    vals = [v for v in values if v is not None]
    if not vals:
        return {"median": None, "min": None, "max": None, "runs": []}
    return {"median": statistics.median(vals), "min": min(vals), "max": max(vals), "runs": vals}


# -- the server under test -----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def smtpsettings_exe() -> str:
    exe = Path(sys.executable).parent / "smtpsettings"
    return str(exe) if exe.exists() else (shutil.which("smtpsettings") or "smtpsettings")


@dataclass
class Server:
    """``smtpsettings serve --workers 1`` pinned to SERVER_CPU, its JSON log going to a file."""

    data_dir: Path
    database_url: str | None = None
    extra_env: dict[str, str] = field(default_factory=dict)
    port: int = 0
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    workers: int = 1
    cpus: str = SERVER_CPU

    def start(self) -> Server:
        self.port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("SMTPSETTINGS_")}
        env.update(
            SMTPSETTINGS_DATA_DIR=str(self.data_dir),
            SMTPSETTINGS_LOG_FORMAT="json",
            SMTPSETTINGS_SMTP_TEST_LIMIT="100000000",
            SMTPSETTINGS_SMTP_HELO_NAME="bench.localhost",
            **self.extra_env,
        )
        if self.database_url:
            env["SMTPSETTINGS_DATABASE_URL"] = self.database_url
        self.log_path = self.data_dir / f"server-{self.port}.log"
        logfile = self.log_path.open("ab")
        self.process = subprocess.Popen(
            ["taskset", "-c", self.cpus, smtpsettings_exe(), "serve", "--port", str(self.port), "--workers", str(self.workers)],
            env=env,
            stdout=logfile,
            stderr=logfile,
            start_new_session=True,
        )
        logfile.close()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited early:\n{self.log_path.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(self.url(LIVE_PATH), timeout=1) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("server did not answer within 60 s")

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def worker_pids(self) -> list[int]:
        import psutil

        assert self.process is not None
        try:
            return [c.pid for c in psutil.Process(self.process.pid).children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def worker_pid(self) -> int:
        # granian: one main process and (here) one worker child; beside it, the delivery process
        pids = [p for p in self.worker_pids() if b"deliver" not in _cmdline(p).split(b"\0")]  # the argument, not a path
        if not pids:
            raise RuntimeError("no worker process found")
        return max(pids, key=lambda p: _status_kb(p, "VmRSS") or 0)

    def peak_rss_mb(self) -> float | None:
        """The worker's high-water resident set size (VmHWM), in MB (10^6 bytes, as the target is stated)."""
        kb = _status_kb(self.worker_pid(), "VmHWM")
        return None if kb is None else kb * 1024 / 1e6

    def rss_mb(self) -> float | None:
        kb = _status_kb(self.worker_pid(), "VmRSS")
        return None if kb is None else kb * 1024 / 1e6

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            _killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                _killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)
        _killpg(self.process.pid, signal.SIGKILL)  # any worker left behind

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _killpg(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _status_kb(pid: int, key: str) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


# -- the load generator --------------------------------------------------------------------------------


@dataclass
class LoadResult:
    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    errors: int
    non2xx: int
    cpu_us_per_req: float | None = None
    """CPU time (user+system, all threads) the server worker spent per request during the run."""
    switches_per_req: float | None = None
    """Context switches (voluntary and not, all threads) of the server worker per request during the run."""

    def as_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


def wrk(
    url: str,
    *,
    duration: float,
    connections: int,
    method: str = "GET",
    creds_file: Path | None = None,
    body_file: Path | None = None,
    host: str | None = None,
) -> LoadResult:
    """One wrk run on LOAD_CPU (``-t1``); latency percentiles from wrk's own histogram.

    ``creds_file`` lines are ``HOST TOKEN``: each request goes to a random one of them as
    ``Host: HOST`` with ``Cookie: asc_auth_key=TOKEN``.
    """
    env = dict(os.environ, BENCH_METHOD=method)
    if creds_file:
        env["BENCH_CREDS"] = str(creds_file)
    if body_file:
        env["BENCH_BODY_FILE"] = str(body_file)
    if host:
        env["BENCH_HOST"] = host
    seconds = max(1, round(duration))
    cmd = ["taskset", "-c", LOAD_CPU, "wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s", "-s", str(WRK_SCRIPT), url]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=seconds + 60)
    match = re.search(r"^BENCHJSON (\{.*\})$", out.stdout, re.MULTILINE)
    if out.returncode != 0 or not match:
        raise RuntimeError(f"wrk failed ({out.returncode}): {out.stdout}\n{out.stderr}")
    d = json.loads(match.group(1))
    secs = d["duration_us"] / 1e6
    errors = d["connect"] + d["read"] + d["write"] + d["timeout"]
    return LoadResult(
        requests=d["requests"],
        seconds=round(secs, 3),
        rps=round(d["requests"] / secs, 1),
        p50_ms=d["p50_us"] / 1000,
        p90_ms=d["p90_us"] / 1000,
        p99_ms=d["p99_us"] / 1000,
        max_ms=d["max_us"] / 1000,
        errors=errors,
        non2xx=d["status"],
    )


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads) so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def context_switches(pid: int) -> int:
    """Context switches of all of a process's threads so far (a thread that ended no longer counts)."""
    total = 0
    for status in Path(f"/proc/{pid}/task").glob("*/status"):
        try:
            text = status.read_text()
        except OSError:  # the thread ended meanwhile
            continue
        total += sum(int(line.split()[1]) for line in text.splitlines() if "ctxt_switches:" in line)
    return total


def measure(url: str, *, warmup: float, duration: float, connections: int, server: Server | None = None, **kw: Any) -> LoadResult:
    """A discarded warm-up run, then the measured one (with the worker's CPU time per request)."""
    if warmup > 0:
        wrk(url, duration=warmup, connections=connections, **kw)
    pid = server.worker_pid() if server else None
    cpu0 = cpu_seconds(pid) if pid else 0.0
    switches0 = context_switches(pid) if pid else 0
    result = wrk(url, duration=duration, connections=connections, **kw)
    if pid and result.requests:
        result.cpu_us_per_req = round((cpu_seconds(pid) - cpu0) / result.requests * 1e6, 1)
        result.switches_per_req = round((context_switches(pid) - switches0) / result.requests, 2)
    if result.non2xx or result.errors:
        log(f"WARNING: {result.non2xx} non-2xx answers and {result.errors} socket errors on {url}")
    return result


def http(server: Server, method: str, path: str, host: str, token: str, body: bytes | None = None) -> tuple[int, dict[str, Any]]:
    """One request with a cookie token (checks that the load generator's requests really succeed)."""
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        headers = {"Host": host, "Cookie": f"asc_auth_key={token}"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, (json.loads(data) if data else {})
    finally:
        conn.close()


# -- databases -----------------------------------------------------------------------------------------


def hostname_of(i: int) -> str:
    return f"p{i:06d}.bench"


@dataclass
class Population:
    """What populate() made: one (hostname, token) per portal, all admins with stored settings."""

    count: int
    creds: list[tuple[str, str]]

    def write_creds(self, path: Path, limit: int | None = None) -> Path:
        rows = self.creds if limit is None else self.creds[:limit]
        path.write_text("".join(f"{h} {t}\n" for h, t in rows))
        return path


def populate(
    database_url: str,
    data_dir: Path,
    count: int,
    *,
    smtp_host: str = "smtp.example.com",
    smtp_port: int = 587,
    enable_auth: bool = True,
    enable_ssl: bool = True,
) -> Population:
    """Create ``count`` portals, each with one admin, one live session token and its own SMTP settings.

    The first portal is made with the repository functions (``accounts.create_portal``, ``create_user``,
    ``create_session``, ``smtp.put_settings``) so the schema and value shapes are the service's own; the
    rest are bulk INSERTs (executemany) of the same rows into the same tables, in one transaction: 100 000
    portals take seconds instead of minutes. One argon2 hash is shared by every user; tokens are minted
    here (sessions store only their SHA-256). The SMTP password is encrypted per portal with the data
    directory's key ring, as a save through the API does.
    """
    import sqlalchemy as sa

    from smtpsettings.crypto import KeyRing
    from smtpsettings.domain.accounts import Role
    from smtpsettings.domain.passwords import hash_password, hash_secret, new_client_hash_salt
    from smtpsettings.domain.smtp import SmtpSettings
    from smtpsettings.services.smtp import password_purpose
    from smtpsettings.store import accounts, smtp
    from smtpsettings.store.database import Database
    from smtpsettings.store.tables import portals, sessions, smtp_settings, users

    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    keyring = KeyRing(data_dir / "keys.json")
    db = Database(database_url, timeout=600)
    db.migrate()
    password_hash = hash_password("bench password 1")
    salt = secrets.token_hex(8)
    now = datetime.now(UTC)
    expires = now + timedelta(days=30)
    creds = [(hostname_of(i), f"bench-{salt}-{i:06d}") for i in range(count)]

    def settings_of(i: int) -> SmtpSettings:
        return SmtpSettings(
            host=smtp_host,
            port=smtp_port,
            sender_address=f"docspace@{hostname_of(i)}",
            sender_display_name="DocSpace",
            credentials_user_name="docspace" if enable_auth else "",
            enable_ssl=enable_ssl,
            enable_auth=enable_auth,
            use_ntlm=False,
        )

    def fill(conn: Any) -> None:
        host, token = creds[0]
        portal = accounts.create_portal(conn, host, is_default=True)
        user = accounts.create_user(
            conn, portal.id, email=f"admin@{host}", display_name="Admin 0", role=Role.ADMIN, password_hash=password_hash
        )
        accounts.create_session(conn, user, hash_secret(token), expires)
        ciphertext = keyring.encrypt(SMTP_PASSWORD, password_purpose(portal.id)) if enable_auth else None
        smtp.put_settings(conn, portal.id, settings_of(0), ciphertext)
        first_portal, first_user = portal.id, user.id
        salt_of_portals = new_client_hash_salt()  # NOT NULL since the passwordHash sign-in; one is enough here
        chunk = 5000
        for lo in range(1, count, chunk):
            rows = range(lo, min(count, lo + chunk))
            pid = {i: first_portal + i for i in rows}
            uid = {i: first_user + i for i in rows}
            conn.execute(portals.insert(), [{"id": pid[i], "hostname": creds[i][0], "is_default": False, "created_at": now, "password_hash_salt": salt_of_portals} for i in rows])
            conn.execute(
                users.insert(),
                [
                    {
                        "id": uid[i],
                        "portal_id": pid[i],
                        "email": f"admin@{creds[i][0]}",
                        "display_name": f"Admin {i}",
                        "role": Role.ADMIN.value,
                        "password_hash": password_hash,
                        "created_at": now,
                    }
                    for i in rows
                ],
            )
            conn.execute(
                sessions.insert(),
                [
                    {"token_hash": hash_secret(creds[i][1]), "portal_id": pid[i], "user_id": uid[i], "created_at": now, "expires_at": expires}
                    for i in rows
                ],
            )
            values = []
            for i in rows:
                st = settings_of(i)
                values.append(
                    {
                        "portal_id": pid[i],
                        "host": st.host,
                        "port": st.port,
                        "sender_address": st.sender_address,
                        "sender_display_name": st.sender_display_name,
                        "credentials_user_name": st.credentials_user_name,
                        "password_ciphertext": keyring.encrypt(SMTP_PASSWORD, password_purpose(pid[i])) if enable_auth else None,
                        "enable_ssl": st.enable_ssl,
                        "enable_auth": st.enable_auth,
                        "use_ntlm": st.use_ntlm,
                        "updated_at": now,
                    }
                )
            conn.execute(smtp_settings.insert(), values)
        if not db.is_sqlite:
            for table in ("portals", "users"):
                conn.execute(sa.text(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))"))

    started = time.perf_counter()
    db.write_sync(fill)
    if db.is_sqlite:
        db.write_sync(lambda c: c.exec_driver_sql("ANALYZE"))  # what a long-running database would have
    else:
        with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM ANALYZE")
    db.dispose()
    log(f"populated {count} portals in {time.perf_counter() - started:.1f} s")
    return Population(count, creds)


def sqlite_url(data_dir: Path) -> str:
    return f"sqlite:///{data_dir / 'smtpsettings.db'}"


# -- PostgreSQL ----------------------------------------------------------------------------------------


class PgCluster:
    """A throwaway PostgreSQL cluster (the approach of tests/pgcluster.py), postmaster pinned to LOAD_CPU.

    initdb in a temporary directory, a free loopback port, deleted at the end. As root it runs as the
    ``postgres`` account through runuser. Durability as shipped: fsync and ``synchronous_commit``
    stay on, so a commit waits for the WAL flush, the same promise the server's SQLite default
    (``synchronous=FULL``) makes.
    """

    def __init__(self) -> None:
        import glob
        import pwd

        candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
        on_path = shutil.which("initdb")
        if on_path:
            candidates.append(str(Path(os.path.realpath(on_path)).parent))
        self.bin_dir = next((Path(d) for d in candidates if (Path(d) / "initdb").exists() and (Path(d) / "pg_ctl").exists()), None)
        if self.bin_dir is None:
            raise RuntimeError("PostgreSQL server binaries not found (apt-get install postgresql)")
        self.root = Path(tempfile.mkdtemp(prefix="smtpsettings-bench-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        self._as_postgres = os.geteuid() == 0
        if self._as_postgres:
            account = pwd.getpwnam("postgres")
            os.chown(self.root, account.pw_uid, account.pw_gid)
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync", "--locale=C")
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 "
            "-c max_connections=200 -c shared_buffers=128MB"
        )
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.root / "server.log"), "-w", "-t", "60", "start", pin=True)

    def _run(self, tool: str, *args: str, pin: bool = False) -> None:
        command = [str(self.bin_dir / tool), *args]
        if pin:
            command = ["taskset", "-c", LOAD_CPU, *command]
        if self._as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            raise RuntimeError(f"{tool} failed: {result.stdout}\n{result.stderr}")

    def version(self) -> str:
        out = subprocess.run([str(self.bin_dir / "postgres"), "--version"], capture_output=True, text=True)
        return out.stdout.strip()

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def destroy(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")
        except RuntimeError:
            pass
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PgCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.destroy()


class Backend:
    """Where a benchmark's databases live: SQLite files in a data dir, or databases of one PG cluster."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.pg: PgCluster | None = PgCluster() if kind == "postgres" else None

    def database(self, name: str, data_dir: Path) -> str | None:
        """A fresh database for ``data_dir``'s server: the SQLite URL, or a new PG database's URL.

        Returns the URL to pass as SMTPSETTINGS_DATABASE_URL (None for SQLite's default location).
        """
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        if self.pg is None:
            return None
        return self.pg.create_database(name)

    def url_for(self, data_dir: Path, database_url: str | None) -> str:
        return database_url or sqlite_url(data_dir)

    def close(self) -> None:
        if self.pg is not None:
            self.pg.destroy()

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- environment facts ---------------------------------------------------------------------------------


def environment(backend: Backend | None = None) -> dict[str, Any]:
    import sqlite3
    from importlib.metadata import version

    def v(name: str) -> str:
        try:
            return version(name)
        except Exception:
            return "-"

    cpu = "-"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    # not every figure needs wrk (the outbox's delivery figures do not)
    wrk_version = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.splitlines()[0:1] if shutil.which("wrk") else []
    env = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "smtpsettings": v("smtpsettings"),
        "granian": v("granian"),
        "litestar": v("litestar"),
        "msgspec": v("msgspec"),
        "sqlalchemy": v("sqlalchemy"),
        "psycopg": v("psycopg"),
        "structlog": v("structlog"),
        "aiosmtplib": v("aiosmtplib"),
        "aiosmtpd": v("aiosmtpd"),
        "sqlite": sqlite3.sqlite_version,
        "wrk": wrk_version[0].split(" Copyright")[0] if wrk_version else "-",
        "server_cpu": SERVER_CPU,
        "load_cpu": LOAD_CPU,
    }
    if backend is not None and backend.pg is not None:
        env["postgresql"] = backend.pg.version()
    return env


def write_json(path: Path | None, data: Any) -> None:
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, indent=1, default=str))


def run_figure(
    args: argparse.Namespace,
    run: Callable[[argparse.Namespace, Backend, Path], dict[str, Any]],
    table: Callable[[dict[str, Any]], str],
) -> None:
    """What each figure's own command does: from the load core, run it on a fresh backend, print its table
    and keep the raw numbers (``--json``)."""
    os.sched_setaffinity(0, {int(LOAD_CPU)})
    with Workdir(args.workdir, args.keep) as work, Backend(args.db) as backend:
        res = run(args, backend, work)
        res["environment"] = environment(backend)
    print(table(res))
    write_json(args.json, res)


def fmt(value: float | None, unit: str = "", digits: int = 1) -> str:
    if value is None:
        return "–"
    return f"{value:,.{digits}f}{unit}"


def fmt_range(s: dict[str, Any], unit: str = "", digits: int = 1) -> str:
    """``median (min–max)``"""
    if s.get("median") is None:
        return "–"
    return f"{fmt(s['median'], unit, digits)} ({fmt(s['min'], '', digits)}–{fmt(s['max'], '', digits)})"


def check_call(fn: Callable[[], tuple[int, dict[str, Any]]], what: str) -> dict[str, Any]:
    status, body = fn()
    if status != 200:
        raise RuntimeError(f"{what}: HTTP {status} {body}")
    return body
