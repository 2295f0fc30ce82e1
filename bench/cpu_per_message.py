"""The worker's CPU time per message relayed, from acceptance to delivery, on both ways in.

    python bench/cpu_per_message.py [--messages 1000] [--runs 3] [--src DIR ...]

One ``smtpsettings serve --workers 1`` (server core) with the submission port, one portal with a
``mail.send`` API key, the server's default SMTP settings pointing at ``bench/smtpsink.py`` (its own process
on the load core, accepts and drops everything) and the per-portal rate limit out of the way. A run is:

- **submission**: one aiosmtplib client on the load core sends ``--messages`` messages (about 600 bytes, one
  recipient) over one STARTTLS session, each waiting for its 250, then waits until the outbox has delivered
  them all;
- **http**: ``POST /api/2.0/smtpsettings/messages`` ``--messages`` times on one kept-alive connection
  (``Authorization: Bearer`` the same key, a text body of the same size), then waits for delivery likewise.

The figure is the server's user + system CPU (``/proc/PID/stat``, all threads of serve, its worker and its
delivery process) from before the first message to the moment the last one is sent, divided by the messages:
acceptance, the dispatcher's claim, the SMTP client's session and the log lines, everything the server does
for a message. ``BENCH_THREADS=1`` adds the worker's own threads, one by one, and each process's share. Median of ``--runs``, the two
ways alternating. With several ``--src`` (a ``src`` directory of another checkout, put first on the server's
``PYTHONPATH``) the trees are interleaved within each run, so that before/after figures come from one run.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import signal
import sqlite3
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
from common import LOAD_CPU, Server, Workdir, cpu_seconds, free_port, log
from mailtest import start_sink, stop_proc
from submission import MESSAGE, PORTAL, SENDER, cli

PENDING = "SELECT count(*) FROM outbox_messages WHERE status IN ('queued', 'deferred', 'sending')"
FAILED = "SELECT count(*) FROM outbox_messages WHERE status = 'failed'"
HTTP_BODY = json.dumps({
    "to": ["user@example.test"],
    "subject": "Your document was shared with you",
    "text": "The quick brown fox jumps over the lazy dog, again and again.\n" * 7,
}).encode()


def start(work: Path, name: str, tls: tuple[str, str], sink_port: int, src: str | None) -> tuple[Server, int, str]:
    data = work / name
    data.mkdir(parents=True, mode=0o700)
    port = free_port()
    env = {
        "SMTPSETTINGS_SUBMISSION_PORT": str(port),
        "SMTPSETTINGS_SUBMISSION_TLS_CERT": tls[0],
        "SMTPSETTINGS_SUBMISSION_TLS_KEY": tls[1],
        "SMTPSETTINGS_DEFAULT_SMTP_HOST": "127.0.0.1",
        "SMTPSETTINGS_DEFAULT_SMTP_PORT": str(sink_port),
        "SMTPSETTINGS_DEFAULT_SMTP_SENDER_ADDRESS": SENDER,
        "SMTPSETTINGS_OUTBOX_MESSAGES_PER_MINUTE": "100000000",
        "SMTPSETTINGS_SQLITE_SYNCHRONOUS": "normal",
    }
    if src:
        env["PYTHONPATH"] = src
    server = Server(data, None, env).start()
    cli(server, "portal", "create", PORTAL)
    cli(server, "user", "create", "--portal", PORTAL, "--email", "app@" + PORTAL, "--role", "admin", "--password-stdin",
        stdin="bench-password-1\n")
    key = cli(server, "apikey", "create", "--portal", PORTAL, "--email", "app@" + PORTAL, "--scope", "mail.send")
    return server, port, key.strip().splitlines()[-1]


def wait_drained(server: Server, timeout: float = 300) -> None:
    db = sqlite3.connect(f"file:{server.data_dir / 'smtpsettings.db'}?mode=ro", uri=True, timeout=30)
    try:
        deadline = time.monotonic() + timeout
        while db.execute(PENDING).fetchone()[0]:
            if time.monotonic() > deadline:
                raise RuntimeError("the outbox did not drain")
            time.sleep(0.02)
        if db.execute(FAILED).fetchone()[0]:
            raise RuntimeError("messages failed")
    finally:
        db.close()


async def via_submission(port: int, ca: trustme.CA, key: str, n: int) -> None:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, tls_context=context, start_tls=True, timeout=30)
    async with client:
        await client.login(PORTAL, key)
        for _ in range(n):
            errors, reply = await client.sendmail(SENDER, ["user@example.test"], MESSAGE)
            if errors or not reply.startswith("2.0.0"):
                raise RuntimeError(f"not accepted: {errors} {reply}")


def via_http(server: Server, key: str, n: int) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    headers = {"Host": PORTAL, "Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    try:
        for _ in range(n):
            conn.request("POST", "/api/2.0/smtpsettings/messages", body=HTTP_BODY, headers=headers)
            resp = conn.getresponse()
            body = resp.read()
            if resp.status != 202:
                raise RuntimeError(f"POST /messages: HTTP {resp.status} {body[:300]!r}")
    finally:
        conn.close()


def threads(pid: int) -> dict[str, float]:
    """CPU seconds so far of each thread of ``pid``, by thread name (same names summed)."""
    out: dict[str, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            name = "loop" if task.name == str(pid) else (task / "comm").read_text().strip()
            fields = (task / "stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return out


def server_cpu(server: Server) -> float:
    """CPU seconds so far of the whole server: serve, its worker and its delivery process."""
    assert server.process is not None
    return sum(cpu_seconds(pid) for pid in [server.process.pid, *server.worker_pids()])


def processes(server: Server) -> dict[str, float]:
    """CPU seconds so far of each of the server's processes: serve, its worker(s) and the delivery process."""
    assert server.process is not None
    out = {"serve": cpu_seconds(server.process.pid)}
    for pid in server.worker_pids():
        name = "deliver" if b"deliver" in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") else "worker"
        out[name] = out.get(name, 0.0) + cpu_seconds(pid)
    return out


