"""The submission port's acceptance rate against aiosmtpd alone, in the same run.

    python bench/submission.py [--db sqlite|postgres] [--runs 3] [--duration 6] [--warmup 2] [--profile]

What is measured: messages accepted per second over **one** STARTTLS session, by one aiosmtplib client on the
load core sending the same small message (about 600 bytes, one recipient) again and again, each waiting for
its 250 before the next (an application's loop). Against:

- **bare**: aiosmtpd's ``Controller`` with a no-op handler (DATA answers 250 at once), STARTTLS, no AUTH, in a
  process of its own pinned to the server's core;
- **ours**: ``smtpsettings serve --workers 1 --submission-port`` pinned to the server's core, the client
  signed in with a ``--scope mail.send`` API key; every 250 means the message is committed to the outbox.
  On SQLite once with ``SMTPSETTINGS_SQLITE_SYNCHRONOUS=full`` (the default: one fsync per commit, so per
  message) and once with ``normal``; on PostgreSQL (``--db postgres``) once, with the cluster's defaults.

- **ours-normal, no dispatcher** (ours-default on PostgreSQL): as ours-normal, but the bench holds the instance's outbox lock
  (``DATA_DIR/outbox.lock``) so the server's dispatcher stands by, as a second instance's would: the
  acceptance path alone.

The order of the variants rotates from run to run; each run's ratio is ours / bare of that run, and the
figure is the median. The portal sends through a server that refuses connections and is held to 1 message a
minute (``SMTPSETTINGS_OUTBOX_MESSAGES_PER_MINUTE=1``), so no delivery is attempted while acceptance is
measured (delivery is bench/outbox.py's figure). The dispatcher still wakes for every accepted message and
claims it, counts it against the portal's rate and releases it, in one write transaction on the same event
loop: that is part of what each message costs the worker, whatever the rate. Also reported: the server
process's CPU time per message (less sensitive to the machine's other load than the rate). Target: ratio
≥ 0.5. ``--profile`` also runs the submission path (no dispatcher) in this process under cProfile and prints
the cumulative time of its steps.
"""

from __future__ import annotations

import argparse
import asyncio
import fcntl
import json
import os
import signal
import ssl
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import aiosmtplib
import trustme
from common import (
    LOAD_CPU,
    SERVER_CPU,
    Backend,
    Server,
    Workdir,
    cpu_seconds,
    environment,
    free_port,
    log,
    smtpsettings_exe,
)

SENDER = "docspace@submission.bench"
PORTAL = "submission.bench"
APP_USER = "app@submission.bench"
_held: list[object] = []
MESSAGE = (
    b"From: DocSpace <docspace@submission.bench>\r\n"
    b"To: user@example.test\r\n"
    b"Subject: Your document was shared with you\r\n"
    b"Date: Mon, 30 Nov 2026 10:00:00 +0000\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"\r\n" + b"The quick brown fox jumps over the lazy dog, again and again.\r\n" * 7
)


# -- the baseline: aiosmtpd alone, in a process of its own -------------------------------------------------


def bare_server(port: int, cert: str, key: str) -> None:
    """aiosmtpd with a handler that accepts every message and does nothing with it; runs until SIGTERM."""
    from aiosmtpd.controller import Controller

    class NoOp:
        async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
            return "250 2.0.0 OK"

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    controller = Controller(
        NoOp(), hostname="127.0.0.1", port=port, tls_context=context, require_starttls=True, server_hostname="localhost"
    )
    controller.start()
    print("ready", flush=True)
    signal.sigwait({signal.SIGTERM, signal.SIGINT})
    controller.stop()


# -- the client ----------------------------------------------------------------------------------------------


async def accept_rate(
    port: int, ca: trustme.CA, login: tuple[str, str] | None, warmup: float, duration: float, server_pid: int | None = None
) -> dict[str, float]:
    """Messages a second one session gets accepted: ``warmup`` s discarded, then ``duration`` s counted.

    With ``server_pid``, also the server's CPU time per message (what the machine's other load cannot change
    much, unlike the rate): the part of a miss that is work rather than waiting (an fsync, the scheduler).
    """
    context = ssl.create_default_context()
    ca.configure_trust(context)
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, tls_context=context, start_tls=True, timeout=30)
    async with client:
        if login:
            await client.login(*login)
        deadline = time.perf_counter() + warmup
        while time.perf_counter() < deadline:
            await client.sendmail(SENDER, ["user@example.test"], MESSAGE)
        sent, started = 0, time.perf_counter()
        cpu, server_cpu = time.process_time(), cpu_seconds(server_pid) if server_pid else 0.0
        while (elapsed := time.perf_counter() - started) < duration:
            errors, reply = await client.sendmail(SENDER, ["user@example.test"], MESSAGE)
            if errors or not reply.startswith("2.0.0"):
                raise RuntimeError(f"not accepted: {errors} {reply}")
            sent += 1
        result = {"messages": sent, "seconds": elapsed, "per_second": sent / elapsed}
        result["client_cpu_ms"] = (time.process_time() - cpu) / sent * 1000
        if server_pid:
            result["server_cpu_ms"] = (cpu_seconds(server_pid) - server_cpu) / sent * 1000
        return result


