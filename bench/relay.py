"""The relay against Postfix: our submission port and HTTP API beside a Postfix smarthost relay, one sink.

    python bench/relay.py [--messages 2000] [--repeat 3] [--json FILE] [--no-strace] [--keep]
    python bench/relay.py --scale [--portals 1000] [--per-portal 5] [--repeat 3]

Systems, all relaying to one ``--sink`` process (aiosmtpd on the load core that keeps every message's
Message-ID and arrival time):

* **sink**: the clients talk to the sink itself (no TLS): the ceiling of this client and this sink;
* **postfix**: a private Postfix instance from the Debian package, configured here (``postfix -c DIR``: its own
  queue directory under the scratch directory, ``inet_interfaces=127.0.0.1``, its smtpd on a random port,
  ``relayhost=[127.0.0.1]:SINK``, ``mynetworks=127.0.0.0/8`` loopback trust, STARTTLS offered with a trustme
  certificate, ``smtp_tls_security_level=none``, every durability setting at its default), pinned to the server
  core; skipped with a message where ``/usr/sbin/postfix`` is missing;
* **submission**: ``smtpsettings serve --workers 1`` on the server core, its submission port (STARTTLS, then AUTH
  with a ``mail.send`` API key), default durability (SQLite ``synchronous=full``), delivering to the sink;
* **http**: the same server's ``POST /api/2.0/smtpsettings/messages`` (Bearer API key).

Postfix and the sink are sent the same STARTTLS session without AUTH (loopback trust); ours signs in. The
per-portal rate limit (``SMTPSETTINGS_OUTBOX_MESSAGES_PER_MINUTE``) is raised out of the way, and the bench says
so when it starts. Workloads: **one-session** (1 client, one session, a message after each 250),
**per-message** (1 client, a new session for each message: connect, STARTTLS, AUTH, one message, QUIT; for
HTTP a new connection per request) and **8-clients** (8 concurrent sessions). A repetition runs every
workload with the systems in rotating order. Figures per system and workload: acceptance msg/s (first send to
last 250/202), delivery msg/s (first send to the sink's last arrival), acceptance latency p50/p99 (per-message:
the whole session), CPU per message (utime+stime of every process of the system, those that ended included,
through their parent's cutime/cstime; the sink: its process), RSS and PSS summed over the system's processes
from ``/proc/PID/smaps_rollup`` after the run, and duplicates and losses counted by Message-ID at the sink. One
dedicated 8-clients repetition (not in the throughput figures) runs each system under
``strace -f -c -e trace=fsync,fdatasync,sync_file_range`` attached to all its processes: syncs per message.

``--scale``: through the outbox only (accepted in one transaction, as bench/nexthop.py does), ``--portals``
portals × ``--per-portal`` messages against one portal × the same number, rate limits lifted, the sink
uncapped: delivery msg/s and their ratio, the connections the sink saw opened, and the worker's RSS growth
per portal; from the server's ``/metrics``, what each side added to the dispatcher's counts of settings reads
and connections opened, and the token-cache entries it holds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from itertools import chain
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
    environment,
    free_port,
    log,
    summary,
    write_json,
)

BENCH = Path(__file__).resolve().parent
POSTFIX = "/usr/sbin/postfix"
SENDER = "docspace@submission.bench"
PORTAL = "submission.bench"
MESSAGES_PATH = "/api/2.0/smtpsettings/messages"
WORKLOADS = {"one-session": (1, False), "per-message": (1, True), "8-clients": (8, False)}
RATE_ENV = {"SMTPSETTINGS_OUTBOX_MESSAGES_PER_MINUTE": "100000000"}
SYNC_CALLS = ("fsync", "fdatasync", "sync_file_range")
TARGETS = {  # (system, workload): minimum ratio to Postfix, acceptance and delivery
    ("submission", "8-clients"): 1.0,
    ("submission", "one-session"): 0.8,
    ("http", "8-clients"): 0.8,
}
TEXT = "The quick brown fox jumps over the lazy dog, again and again. " * 16
HTML = "<p>" + TEXT * 2 + "</p>"


# -- the sink: aiosmtpd that keeps Message-IDs and the last arrival time (this script with --sink PORT) ---------


def sink_main(port: int) -> None:
    """Commands on stdin, one a line: ``count`` prints the messages so far, ``report`` prints them (JSON) and
    starts afresh; end of stdin stops it."""
    from smtpsink import CountingSMTP, Sink

    class Timed(Sink):
        last = 0.0

        async def handle_DATA(self, server: Any, session: object, envelope: Any) -> str:
            reply = await super().handle_DATA(server, session, envelope)
            self.last = time.time()
            return reply

    async def main() -> None:
        loop = asyncio.get_running_loop()
        sink = Timed(0.0, None, keep_ids=True)
        opened = 0

        def protocol() -> CountingSMTP:
            nonlocal opened
            opened += 1
            return CountingSMTP(sink, hostname="sink.localhost", ident="bench sink", enable_SMTPUTF8=True)

        server = await loop.create_server(protocol, "127.0.0.1", port, backlog=1024)
        print("READY", flush=True)
        lines: asyncio.Queue[str] = asyncio.Queue()
        threading.Thread(target=lambda: [loop.call_soon_threadsafe(lines.put_nowait, s) for s in chain(sys.stdin, [""])],
                         daemon=True).start()
        while command := (await lines.get()).strip():
            ids = sink.message_ids or []
            if command == "count":
                print(len(ids), flush=True)
            elif command == "report":
                print(json.dumps({"ids": ids, "last": sink.last, "opened": opened}), flush=True)
                sink.message_ids, opened = [], 0
        server.close()

    asyncio.run(main())


class SinkProcess:
    def __init__(self) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen(["taskset", "-c", LOAD_CPU, sys.executable, __file__, "--sink", str(self.port)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        if self.ask("") != "READY":
            raise RuntimeError("the sink did not start")

    def ask(self, command: str) -> str:
        assert self.proc.stdin and self.proc.stdout
        if command:
            self.proc.stdin.write(command + "\n")
            self.proc.stdin.flush()
        return self.proc.stdout.readline().strip()

    def wait_for(self, n: int, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while int(self.ask("count")) < n and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.2)  # a late duplicate would arrive now
        return dict(json.loads(self.ask("report")))

    def stop(self) -> None:
        assert self.proc.stdin
        self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# -- processes: CPU, memory, syncs ---------------------------------------------------------------------------


def tree(pids: list[int]) -> list[int]:
    import psutil

    out: list[int] = []
    for pid in pids:
        try:
            out += [pid, *(c.pid for c in psutil.Process(pid).children(recursive=True))]
        except psutil.NoSuchProcess:
            pass
    return sorted(set(out))


def tree_cpu(pids: list[int]) -> float:
    """utime+stime+cutime+cstime of every live process: a child that ended was added to its parent's c-times."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        total += sum(int(f) for f in fields[11:15])
    return total / os.sysconf("SC_CLK_TCK")


