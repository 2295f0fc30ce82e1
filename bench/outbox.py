"""The outbox's figures: delivery rate, the 202 under delivery, the claim's cost, the worker's memory.

    python bench/outbox.py [--db sqlite|postgres|both] [--runs 3] [--messages 5000] [--quick]

One ``smtpsettings serve --workers 1`` (server core) per backend, 100 portals whose settings point at
``bench/smtpsink.py`` (aiosmtpd accepting everything, its own process on the load core), the per-portal
rate limit raised out of the way (``SMTPSETTINGS_OUTBOX_MESSAGES_PER_MINUTE``).

(a) **Delivery rate.** ``--messages`` messages, spread evenly over the portals, are accepted into the
    outbox in one transaction by ``store.outbox.enqueue`` (the rows ``POST /messages`` writes, built by the
    service's ``build_message``/``flatten``), then one more is POSTed, which wakes the dispatcher. The clock
    runs from the commit to the last ``sent_at``; the run ends when nothing is queued, sending or deferred.
    Baseline, in the same run, order alternating: ``bench/outbox_bare.py``, a bare aiosmtplib loop pinned to
    the server's core, one connection per portal (all portals at once), sending the same number of messages
    of the same size to the same sink. Also: CPU per message on both sides, and the sink's share of its core
    (near 100 % would mean the sink, not the sender, set the pace).
(b) **The 202 under delivery.** A backlog that lasts the whole measurement is accepted as in (a), then
    ``wrk -c --connections`` POSTs messages (random portal each) for ``--duration`` s after ``--warmup`` s;
    p50/p99 of the 202s and the messages delivered meanwhile. Reference: the same POST load with no backlog.
(c) **The claim's cost**, in-process on the server's core, no server: ``store.outbox.claim_due`` (batch of
    100, a share of 10 per portal, as the dispatcher claims) and then ``release`` of each claimed message, in one write transaction, on databases holding 100
    queued messages, ``--queued`` queued messages, and 100 queued plus ``--queued`` sent ones; interleaved
    cycle by cycle; median microseconds of the claim statement and of the whole transaction (commit
    included), and the plan of the claim (EXPLAIN QUERY PLAN / EXPLAIN).
(d) **Worker memory**: VmRSS and VmHWM of the granian worker from /proc after (a) and (b).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import sqlalchemy as sa
from common import (
    GET_PATH,
    LOAD_CPU,
    SERVER_CPU,
    Backend,
    Server,
    Workdir,
    cpu_seconds,
    environment,
    fmt,
    fmt_range,
    http,
    log,
    measure,
    populate,
    summary,
    write_json,
    wrk,
)
from mailtest import start_sink, stop_proc
from outbox_bare import body_of, one_message

MESSAGES_PATH = "/api/2.0/smtpsettings/messages"
BENCH = Path(__file__).resolve().parent
PENDING = "status IN ('queued', 'deferred', 'sending')"  # the claim index's predicate, so the count uses it
SERVER_ENV = {"SMTPSETTINGS_OUTBOX_MESSAGES_PER_MINUTE": "100000000"}

TARGETS = {
    "ratio": 0.5,  # delivered/s ≥ 0.5 × the bare loop
    "p99_ms": 20.0,  # 202 p99 under delivery
    "claim_ratio": 1.2,  # claim with the big queue ≤ 1.2 × with 100 queued
    "rss_mb": 200.0,
}


# -- helpers -----------------------------------------------------------------------------------------------


def message_body(args: argparse.Namespace) -> dict[str, Any]:
    """What the POSTs send: the same text and HTML as the pre-accepted messages."""
    return {"to": ["user0@example.test"], "subject": "Notification 0", "text": body_of(args.text_bytes, "text"),
            "html": body_of(args.html_bytes, "html")}


class Outbox:
    """The benchmark's own view of a server's database: accepting messages, counting, waiting for delivery."""

    def __init__(self, url: str, portal_ids: dict[int, int]) -> None:
        from smtpsettings.store.database import Database

        self.db = Database(url, timeout=600)
        self.portal_ids = portal_ids

    @classmethod
    def open(cls, url: str, portals: int) -> Outbox:
        from smtpsettings.store.database import Database
        from smtpsettings.store.tables import portals as portal_table

        db = Database(url, timeout=600)
        rows = db.read_sync(lambda c: c.execute(sa.select(portal_table.c.hostname, portal_table.c.id)).all())
        db.dispose()
        by_host = dict(rows)
        return cls(url, {i: by_host[f"p{i:06d}.bench"] for i in range(portals)})

    def build(self, count: int, args: argparse.Namespace) -> list[Any]:
        """``count`` NewMessages spread evenly over the portals, built (untimed) as the service builds them."""
        from smtpsettings.store.outbox import NewMessage

        out = []
        for n in range(count):
            portal = n % len(self.portal_ids)
            b = one_message(portal, n, args.text_bytes, args.html_bytes)
            out.append(NewMessage(
                id=uuid.uuid4().hex, portal_id=self.portal_ids[portal], user_id=None, api_key_id=None, sender=b.sender,
                recipients=(b.to,), content=b.content, smtputf8=b.smtputf8, to=(b.to,), cc=(), subject=b.subject,
                message_id=b.message_id, idempotency_key=None,
            ))
        return out

    def accept(self, messages: list[Any]) -> datetime:
        """Commit ``messages`` in one transaction; returns the moment after the commit."""
        from smtpsettings.store import outbox

        self.db.write_sync(lambda c: [outbox.enqueue(c, m) for m in messages])
        return datetime.now(UTC)

    def count(self, where: str) -> int:
        return int(self.db.read_sync(lambda c: c.execute(sa.text(f"SELECT count(*) FROM outbox_messages WHERE {where}")).scalar_one()))

    def last_sent(self) -> datetime:
        from smtpsettings.store.database import utc
        from smtpsettings.store.tables import outbox_messages as o

        value = self.db.read_sync(lambda c: c.execute(sa.select(sa.func.max(o.c.sent_at))).scalar_one())
        return utc(value)

    def wait_drained(self, timeout: float = 900) -> None:
        deadline = time.monotonic() + timeout
        while self.count(PENDING):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the outbox did not drain within {timeout:.0f} s")
            time.sleep(0.05)

    def close(self) -> None:
        self.db.dispose()


def wake(server: Server, creds: tuple[str, str], args: argparse.Namespace) -> None:
    status, body = http(server, "POST", MESSAGES_PATH, creds[0], creds[1], json.dumps(message_body(args)).encode())
    if status != 202:
        raise RuntimeError(f"POST /messages: HTTP {status} {body}")


def fsync_ms(directory: Path, count: int = 200) -> dict[str, float]:
    """How long the disk under ``directory`` takes to sync a 4 KiB write: every SQLite commit pays one."""
    path = directory / "fsync-probe"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    times = []
    try:
        for _ in range(count):
            os.write(fd, b"x" * 4096)
            t0 = time.perf_counter()
            os.fsync(fd)
            times.append((time.perf_counter() - t0) * 1000)
    finally:
        os.close(fd)
        path.unlink()
    times.sort()
    return {"median": statistics.median(times), "p99": times[int(len(times) * 0.99) - 1]}


def process_cpu(pid: int) -> float:
    try:
        return cpu_seconds(pid)
    except OSError:
        return 0.0


# -- (a) delivery rate -------------------------------------------------------------------------------------


def delivery(server: Server, box: Outbox, creds: tuple[str, str], sink_pid: int, n: int, args: argparse.Namespace) -> dict[str, Any]:
    messages = box.build(n, args)
    sent_before = box.count("status = 'sent'")
    worker = server.worker_pid()
    cpu0, sink0, wall0 = process_cpu(worker), process_cpu(sink_pid), time.perf_counter()
    accepted = box.accept(messages)
    wake(server, creds, args)
    box.wait_drained()
    cpu1, sink1, wall1 = process_cpu(worker), process_cpu(sink_pid), time.perf_counter()
    sent = box.count("status = 'sent'") - sent_before
    failed = box.count("status = 'failed'")
    if sent != n + 1 or failed:
        raise RuntimeError(f"expected {n + 1} messages sent, {sent} were; {failed} failed")
    seconds = (box.last_sent() - accepted).total_seconds()
    return {"messages": sent, "seconds": seconds, "per_s": sent / seconds, "cpu_us_per_msg": (cpu1 - cpu0) / sent * 1e6,
            "sink_cpu_share": (sink1 - sink0) / (wall1 - wall0)}


def bare(sink_port: int, sink_pid: int, n: int, args: argparse.Namespace) -> dict[str, Any]:
    sink0, wall0 = process_cpu(sink_pid), time.perf_counter()
    out = subprocess.run(
        ["taskset", "-c", SERVER_CPU, sys.executable, str(BENCH / "outbox_bare.py"), "--port", str(sink_port),
         "--portals", str(args.portals), "--messages", str(n), "--text-bytes", str(args.text_bytes),
         "--html-bytes", str(args.html_bytes)],
        capture_output=True, text=True, timeout=900, check=True,
    )
    res = json.loads(out.stdout.strip().splitlines()[-1])
    # the sink's share is taken over the whole process life (message building included): a lower bound
    res["sink_cpu_share"] = (process_cpu(sink_pid) - sink0) / (time.perf_counter() - wall0)
    res["per_s"] = res["sent"] / res["seconds"]
    res["cpu_us_per_msg"] = res["cpu_seconds"] / res["sent"] * 1e6
    return res


# -- (b) the 202 under delivery --------------------------------------------------------------------------


def post_latency(server: Server, box: Outbox, creds: list[tuple[str, str]], args: argparse.Namespace, work: Path,
                 rate: float, loaded: bool) -> dict[str, Any]:
    creds_file = work / "creds.txt"
    creds_file.write_text("".join(f"{h} {t}\n" for h, t in creds))
    body_file = work / "message.json"
    body_file.write_text(json.dumps(message_body(args)))
    backlog = 0
    if loaded:
        # enough to keep the dispatcher busy to the end even if the POSTs did not slow it down
        backlog = max(args.messages, math.ceil(rate * (args.warmup + args.duration) * 1.5))
        box.accept(box.build(backlog, args))
        wake(server, creds[0], args)
    kw = {"creds_file": creds_file, "body_file": body_file, "method": "POST", "connections": args.connections}
    if args.warmup > 0:
        wrk(server.url(MESSAGES_PATH), duration=args.warmup, **kw)
    sent0, t0 = box.count("status = 'sent'"), time.perf_counter()
    r = measure(server.url(MESSAGES_PATH), warmup=0, duration=args.duration, server=server, **kw)
    sent1, t1 = box.count("status = 'sent'"), time.perf_counter()
    pending = box.count(PENDING)
    box.wait_drained()
    if loaded and not pending:
        log("WARNING: the backlog ran out before the POST load ended")
    return {**r.as_dict(), "backlog": backlog, "delivered_per_s": (sent1 - sent0) / (t1 - t0), "pending_at_end": pending}


def settings_save(server: Server, creds: list[tuple[str, str]], sink_port: int, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """The reference for (b): ``POST /smtpsettings/smtp`` (one write transaction, one commit) at the same
    connections, no delivery running. Last, because it rewrites every portal's settings."""
    creds_file = work / "creds.txt"
    body_file = work / "settings.json"
    body_file.write_text(json.dumps({"host": "127.0.0.1", "port": sink_port, "senderAddress": "docspace@p000000.bench",
                                     "senderDisplayName": "DocSpace", "enableSSL": False, "enableAuth": False}))
    kw = {"creds_file": creds_file, "body_file": body_file, "method": "POST", "connections": args.connections}
    r = measure(server.url(GET_PATH), warmup=args.warmup, duration=args.duration, server=server, **kw)
    log(f"POST /smtpsettings/smtp: {r.rps:.0f} req/s p50 {r.p50_ms:.2f} ms p99 {r.p99_ms:.2f} ms")
    return r.as_dict()