# -- our server ------------------------------------------------------------------------------------------------


def cli(server: Server, *args: str, stdin: str | None = None) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMTPSETTINGS_")}
    env.update(SMTPSETTINGS_DATA_DIR=str(server.data_dir), **server.extra_env)
    if server.database_url:
        env["SMTPSETTINGS_DATABASE_URL"] = server.database_url
    result = subprocess.run([smtpsettings_exe(), *args], env=env, input=stdin, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"smtpsettings {' '.join(args)}: {result.stderr.strip()}")
    return result.stdout


def our_server(
    work: Path, name: str, backend: Backend, tls: tuple[str, str], *, hold_dispatcher: bool = False, **env: str
) -> tuple[Server, int, str]:
    """A server with the submission port and a portal with an API key: ``(server, port, key)``.

    ``hold_dispatcher``: this process takes the instance's outbox lock first, so the server never dispatches.
    """
    data = work / name
    port = free_port()
    if hold_dispatcher:
        data.mkdir(parents=True, exist_ok=True, mode=0o700)
        lock = (data / "outbox.lock").open("ab")
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        _held.append(lock)  # released when this process ends
    server = Server(
        data,
        backend.database(name, data),
        {
            "SMTPSETTINGS_SUBMISSION_PORT": str(port),
            "SMTPSETTINGS_SUBMISSION_TLS_CERT": tls[0],
            "SMTPSETTINGS_SUBMISSION_TLS_KEY": tls[1],
            "SMTPSETTINGS_DEFAULT_SMTP_HOST": "127.0.0.1",
            "SMTPSETTINGS_DEFAULT_SMTP_PORT": str(free_port()),  # nothing listens: a delivery is one refused connect
            "SMTPSETTINGS_DEFAULT_SMTP_SENDER_ADDRESS": SENDER,
            "SMTPSETTINGS_OUTBOX_MESSAGES_PER_MINUTE": "1",
            "SMTPSETTINGS_OUTBOX_FIRST_RETRY_SECONDS": "3600",
            **env,
        },
    )
    server.start()
    cli(server, "portal", "create", PORTAL)
    cli(server, "user", "create", "--portal", PORTAL, "--email", APP_USER, "--role", "admin", "--password-stdin", stdin="bench-password-1\n")
    key = cli(server, "apikey", "create", "--portal", PORTAL, "--email", APP_USER, "--scope", "mail.send").strip().splitlines()[-1]
    return server, port, key


# -- in-process profile ------------------------------------------------------------------------------------------


def profile(work: Path, backend: Backend, tls: tuple[str, str], ca: trustme.CA, synchronous: str, seconds: float) -> str:
    """cProfile of the submission port in this process (server and client on one loop), top functions by own time."""
    import cProfile
    import io
    import logging
    import pstats
    import socket

    import structlog

    from smtpsettings.config import load_settings
    from smtpsettings.domain.accounts import Role
    from smtpsettings.services.accounts import AccountsService
    from smtpsettings.wiring import Services
    from smtpsettings.submission.server import SubmissionServer

    data = work / f"profile-{synchronous}"
    url = backend.database(f"profile_{synchronous}", data)
    environ = {
        "SMTPSETTINGS_DATA_DIR": str(data),
        "SMTPSETTINGS_SUBMISSION_TLS_CERT": tls[0],
        "SMTPSETTINGS_SUBMISSION_TLS_KEY": tls[1],
        "SMTPSETTINGS_DEFAULT_SMTP_HOST": "127.0.0.1",
        "SMTPSETTINGS_DEFAULT_SMTP_SENDER_ADDRESS": SENDER,
        "SMTPSETTINGS_SQLITE_SYNCHRONOUS": synchronous,
        "SMTPSETTINGS_LOG_LEVEL": "warning",
    }
    if url:
        environ["SMTPSETTINGS_DATABASE_URL"] = url
    settings = load_settings(environ)
    services = Services(settings)
    services.db.migrate()
    accounts = AccountsService(services.db)
    accounts.create_portal(PORTAL, is_default=False)
    accounts.create_user(PORTAL, email=APP_USER, password="bench-password-1", role=Role.ADMIN)
    _, key = accounts.create_api_key(PORTAL, APP_USER, "mail.send")

    async def run() -> dict[str, float]:
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        server = SubmissionServer(settings, services.auth, services.outbox)  # no dispatcher: nothing is sent
        await server.start([(listener, False)])
        try:
            return await accept_rate(listener.getsockname()[1], ca, (PORTAL, key), 0.5, seconds)
        finally:
            await server.stop()
            await services.db.dispose_async()

    # Log lines would go to the terminal here (serve sends them to a file); keep them out of the profile.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    profiler = cProfile.Profile()
    profiler.enable()
    rate = asyncio.run(run())
    profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    # Cumulative time of the server's steps (the client shares the process: its own lines are left out).
    stats.sort_stats("cumulative").print_stats(r"smtpsettings/|aiosmtpd/smtp.py|sqlite3.Connection|email/(parser|utils)", 30)
    return f"in-process, synchronous={synchronous}: {rate['per_second']:.0f} messages/s (client and server on one core)\n" + out.getvalue()