def memory_mb(pids: list[int]) -> dict[str, float]:
    rss = pss = 0
    for pid in pids:
        try:
            text = Path(f"/proc/{pid}/smaps_rollup").read_text()
        except OSError:
            continue
        rss += int(re.search(r"^Rss:\s+(\d+)", text, re.MULTILINE).group(1))  # type: ignore[union-attr]
        pss += int(re.search(r"^Pss:\s+(\d+)", text, re.MULTILINE).group(1))  # type: ignore[union-attr]
    return {"rss_mb": rss / 1024, "pss_mb": pss / 1024}


class Strace:
    """``strace -f -c`` attached to processes (and their future children) until stopped: sync calls counted."""

    def __init__(self, pids: list[int], out: Path) -> None:
        self.out = out
        command = ["strace", "-f", "-c", "-o", str(out), "-e", "trace=" + ",".join(SYNC_CALLS)]
        for pid in pids:
            command += ["-p", str(pid)]
        self.proc = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
        assert self.proc.stderr
        for _ in pids:  # "Process N attached" once per thread; wait for the first of each, roughly
            self.proc.stderr.readline()
        time.sleep(0.3)

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(30)
        calls = 0
        for line in self.out.read_text().splitlines():
            cols = line.split()
            if cols and cols[-1] in SYNC_CALLS:
                calls += int(cols[3])
        return calls


# -- Postfix, configured here --------------------------------------------------------------------------------