# -- (c) the claim's cost ---------------------------------------------------------------------------------


def fill(url: str, data_dir: Path, queued: int, sent: int, args: argparse.Namespace) -> None:
    """100 portals; ``queued`` due messages (due over the past hour, oldest first) and ``sent`` finished ones."""
    from smtpsettings.store.database import Database
    from smtpsettings.store.tables import outbox_messages as o

    populate(url, data_dir, args.portals, smtp_host="127.0.0.1", smtp_port=25, enable_auth=False, enable_ssl=False)
    box = Outbox.open(url, args.portals)
    box.close()
    b = one_message(0, 0, args.text_bytes, args.html_bytes)
    now = datetime.now(UTC)
    total = queued + sent
    db = Database(url, timeout=600)

    def row(i: int) -> dict[str, Any]:
        done = i >= queued
        at = now - timedelta(hours=1) + timedelta(seconds=3600 * i / max(total, 1))
        return {
            "id": uuid.uuid4().hex, "portal_id": box.portal_ids[i % args.portals], "user_id": None, "api_key_id": None,
            "status": "sent" if done else "queued", "sender": b.sender, "recipients": json.dumps([b.to]),
            "content": b.content, "smtputf8": False, "to_addresses": json.dumps([b.to]), "cc_addresses": "[]",
            "subject": b.subject, "message_id": f"<{uuid.uuid4().hex}@p000000.bench>", "size": len(b.content),
            "idempotency_key": None, "attempts": 1 if done else 0, "created_at": at, "queued_at": at,
            "next_attempt_at": None if done else at, "sent_at": at if done else None, "finished_at": at if done else None,
            "smtp_reply": "250 2.0.0 OK: queued" if done else None,
        }

    # the sent history first in time, so the queued ones are the newest rows, as in a live outbox
    order = list(range(queued, total)) + list(range(queued))
    for start in range(0, total, 5000):
        chunk = [row(i) for i in order[start : start + 5000]]
        db.write_sync(lambda c, chunk=chunk: c.execute(o.insert(), chunk))
    db.dispose()