# -- the run ------------------------------------------------------------------------------------------------------


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--duration", type=float, default=6.0)
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--workdir", type=Path, default=None)
    p.add_argument("--keep", action="store_true")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--profile", action="store_true", help="also profile the submission path in-process (cProfile)")
    p.add_argument("--bare-server", nargs=3, metavar=("PORT", "CERT", "KEY"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.bare_server:
        port, cert, key = args.bare_server
        bare_server(int(port), cert, key)
        return

    os.sched_setaffinity(0, {int(LOAD_CPU)})
    ca = trustme.CA()
    with Workdir(args.workdir, args.keep) as work, Backend(args.db) as backend:
        issued = ca.issue_cert("localhost", "127.0.0.1")
        tls = (str(work / "cert.pem"), str(work / "key.pem"))
        issued.cert_chain_pems[0].write_to_path(tls[0])
        issued.private_key_pem.write_to_path(tls[1])

        bare_port = free_port()
        bare = subprocess.Popen(
            ["taskset", "-c", SERVER_CPU, sys.executable, __file__, "--bare-server", str(bare_port), *tls],
            stdout=subprocess.PIPE,
            text=True,
        )
        servers: list[Server] = []
        try:
            assert bare.stdout is not None and bare.stdout.readline().strip() == "ready"
            variants: dict[str, tuple[int, tuple[str, str] | None, int]] = {"bare": (bare_port, None, bare.pid)}
            modes = ["full", "normal"] if args.db == "sqlite" else ["default"]
            setups = [(f"ours-{m}", m, False) for m in modes]
            setups.append((f"ours-{modes[-1]}, no dispatcher", modes[-1], True))
            for name, mode, hold in setups:
                env = {"SMTPSETTINGS_SQLITE_SYNCHRONOUS": mode} if args.db == "sqlite" else {}
                server, port, key = our_server(
                    work, name.replace("-", "_").replace(", ", "_").replace(" ", "_"), backend, tls, hold_dispatcher=hold, **env
                )
                servers.append(server)
                variants[name] = (port, (PORTAL, key), server.worker_pid())
            names = list(variants)
            runs: list[dict[str, Any]] = []
            for i in range(args.runs):
                order = names[i % len(names) :] + names[: i % len(names)]
                result = {}
                for name in order:
                    port, login, pid = variants[name]
                    result[name] = asyncio.run(accept_rate(port, ca, login, args.warmup, args.duration, pid))
                    log(
                        f"run {i + 1} {name}: {result[name]['per_second']:.0f} messages/s, "
                        f"server CPU {result[name]['server_cpu_ms']:.2f} ms/message"
                    )
                runs.append(result)
            for server in servers:
                text = server.log_path.read_text() if server.log_path else ""
                leaked = [login[1] for _, login, _ in variants.values() if login and login[1] in text]
                if leaked:
                    raise RuntimeError("an API key appears in the server log")
        finally:
            for server in servers:
                server.stop()
            bare.send_signal(signal.SIGTERM)
            try:
                bare.wait(10)
            except subprocess.TimeoutExpired:
                bare.kill()

        report: dict[str, Any] = {"runs": runs, "environment": environment(backend)}
        print(f"\nSubmission acceptance over one STARTTLS session, {args.db}, {args.runs} run(s) of {args.duration:g} s")
        print("| variant | messages/s (median, min–max) | server CPU ms/message | ratio to bare (median) | target ≥ 0.5 |")
        print("|---|---|---|---|---|")
        verdicts = []
        for name in names:
            rates = [r[name]["per_second"] for r in runs]
            cpu = statistics.median(r[name]["server_cpu_ms"] for r in runs)
            line = f"| {name} | {statistics.median(rates):,.0f} ({min(rates):,.0f}–{max(rates):,.0f}) | {cpu:.2f} |"
            if name == "bare":
                print(line + " 1 | |")
                continue
            ratio = statistics.median(r[name]["per_second"] / r["bare"]["per_second"] for r in runs)
            verdict = "PASS" if ratio >= 0.5 else "FAIL"
            verdicts.append(verdict)
            report[f"ratio_{name}"] = ratio
            print(f"{line} {ratio:.2f} | {verdict} |")
        if args.profile:
            for mode in modes:
                print()
                print(profile(work, backend, tls, ca, "full" if mode == "default" else mode, args.duration))
        if args.json:
            args.json.write_text(json.dumps(report, indent=2, default=str))
        print("\nPASS" if all(v == "PASS" for v in verdicts) else "\nFAIL")


if __name__ == "__main__":
    main()