MASTER_CF = """\
{port} inet n - n - - smtpd
pickup unix n - n 60 1 pickup
cleanup unix n - n - 0 cleanup
qmgr unix n - n 300 1 qmgr
tlsmgr unix - - n 1000? 1 tlsmgr
rewrite unix - - n - - trivial-rewrite
bounce unix - - n - 0 bounce
defer unix - - n - 0 bounce
trace unix - - n - 0 bounce
verify unix - - n - 1 verify
flush unix n - n 1000? 0 flush
proxymap unix - - n - - proxymap
smtp unix - - n - - smtp
relay unix - - n - - smtp
showq unix n - n - - showq
error unix - - n - - error
retry unix - - n - - error
discard unix - - n - - discard
anvil unix - - n - 1 anvil
scache unix - - n - 1 scache
postlog unix-dgram n - n - 1 postlogd
"""


class Postfix:
    """A private Postfix instance: smarthost relay to the sink, loopback trust, its queue on disk in ``work``."""

    def __init__(self, work: Path, sink_port: int, tls: tuple[str, str]) -> None:
        self.dir = work / "postfix"
        self.port = free_port()
        (self.dir / "spool").mkdir(parents=True)
        (self.dir / "data").mkdir()
        os.chown(self.dir / "data", _uid("postfix"), -1)
        settings = {
            "compatibility_level": "3.6", "queue_directory": self.dir / "spool", "data_directory": self.dir / "data",
            "maillog_file": self.dir / "maillog", "maillog_file_prefixes": self.dir, "inet_interfaces": "127.0.0.1", "inet_protocols": "ipv4",
            "myhostname": "relay.bench.localhost", "mydestination": "", "relayhost": f"[127.0.0.1]:{sink_port}",
            "mynetworks": "127.0.0.0/8", "smtpd_relay_restrictions": "permit_mynetworks, reject",
            "smtp_tls_security_level": "none", "smtpd_tls_security_level": "may", "smtpd_tls_cert_file": tls[0],
            "smtpd_tls_key_file": tls[1], "alias_maps": "", "alias_database": "", "local_recipient_maps": "",
            "smtputf8_enable": "no", "biff": "no",
        }
        (self.dir / "main.cf").write_text("".join(f"{k} = {v}\n" for k, v in settings.items()))
        (self.dir / "master.cf").write_text(MASTER_CF.format(port=f"127.0.0.1:{self.port}"))

    def control(self, *command: str) -> None:
        result = subprocess.run(["taskset", "-c", SERVER_CPU, POSTFIX, "-c", str(self.dir), *command],
                                capture_output=True, text=True, check=False)
        if result.returncode:
            raise RuntimeError(f"postfix {' '.join(command)}: {result.stderr.strip()}")

    def start(self) -> Postfix:
        self.control("start")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return self
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"postfix did not listen:\n{self.log_tail()}")

    def master_pid(self) -> int:
        return int((self.dir / "spool" / "pid" / "master.pid").read_text().split()[0])

    def log_tail(self) -> str:
        path = self.dir / "maillog"
        return path.read_text()[-2000:] if path.exists() else ""

    def stop(self) -> None:
        try:
            pid = self.master_pid()
        except OSError:
            return
        subprocess.run([POSTFIX, "-c", str(self.dir), "stop"], capture_output=True, check=False)
        deadline = time.monotonic() + 20
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        if Path(f"/proc/{pid}").exists():
            subprocess.run([POSTFIX, "-c", str(self.dir), "abort"], capture_output=True, check=False)


def _uid(user: str) -> int:
    import pwd

    return pwd.getpwnam(user).pw_uid


# -- the clients ----------------------------------------------------------------------------------------------


@dataclass
class Target:
    """How to hand a message to one system."""

    name: str
    port: int
    kind: str  # "smtp" or "http"
    tls: bool = True
    login: tuple[str, str] | None = None
    key: str = ""
    pids: Any = None  # () -> the system's processes


def smtp_message(i: int, tag: str) -> tuple[str, bytes]:
    from smtpsettings.mail.message import build_message, flatten, new_message_id

    message_id = new_message_id("submission.bench")
    content, _ = flatten(build_message(sender_address=SENDER, sender_display_name="DocSpace", to=[f"user{i}@example.test"],
                                       subject=f"Notification {tag} {i}", text=TEXT, html=HTML, message_id=message_id))
    return message_id, content