def analyze(url: str) -> None:
    """Statistics on the messages: what SQLite never gathers by itself (the server runs no ANALYZE)."""
    from smtpsettings.store.database import Database

    db = Database(url, timeout=600)
    if db.is_sqlite:
        db.write_sync(lambda c: c.exec_driver_sql("ANALYZE"))
    else:
        with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM ANALYZE outbox_messages")
    db.dispose()


def claim_plan(url: str) -> str:
    """The claim statement's plan, as the database would run it now."""
    from smtpsettings.store import outbox
    from smtpsettings.store.database import Database

    db = Database(url, timeout=600)
    try:
        with db.engine.connect() as conn:
            compiled = outbox._CLAIM.compiled(conn.dialect)  # the statement claim_due runs
            now = datetime.now(UTC)
            params = compiled.bind({"now": now, "n": 1000, "full": "[]"})  # the walk of a claim of 100, share 10
            raw = conn.connection.driver_connection
            if db.is_sqlite:
                rows = raw.execute("EXPLAIN QUERY PLAN " + compiled.sql, params).fetchall()
                return "\n".join(f"{r[0]:>3} {r[1]:>3}  {r[3]}" for r in rows)
            rows = raw.execute("EXPLAIN (ANALYZE, BUFFERS, TIMING OFF) " + compiled.sql, params).fetchall()
            raw.rollback()  # EXPLAIN ANALYZE ran the claim: undo it
            return "\n".join(r[0] for r in rows)
    finally:
        db.dispose()