def one(server: Server, port: int, key: str, ca: trustme.CA, way: str, n: int) -> float:
    """CPU ms per message of one way in, delivery included."""
    pid = server.worker_pid()
    wait_drained(server)
    cpu0, threads0, processes0 = server_cpu(server), threads(pid), processes(server)
    if way == "submission":
        asyncio.run(via_submission(port, ca, key, n))
    else:
        via_http(server, key, n)
    wait_drained(server)
    if os.environ.get("BENCH_THREADS"):
        by_thread = {k: (v - threads0.get(k, 0.0)) / n * 1000 for k, v in threads(pid).items()}
        log(f"{way} per thread (ms/message): " + ", ".join(f"{k}={v:.2f}" for k, v in sorted(by_thread.items()) if v >= 0.01))
        by_process = {k: (v - processes0.get(k, 0.0)) / n * 1000 for k, v in processes(server).items()}
        log(f"{way} per process (ms/message): " + ", ".join(f"{k}={v:.2f}" for k, v in sorted(by_process.items())))
    return (server_cpu(server) - cpu0) / n * 1000


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--messages", type=int, default=1000)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--src", action="append", default=None, help="a src directory to run the server from (repeatable)")
    p.add_argument("--workdir", type=Path, default=None)
    p.add_argument("--keep", action="store_true")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--py-spy", type=Path, default=None, help="record the (first) server's measured runs, all its processes, with py-spy to this file")
    args = p.parse_args()
    os.sched_setaffinity(0, {int(LOAD_CPU)})
    trees: list[str | None] = list(args.src) if args.src else [None]
    ca = trustme.CA()
    with Workdir(args.workdir, args.keep) as work:
        issued = ca.issue_cert("localhost", "127.0.0.1")
        tls = (str(work / "cert.pem"), str(work / "key.pem"))
        issued.cert_chain_pems[0].write_to_path(tls[0])
        issued.private_key_pem.write_to_path(tls[1])
        sink, sink_port = start_sink(0.0)
        servers: list[tuple[str, Server, int, str]] = []
        try:
            for i, src in enumerate(trees):
                server, port, key = start(work, f"tree{i}", tls, sink_port, src)
                servers.append((src or "installed", server, port, key))
                for way in ("submission", "http"):  # warm-up: imports, caches, the first connections
                    one(server, port, key, ca, way, 50)
            results: dict[str, dict[str, list[float]]] = {s[0]: {"submission": [], "http": []} for s in servers}
            spy = None
            if args.py_spy:
                spy = subprocess.Popen(["py-spy", *os.environ.get("BENCH_PYSPY", "record -r 250 -f raw").split(), "--subprocesses", "-o", str(args.py_spy), "-p", str(servers[0][1].process.pid)],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for r in range(args.runs):
                ways = ("submission", "http") if r % 2 == 0 else ("http", "submission")
                for way in ways:
                    order = servers if r % 2 == 0 else servers[::-1]
                    for name, server, port, key in order:
                        ms = one(server, port, key, ca, way, args.messages)
                        results[name][way].append(ms)
                        log(f"run {r + 1} {way} {name}: {ms:.2f} ms CPU/message")
            if spy:
                spy.send_signal(signal.SIGINT)
                spy.wait(60)
        finally:
            for _, server, _, _ in servers:
                server.stop()
            stop_proc(sink)
    print(f"\nWorker CPU per message, accept + deliver, {args.messages} messages, median of {args.runs} (min–max)")
    print("| tree | submission ms | HTTP ms |")
    print("|---|---|---|")
    report: dict[str, Any] = {}
    for name, ways in results.items():
        cells = [f"{statistics.median(v):.2f} ({min(v):.2f}–{max(v):.2f})" for v in ways.values()]
        print(f"| {name} | {' | '.join(cells)} |")
        report[name] = ways
    first = next(iter(results))
    for name, ways in list(results.items())[1:]:  # ratios within each run (the machine drifts between runs)
        ratios = {w: statistics.median(a / b for a, b in zip(v, results[first][w], strict=True)) for w, v in ways.items()}
        print(f"| {name} ÷ {first}, median of per-run ratios | {ratios['submission']:.2f} | {ratios['http']:.2f} |")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