async def smtp_session(t: Target, context: ssl.SSLContext) -> aiosmtplib.SMTP:
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=t.port, tls_context=context, start_tls=t.tls, timeout=60)
    await client.connect()
    if t.login:
        await client.login(*t.login)
    return client


async def http_post(conn: tuple[asyncio.StreamReader, asyncio.StreamWriter], t: Target, i: int, close: bool) -> str:
    body = json.dumps({"to": [f"user{i}@example.test"], "subject": f"Notification {i}", "text": TEXT, "html": HTML}).encode()
    reader, writer = conn
    head = [f"POST {MESSAGES_PATH} HTTP/1.1", f"Host: {PORTAL}", f"Authorization: Bearer {t.key}",
            "Content-Type: application/json", f"Content-Length: {len(body)}", *(["Connection: close"] if close else [])]
    writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
    answer_head = (await reader.readuntil(b"\r\n\r\n")).decode()
    length = int(re.search(r"(?im)^content-length:\s*(\d+)", answer_head).group(1))  # type: ignore[union-attr]
    answer = json.loads(await reader.readexactly(length))
    if not answer_head.startswith("HTTP/1.1 202"):
        raise RuntimeError(f"POST /messages: {answer_head.splitlines()[0]} {answer}")
    return str(answer["response"]["messageId"])


async def client(t: Target, built: list[tuple[int, str, bytes]], new_session: bool, context: ssl.SSLContext,
                 latencies: list[float], ids: list[str]) -> None:
    """The messages one after another, each after the previous one's acceptance."""
    session: Any = None
    for i, message_id, content in built:
        started = time.perf_counter()
        if session is None:
            session = await smtp_session(t, context) if t.kind == "smtp" else await asyncio.open_connection("127.0.0.1", t.port)
        if t.kind == "smtp":
            errors, reply = await session.sendmail(SENDER, [f"user{i}@example.test"], content)
            if errors:
                raise RuntimeError(f"{t.name}: refused {errors} {reply}")
        else:
            message_id = await http_post(session, t, i, new_session)
        if new_session:
            await (session.quit() if t.kind == "smtp" else _close(session[1]))
            session = None
        latencies.append(time.perf_counter() - started)
        ids.append(message_id)
    if session is not None:
        await (session.quit() if t.kind == "smtp" else _close(session[1]))


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    await writer.wait_closed()