def claim_cost(backend: Backend, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    cases = [("small", 100, 0), ("large", args.queued, 0), ("history", 100, args.queued)]
    urls: dict[str, str] = {}
    for name, queued, sent in cases:
        data_dir = work / f"claim-{backend.kind}-{name}"
        url = backend.url_for(data_dir, backend.database(f"bench_claim_{name}", data_dir))
        started = time.perf_counter()
        fill(url, data_dir, queued, sent, args)
        log(f"{backend.kind} claim database '{name}': {queued:,} queued + {sent:,} sent in {time.perf_counter() - started:.1f} s")
        urls[name] = url
    out: dict[str, Any] = {"queued": args.queued, "cycles": args.claims}
    # First as a server's database is (populate's ANALYZE ran before any message existed), then with statistics.
    for stats in ("as_is", "analyzed"):
        if stats == "analyzed":
            for url in urls.values():
                analyze(url)
        out[stats] = claim_cycles(backend, urls, args, stats)
    return out


def claim_cycles(backend: Backend, urls: dict[str, str], args: argparse.Namespace, stats: str) -> dict[str, Any]:
    from smtpsettings.store import outbox
    from smtpsettings.store.database import Database

    plans = {name: claim_plan(url) for name, url in urls.items()}
    dbs = {name: Database(url, timeout=60) for name, url in urls.items()}
    lease = timedelta(minutes=2)

    def cycle(conn: Any, into: list[float]) -> None:
        t0 = time.perf_counter()
        # As the dispatcher claims with the default settings: a share of 2 connections + 8 per portal.
        claims = outbox.claim_due(conn, "bench", lease, 100, per_portal=10)
        into.append(time.perf_counter() - t0)
        if len(claims) != 100:
            raise RuntimeError(f"claimed {len(claims)}, not 100")
        now = datetime.now(UTC)
        for c in claims:
            outbox.release(conn, c.id, "bench", now)

    runs = []
    os.sched_setaffinity(0, {int(SERVER_CPU)})  # where the server would run it
    try:
        for _ in range(args.runs):
            claim: dict[str, list[float]] = {n: [] for n in dbs}
            txn: dict[str, list[float]] = {n: [] for n in dbs}
            for k in range(args.claim_warmup + args.claims):
                for name, db in (dbs.items() if k % 2 == 0 else reversed(dbs.items())):
                    into: list[float] = []
                    t0 = time.perf_counter()
                    db.write_sync(lambda c, into=into: cycle(c, into))
                    if k >= args.claim_warmup:
                        claim[name].append(into[0])
                        txn[name].append(time.perf_counter() - t0)
            one = {name: {"claim_us": statistics.median(claim[name]) * 1e6, "txn_us": statistics.median(txn[name]) * 1e6} for name in dbs}
            for name in ("large", "history"):
                one[name]["ratio_claim"] = one[name]["claim_us"] / one["small"]["claim_us"]
                one[name]["ratio_txn"] = one[name]["txn_us"] / one["small"]["txn_us"]
            log(f"{backend.kind} claim µs ({stats}): " + ", ".join(f"{n} {v['claim_us']:.0f} (txn {v['txn_us']:.0f})" for n, v in one.items()))
            runs.append(one)
    finally:
        os.sched_setaffinity(0, {int(LOAD_CPU)})
        for db in dbs.values():
            db.dispose()
    out: dict[str, Any] = {"plans": plans, "runs": runs}
    for name in dbs:
        out[name] = {key: summary(r[name][key] for r in runs) for key in runs[0][name]}
    return out


# -- one backend ---------------------------------------------------------------------------------------------


def run(args: argparse.Namespace, backend: Backend, work: Path) -> dict[str, Any]:
    sink, sink_port = start_sink(0.0)
    try:
        data_dir = work / f"outbox-{backend.kind}"
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        fsync = fsync_ms(data_dir)
        log(f"fsync of 4 KiB: median {fsync['median']:.2f} ms, p99 {fsync['p99']:.2f} ms")
        url = backend.database("bench_outbox", data_dir)
        pop = populate(backend.url_for(data_dir, url), data_dir, args.portals, smtp_host="127.0.0.1", smtp_port=sink_port,
                       enable_auth=False, enable_ssl=False)
        box = Outbox.open(backend.url_for(data_dir, url), args.portals)
        try:
            with Server(data_dir, url, extra_env=SERVER_ENV) as server:
                warm = delivery(server, box, pop.creds[0], sink.pid, max(args.messages // 10, args.portals), args)
                log(f"{backend.kind} warm-up delivery: {warm['per_s']:.0f} messages/s")
                runs = []
                for rep in range(args.runs):
                    one: dict[str, Any] = {}
                    for side in (("server", "bare") if rep % 2 == 0 else ("bare", "server")):
                        if side == "server":
                            one["server"] = delivery(server, box, pop.creds[0], sink.pid, args.messages, args)
                        else:
                            one["bare"] = bare(sink_port, sink.pid, args.messages, args)
                    one["ratio"] = one["server"]["per_s"] / one["bare"]["per_s"]
                    one["ratio_cpu"] = one["bare"]["cpu_us_per_msg"] / one["server"]["cpu_us_per_msg"]
                    log(f"{backend.kind} run {rep + 1}: server {one['server']['per_s']:.0f}/s ({one['server']['cpu_us_per_msg']:.0f} µs CPU,"
                        f" sink {one['server']['sink_cpu_share']:.0%}), bare {one['bare']['per_s']:.0f}/s ({one['bare']['cpu_us_per_msg']:.0f} µs,"
                        f" sink {one['bare']['sink_cpu_share']:.0%}), ratio {one['ratio']:.2f}")
                    runs.append(one)
                rss_after_delivery = server.rss_mb()
                rate = statistics.median(r["server"]["per_s"] for r in runs)
                latency = []
                for rep in range(args.runs):
                    one = {}
                    for mode in (("loaded", "idle") if rep % 2 == 0 else ("idle", "loaded")):
                        one[mode] = post_latency(server, box, pop.creds, args, data_dir, rate, mode == "loaded")
                        log(f"{backend.kind} POST /messages {mode}: {one[mode]['rps']:.0f} req/s p50 {one[mode]['p50_ms']:.2f} ms"
                            f" p99 {one[mode]['p99_ms']:.2f} ms, {one[mode]['delivered_per_s']:.0f} delivered/s")
                    latency.append(one)
                rss = {"after_delivery_mb": rss_after_delivery, "end_mb": server.rss_mb(), "peak_mb": server.peak_rss_mb()}
                save = settings_save(server, pop.creds, sink_port, args, data_dir)
        finally:
            box.close()
    finally:
        stop_proc(sink)
    res: dict[str, Any] = {
        "backend": backend.kind,
        "portals": args.portals,
        "messages": args.messages,
        "connections": args.connections,
        "runs": runs,
        "latency": latency,
        "rss": rss,
        "settings_save": save,
        "fsync_ms": fsync,
        "server_per_s": summary(r["server"]["per_s"] for r in runs),
        "bare_per_s": summary(r["bare"]["per_s"] for r in runs),
        "ratio": summary(r["ratio"] for r in runs),
        "server_cpu_us": summary(r["server"]["cpu_us_per_msg"] for r in runs),
        "bare_cpu_us": summary(r["bare"]["cpu_us_per_msg"] for r in runs),
        "ratio_cpu": summary(r["ratio_cpu"] for r in runs),
        "server_sink_share": summary(r["server"]["sink_cpu_share"] for r in runs),
        "bare_sink_share": summary(r["bare"]["sink_cpu_share"] for r in runs),
        "message_bytes": runs[0]["bare"]["message_bytes"],
    }
    for mode in ("loaded", "idle"):
        for key in ("p50_ms", "p99_ms", "max_ms", "rps", "delivered_per_s", "cpu_us_per_req"):
            res[f"{mode}_{key}"] = summary(r[mode][key] for r in latency)
        res[f"{mode}_non2xx"] = sum(r[mode]["non2xx"] + r[mode]["errors"] for r in latency)
    res["claim"] = claim_cost(backend, work, args)
    return res


# -- output ------------------------------------------------------------------------------------------------


def targets(results: list[dict[str, Any]]) -> list[tuple[str, str, str, str, bool]]:
    """(what, backend, measured, target, met) for each target of the issue."""
    out = []
    for r in results:
        b = r["backend"]
        ratio = r["ratio"]["median"]
        out.append(("delivered/s ÷ bare aiosmtplib loop", b, fmt(ratio, "", 2), f"≥ {TARGETS['ratio']}", ratio >= TARGETS["ratio"]))
        p99 = r["loaded_p99_ms"]["median"]
        out.append((f"p99 of the 202 under delivery ({r['connections']} connections)", b, fmt(p99, " ms", 2), f"< {TARGETS['p99_ms']:g} ms", p99 < TARGETS["p99_ms"]))
        c = r["claim"]["as_is"]["large"]["ratio_claim"]["median"]
        out.append((f"claim with {r['claim']['queued']:,} queued ÷ with 100 (no ANALYZE, as a server runs)", b, fmt(c, "×", 2),
                    f"≤ {TARGETS['claim_ratio']}×", c <= TARGETS["claim_ratio"]))
        rss = max(r["rss"]["after_delivery_mb"], r["rss"]["end_mb"])
        out.append(("worker RSS after delivery (VmRSS)", b, fmt(rss, " MB"), f"< {TARGETS['rss_mb']:g} MB", rss < TARGETS["rss_mb"]))
    return out


def claim_rows(c: dict[str, Any]) -> list[str]:
    rows = []
    for stats, said in (("as_is", "no ANALYZE since the messages came (as a server runs)"), ("analyzed", "after ANALYZE")):
        s = c[stats]
        rows += [
            f"| claim (100) µs, {c['queued']:,} queued, {said} | {fmt_range(s['large']['claim_us'], digits=0)} | 100 queued: {fmt_range(s['small']['claim_us'], digits=0)} | {fmt_range(s['large']['ratio_claim'], digits=2)} |",
            f"| claim (100) µs, 100 queued + {c['queued']:,} sent, {said} | {fmt_range(s['history']['claim_us'], digits=0)} | 100 queued: {fmt_range(s['small']['claim_us'], digits=0)} | {fmt_range(s['history']['ratio_claim'], digits=2)} |",
            f"| claim + 100 releases + commit µs, {c['queued']:,} queued, {said} | {fmt_range(s['large']['txn_us'], digits=0)} | 100 queued: {fmt_range(s['small']['txn_us'], digits=0)} | {fmt_range(s['large']['ratio_txn'], digits=2)} |",
        ]
    return rows


def table(results: list[dict[str, Any]], runs: int) -> str:
    lines = []
    for r in results:
        c = r["claim"]
        lines += [
            (f"Outbox ({r['backend']}, {r['portals']} portals, {r['messages']:,} messages of {r['message_bytes']:,} bytes a run):"
             f" median (min–max) of {runs} runs"),
            "",
            "| measure | smtpsettings | baseline | ratio |",
            "|---|---|---|---|",
            f"| messages delivered per second | {fmt_range(r['server_per_s'], digits=0)} | bare aiosmtplib loop: {fmt_range(r['bare_per_s'], digits=0)} | {fmt_range(r['ratio'], digits=2)} |",
            f"| CPU per message, µs (server's core) | {fmt_range(r['server_cpu_us'], digits=0)} | {fmt_range(r['bare_cpu_us'], digits=0)} | {fmt_range(r['ratio_cpu'], digits=2)} (bare ÷ server) |",
            f"| the sink's share of its core | {fmt_range(r['server_sink_share'], digits=2)} | {fmt_range(r['bare_sink_share'], digits=2)} | |",
            f"| POST /messages p99 ms, {r['connections']} connections | under delivery: {fmt_range(r['loaded_p99_ms'], digits=2)} | no backlog: {fmt_range(r['idle_p99_ms'], digits=2)} | |",
            f"| POST /messages p50 ms | {fmt_range(r['loaded_p50_ms'], digits=2)} | {fmt_range(r['idle_p50_ms'], digits=2)} | |",
            f"| reference: POST /smtpsettings/smtp (a settings save, one commit, no delivery), {r['connections']} connections | p50 {fmt(r['settings_save']['p50_ms'], ' ms', 2)}, p99 {fmt(r['settings_save']['p99_ms'], ' ms', 2)}, {fmt(r['settings_save']['rps'], ' req/s', 0)} | | |",
            f"| POST /messages req/s | {fmt_range(r['loaded_rps'], digits=0)} | {fmt_range(r['idle_rps'], digits=0)} | |",
            f"| messages delivered per second during the POSTs | {fmt_range(r['loaded_delivered_per_s'], digits=0)} | {fmt_range(r['idle_delivered_per_s'], digits=0)} | |",
            *claim_rows(c),
            f"| worker RSS MB after delivery / at the end / peak (VmHWM) | {fmt(r['rss']['after_delivery_mb'])} / {fmt(r['rss']['end_mb'])} / {fmt(r['rss']['peak_mb'])} | | |",
            "",
            (f"Non-2xx answers or socket errors to the POSTs: {r['loaded_non2xx']} under delivery, {r['idle_non2xx']} without."
            f" The disk's fsync of 4 KiB at the start: median {r['fsync_ms']['median']:.2f} ms, p99 {r['fsync_ms']['p99']:.2f} ms."),
            "",
            f"Plan of the claim ({r['backend']}, {c['queued']:,} queued), as the server's database is:",
            "",
            "```",
            c["as_is"]["plans"]["large"],
            "```",
            "",
            "and after ANALYZE:",
            "",
            "```",
            c["analyzed"]["plans"]["large"],
            "```",
            "",
        ]
    lines += ["| target | backend | measured | target | result |", "|---|---|---|---|---|"]
    lines += [f"| {what} | {b} | {m} | {t} | {'PASS' if ok else 'FAIL'} |" for what, b, m, t, ok in targets(results)]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--db", choices=("sqlite", "postgres", "both"), default="both")
    p.add_argument("--runs", type=int, default=3, help="repetitions; figures are medians (default 3)")
    p.add_argument("--portals", type=int, default=100)
    p.add_argument("--messages", type=int, default=5000, help="messages per delivery run (default 5000)")
    p.add_argument("--text-bytes", type=int, default=1000, help="characters of the text part (default 1000)")
    p.add_argument("--html-bytes", type=int, default=2000, help="characters of the HTML part (default 2000)")
    p.add_argument("--connections", type=int, default=8, help="wrk connections of the POST load (default 8)")
    p.add_argument("--duration", type=float, default=6.0, help="seconds of POST load measured (default 6)")
    p.add_argument("--warmup", type=float, default=2.0, help="seconds of discarded POST load first (default 2)")
    p.add_argument("--queued", type=int, default=100_000, help="the large queue of the claim figure (default 100000)")
    p.add_argument("--claims", type=int, default=200, help="claim cycles measured per database and run (default 200)")
    p.add_argument("--claim-warmup", type=int, default=20)
    p.add_argument("--quick", action="store_true", help="a smoke run: 1 run, 500 messages, 10,000 queued, short loads")
    p.add_argument("--workdir", type=Path, default=None)
    p.add_argument("--keep", action="store_true")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    if args.quick:
        args.runs, args.messages, args.queued, args.claims, args.claim_warmup = 1, 500, 10_000, 30, 5
        args.duration, args.warmup = 2.0, 1.0
    os.sched_setaffinity(0, {int(LOAD_CPU)})
    started = time.perf_counter()
    results = []
    kinds = ("sqlite", "postgres") if args.db == "both" else (args.db,)
    with Workdir(args.workdir, args.keep) as work:
        env: dict[str, Any] = {}
        for kind in kinds:
            with Backend(kind) as backend:
                results.append(run(args, backend, work))
                env = environment(backend) | env
    env["minutes"] = round((time.perf_counter() - started) / 60, 1)
    env["command"] = " ".join(["python bench/outbox.py", *sys.argv[1:]])
    print(f"Run of {env['date']}: {env['cpu']} ({env['cores']} cores), Linux {env['kernel']}; server on CPU {SERVER_CPU},"
          f" load on CPU {LOAD_CPU}; {env['minutes']} min.\n")
    print(table(results, args.runs))
    write_json(args.json, {"results": results, "environment": env, "targets": targets(results)})


if __name__ == "__main__":
    main()