def workload(t: Target, name: str, n: int, sink: SinkProcess, context: ssl.SSLContext, strace_to: Path | None = None,
             ) -> dict[str, Any]:
    clients, new_session = WORKLOADS[name]
    pids = t.pids()
    tracer = Strace(pids, strace_to) if strace_to else None
    cpu0 = tree_cpu(pids)
    latencies: list[float] = []
    ids: list[str] = []

    each = n // clients  # built before the clock starts (HTTP: the server makes the message)
    batches = [[(i, *(smtp_message(i, t.name) if t.kind == "smtp" else ("", b""))) for i in range(k * each, (k + 1) * each)]
               for k in range(clients)]

    async def run() -> float:
        await asyncio.gather(*(client(t, batch, new_session, context, latencies, ids) for batch in batches))
        return time.time()

    start = time.time()
    accepted = asyncio.run(run())
    got = sink.wait_for(len(ids), timeout=120)
    cpu = tree_cpu(t.pids()) - cpu0
    syncs = tracer.stop() if tracer else None
    seen = Counter(got["ids"])
    lost = sum(1 for i in ids if i not in seen)
    sent = set(ids)
    twice = sum(c - 1 for c in seen.values() if c > 1) + sum(1 for i in seen if i not in sent)  # or never sent
    latencies.sort()
    m = len(ids)
    return {"messages": m, "accept_per_s": m / (accepted - start), "deliver_per_s": m / (max(got["last"], accepted) - start),
            "p50_ms": latencies[m // 2] * 1000, "p99_ms": latencies[min(m - 1, int(m * 0.99))] * 1000,
            "cpu_ms_per_msg": cpu / m * 1000, **memory_mb(t.pids()), "lost": lost, "duplicates": twice,
            "syncs_per_msg": None if syncs is None else syncs / m}


# -- our server ------------------------------------------------------------------------------------------------


def our_targets(work: Path, backend: Backend, tls: tuple[str, str], sink_port: int) -> tuple[Server, list[Target]]:
    from submission import our_server

    server, port, key = our_server(work, "ours", backend, tls, **RATE_ENV, SMTPSETTINGS_DEFAULT_SMTP_PORT=str(sink_port),
                                   SMTPSETTINGS_OUTBOX_FIRST_RETRY_SECONDS="1")
    root = server.process.pid if server.process else 0
    return server, [Target("submission", port, "smtp", login=(PORTAL, key), pids=lambda: tree([root])),
                    Target("http", server.port, "http", key=key, pids=lambda: tree([root]))]


def relay(args: argparse.Namespace, work: Path, backend: Backend) -> dict[str, Any]:
    log(f"the per-portal rate limit is raised for this bench: {RATE_ENV}")
    ca = trustme.CA()
    issued = ca.issue_cert("localhost", "127.0.0.1")
    tls = (str(work / "cert.pem"), str(work / "key.pem"))
    issued.cert_chain_pems[0].write_to_path(tls[0])
    issued.private_key_pem.write_to_path(tls[1])
    os.chmod(tls[1], 0o644)  # Postfix's smtpd reads it as the postfix user
    context = ssl.create_default_context()
    ca.configure_trust(context)
    sink = SinkProcess()
    postfix: Postfix | None = None
    server: Server | None = None
    try:
        targets = [Target("sink", sink.port, "smtp", tls=False, pids=lambda: [sink.proc.pid])]
        if Path(POSTFIX).exists():
            postfix = Postfix(work, sink.port, tls).start()
            pf = postfix
            targets.append(Target("postfix", pf.port, "smtp", pids=lambda: tree([pf.master_pid()])))
        else:
            print("postfix not installed: apt-get install postfix; skipping the baseline", file=sys.stderr, flush=True)
        server, ours = our_targets(work, backend, tls, sink.port)
        targets += ours
        for t in targets:  # warm-up, not counted
            workload(t, "8-clients", min(80, args.messages), sink, context)
        runs: list[dict[str, Any]] = []
        for rep in range(args.repeat):
            one: dict[str, Any] = {}
            for w in WORKLOADS:
                k = (rep + list(WORKLOADS).index(w)) % len(targets)
                for t in targets[k:] + targets[:k]:
                    r = one.setdefault(w, {})[t.name] = workload(t, w, args.messages, sink, context)
                    log(f"run {rep + 1} {w} {t.name}: accepted {r['accept_per_s']:.0f}/s, delivered {r['deliver_per_s']:.0f}/s,"
                        f" p99 {r['p99_ms']:.1f} ms, CPU {r['cpu_ms_per_msg']:.2f} ms/msg, lost {r['lost']}, twice {r['duplicates']}")
            runs.append(one)
        syncs: dict[str, Any] = {}
        if not args.no_strace and not shutil.which("strace"):
            log("strace not installed: apt-get install strace; no syncs per message")
        elif not args.no_strace:
            for t in targets:
                r = workload(t, "8-clients", args.messages, sink, context, strace_to=work / f"strace-{t.name}.txt")
                syncs[t.name] = r["syncs_per_msg"]
                log(f"strace {t.name}: {r['syncs_per_msg']:.2f} syncs/message")
    finally:
        if server:
            server.stop()
        if postfix:
            postfix.stop()
        sink.stop()
    return {"messages": args.messages, "repeat": args.repeat, "systems": [t.name for t in targets], "runs": runs,
            "syncs_per_msg": syncs, "rate_env": RATE_ENV}


def relay_table(res: dict[str, Any]) -> str:
    keys = ("accept_per_s", "deliver_per_s", "p50_ms", "p99_ms", "cpu_ms_per_msg", "rss_mb", "pss_mb")
    rows = [(f"The relay against Postfix: {res['messages']:,} messages a workload, median of {res['repeat']} run(s);"
            f" rate limit raised ({res['rate_env']})"), "",
            ("| workload | system | accepted msg/s | delivered msg/s | p50 ms | p99 ms | CPU ms/msg | RSS MB | PSS MB |"
            " lost | duplicates | accepted ÷ Postfix | delivered ÷ Postfix |"),
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    verdicts: list[str] = []
    for w in WORKLOADS:
        for s in res["systems"]:
            med = {k: statistics.median(r[w][s][k] for r in res["runs"]) for k in keys}
            lost = sum(r[w][s]["lost"] for r in res["runs"])
            dup = sum(r[w][s]["duplicates"] for r in res["runs"])
            ratios = ["–", "–"]
            if "postfix" in res["systems"] and s != "postfix":
                for j, k in enumerate(("accept_per_s", "deliver_per_s")):
                    ratio = statistics.median(r[w][s][k] / r[w]["postfix"][k] for r in res["runs"])
                    target = TARGETS.get((s, w))
                    ratios[j] = f"{ratio:.2f}" + (f" ({'PASS' if ratio >= target else 'FAIL'} ≥ {target})" if target else "")
                    if target:
                        verdicts.append(f"{s} {w} {k}: {'PASS' if ratio >= target else 'FAIL'}")
                if s in ("submission", "http"):
                    p99 = statistics.median(r[w][s]["p99_ms"] / r[w]["postfix"]["p99_ms"] for r in res["runs"])
                    verdicts.append(f"{s} {w} p99 ÷ Postfix {p99:.2f}: {'PASS' if p99 <= 1 else 'FAIL'}")
            if s != "sink":
                verdicts.append(f"{s} {w} lost {lost}, duplicates {dup}: {'PASS' if lost == dup == 0 else 'FAIL'}")
            rows.append(f"| {w} | {s} | {med['accept_per_s']:,.0f} | {med['deliver_per_s']:,.0f} | {med['p50_ms']:.1f} |"
                        f" {med['p99_ms']:.1f} | {med['cpu_ms_per_msg']:.2f} | {med['rss_mb']:.0f} | {med['pss_mb']:.0f} |"
                        f" {lost} | {dup} | {ratios[0]} | {ratios[1]} |")
    if res["syncs_per_msg"]:
        rows += ["", "Syncs per message (8-clients, one run under strace -f -c, not in the figures above): "
                 + ", ".join(f"{s} {v:.2f}" for s, v in res["syncs_per_msg"].items())]
    rows += ["", *verdicts]
    return "\n".join(rows)


# -- many tenants --------------------------------------------------------------------------------------------


SCALE_METRICS = {
    "reads": "smtpsettings_outbox_settings_reads_total",
    "opened": "smtpsettings_outbox_connections_opened_total",
    "tokens": "smtpsettings_outbox_token_cache_entries",
}


def outbox_metrics(server: Server) -> dict[str, float]:
    """The dispatcher's counts of what grows with portals, scraped from ``/metrics`` (0 where a family is absent)."""
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
    finally:
        conn.close()
    values = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        values[name] = float(value) if value and not line.startswith("#") else 0.0
    return {key: values.get(name, 0.0) for key, name in SCALE_METRICS.items()}


def scale(args: argparse.Namespace, work: Path, backend: Backend) -> dict[str, Any]:
    from common import populate
    from nexthop import start_sink, stop_sink
    from outbox import SERVER_ENV, Outbox, wake

    log(f"the per-portal rate limit is raised for this bench: {SERVER_ENV}")
    port = free_port()
    data_dir = work / "tenants"
    url = backend.database("bench_tenants", data_dir)
    pop = populate(backend.url_for(data_dir, url), data_dir, args.portals, smtp_host="127.0.0.1", smtp_port=port,
                   enable_auth=False, enable_ssl=False)
    many = Outbox.open(backend.url_for(data_dir, url), args.portals)
    one = Outbox(backend.url_for(data_dir, url), {0: many.portal_ids[0]})
    n = args.portals * args.per_portal
    args.text_bytes, args.html_bytes = 1000, 2000

    def side(server: Server, box: Outbox) -> dict[str, Any]:
        messages = box.build(n, args)
        report = work / "sink-report.json"
        sink = start_sink(port, None, report)
        before = outbox_metrics(server)
        try:
            accepted = box.accept(messages)
            wake(server, pop.creds[0], args)
            box.wait_drained(timeout=600)
        finally:
            stop_sink(sink)
        assert sink.stdout
        opened = int(sink.stdout.read().split()[-1])
        got = Counter(json.loads(report.read_text())["message_ids"])
        lost = sum(1 for m in messages if m.message_id not in got)
        twice = sum(c - 1 for c in got.values() if c > 1)
        seconds = (box.last_sent() - accepted).total_seconds()
        after = outbox_metrics(server)
        return {"per_s": (n + 1) / seconds, "seconds": seconds, "connections": opened, "lost": lost, "duplicates": twice,
                "rss_mb": server.rss_mb(), "settings_reads": after["reads"] - before["reads"],
                "connections_metric": after["opened"] - before["opened"], "token_cache_entries": after["tokens"]}

    runs: list[dict[str, Any]] = []
    try:
        with Server(data_dir, url, extra_env=SERVER_ENV) as server:
            warm = side(server, one)
            rss_one = warm["rss_mb"]
            for rep in range(args.repeat):
                r: dict[str, Any] = {}
                for name in (("many", "one") if rep % 2 == 0 else ("one", "many")):
                    r[name] = side(server, many if name == "many" else one)
                    log(f"run {rep + 1} {name}: {r[name]['per_s']:.0f} msg/s, {r[name]['connections']} connections"
                        f" ({r[name]['connections_metric']:.0f} by the metric), {r[name]['settings_reads']:.0f} settings reads,"
                        f" {r[name]['token_cache_entries']:.0f} cached tokens, RSS {r[name]['rss_mb']:.1f} MB,"
                        f" lost {r[name]['lost']}, twice {r[name]['duplicates']}")
                r["ratio"] = r["many"]["per_s"] / r["one"]["per_s"]
                runs.append(r)
            rss_many = max(r["many"]["rss_mb"] for r in runs)
    finally:
        many.close()
        one.close()
    return {"portals": args.portals, "per_portal": args.per_portal, "runs": runs, "ratio": summary(r["ratio"] for r in runs),
            "rss_one_mb": rss_one, "rss_many_mb": rss_many, "kb_per_portal": (rss_many - rss_one) * 1000 / args.portals}


def scale_table(res: dict[str, Any]) -> str:
    rows = [(f"Many tenants: {res['portals']:,} portals × {res['per_portal']} messages against 1 portal × "
            f"{res['portals'] * res['per_portal']:,} (+1 wake-up), one uncapped sink, median of {len(res['runs'])} run(s)"), "",
            ("| side | delivered msg/s | connections opened at the sink | connections opened (metric) | settings reads"
             " | token-cache entries | lost | duplicates |"), "|---|---|---|---|---|---|---|---|"]
    for name, said in (("many", f"{res['portals']:,} portals"), ("one", "1 portal")):
        runs = res["runs"]
        rows.append(f"| {said} | {statistics.median(r[name]['per_s'] for r in runs):,.0f} |"
                    + "".join(f" {statistics.median(r[name][k] for r in runs):,.0f} |"
                              for k in ("connections", "connections_metric", "settings_reads", "token_cache_entries"))
                    + f" {sum(r[name]['lost'] for r in runs)} | {sum(r[name]['duplicates'] for r in runs)} |")
    ratio = res["ratio"]["median"]
    rows += ["", f"many ÷ one: {ratio:.2f} (target ≥ 0.8: {'PASS' if ratio >= 0.8 else 'FAIL'})",
             (f"worker RSS after 1 portal {res['rss_one_mb']:.1f} MB, after {res['portals']:,} portals {res['rss_many_mb']:.1f} MB:"
             f" {res['kb_per_portal']:.1f} kB per portal")]
    return "\n".join(rows)


def main() -> None:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--messages", type=int, default=2000, help="messages a workload (default 2000)")
    p.add_argument("--repeat", type=int, default=3, help="repetitions, order rotating (default 3)")
    p.add_argument("--no-strace", action="store_true", help="skip the syncs-per-message run")
    p.add_argument("--scale", action="store_true", help="the many-tenants figure instead")
    p.add_argument("--portals", type=int, default=1000)
    p.add_argument("--per-portal", type=int, default=5)
    p.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite")
    p.add_argument("--workdir", type=Path, default=None)
    p.add_argument("--keep", action="store_true")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--sink", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.sink:
        sink_main(args.sink)
        return
    os.sched_setaffinity(0, {int(LOAD_CPU)})
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # so that every process started is stopped
    with Workdir(args.workdir, args.keep) as work, Backend(args.db) as backend:
        work.chmod(0o755)  # Postfix's processes run as the postfix user and read their configuration here
        res = scale(args, work, backend) if args.scale else relay(args, work, backend)
        res["environment"] = environment(backend)
    print(scale_table(res) if args.scale else relay_table(res))
    write_json(args.json, res)


if __name__ == "__main__":
    main()
