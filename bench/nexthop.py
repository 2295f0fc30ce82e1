"""Connections per next hop: many portals sending through one upstream that limits connections.

    python bench/nexthop.py [--runs 3] [--portals 1000] [--per-portal 5] [--cap 50] [--db sqlite|postgres]

Drives the real service: one ``smtpsettings serve --workers 1`` (server core) whose ``--portals`` portals
(made by ``populate``) all have settings pointing at one ``bench/smtpsink.py`` on the load core: the
normal case of a hosting operator's smarthost, or smtp.office365.com for every Microsoft 365 tenant.
The per-portal rate limit is raised out of the way; every other setting is the default
(``SMTPSETTINGS_OUTBOX_CONNECTIONS_PER_HOST`` 20 among them).

Each side of a run puts ``--portals`` × ``--per-portal`` messages (the outbox figure's messages, spread
evenly) into the outbox in one transaction, POSTs one more to wake the dispatcher, and times from the
commit to the last ``sent_at`` once nothing is pending. Sides, order alternating within each run:

* **capped**: the sink answers 421 to every connection beyond ``--cap`` open at once (Postfix's client
  connection limit, 50 by default) and hangs up;
* **uncapped**: the same sink, no limit.

The sink is started afresh for each side on the same port and reports the Message-ID of every message it
accepted: each side must have delivered every message exactly once (no Message-ID missing or twice), and
the outbox must show them all sent, none failed. Reported: messages/s of each side, the ratio capped ÷
uncapped within each run (the target: ≥ 0.8), connections refused and the most open at once.
``--unlimited`` adds a third side, uncapped, from a server with ``SMTPSETTINGS_OUTBOX_CONNECTIONS_PER_HOST``
raised out of the way (each portal then opens its own connections, as before the limit existed): what the
limit costs when the upstream has none.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    LOAD_CPU,
    Backend,
    Server,
    base_parser,
    fmt_range,
    free_port,
    log,
    populate,
    run_figure,
    summary,
)
from outbox import SERVER_ENV, Outbox, wake

BENCH = Path(__file__).resolve().parent
TARGET_RATIO = 0.8
UNLIMITED_ENV = {**SERVER_ENV, "SMTPSETTINGS_OUTBOX_CONNECTIONS_PER_HOST": "10000"}


def start_sink(port: int, cap: int | None, report: Path) -> subprocess.Popen[str]:
    command = ["taskset", "-c", LOAD_CPU, sys.executable, str(BENCH / "smtpsink.py"), "--port", str(port),
               "--report", str(report), "--watch-stdin"]
    if cap is not None:
        command += ["--max-connections", str(cap)]
    proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    if not proc.stdout.readline().startswith("READY"):
        raise RuntimeError("SMTP sink did not start")
    return proc


def stop_sink(proc: subprocess.Popen[str]) -> None:
    assert proc.stdin is not None
    proc.stdin.close()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
        raise RuntimeError("the SMTP sink did not stop") from None


def side(server: Server, box: Outbox, creds: tuple[str, str], port: int, cap: int | None, work: Path,
         args: argparse.Namespace) -> dict[str, Any]:
    """One drain of ``portals × per_portal`` messages (+ the wake-up) through a fresh sink; checked message by message."""
    n = args.portals * args.per_portal
    messages = box.build(n, args)
    expected = {m.message_id for m in messages}
    report = work / "sink-report.json"
    report.unlink(missing_ok=True)
    sent_before = box.count("status = 'sent'")
    sink = start_sink(port, cap, report)
    try:
        accepted = box.accept(messages)
        wake(server, creds, args)
        box.wait_drained(timeout=args.timeout)
    finally:
        stop_sink(sink)
    seconds = (box.last_sent() - accepted).total_seconds()
    got = json.loads(report.read_text())
    seen = Counter(got["message_ids"])
    twice = sum(1 for count in seen.values() if count > 1)
    missing = len(expected - seen.keys())
    sent = box.count("status = 'sent'") - sent_before
    failed = box.count("status = 'failed'")
    if missing or twice or len(got["message_ids"]) != n + 1 or sent != n + 1 or failed:
        raise RuntimeError(f"{n + 1} messages expected once each: the sink got {len(got['message_ids'])}, {missing} missing,"
                           f" {twice} twice; the outbox shows {sent} sent, {failed} failed")
    return {"per_s": (n + 1) / seconds, "seconds": seconds, "refused": got["refused"],
            "most_connected": got["most_connected"], "delivered": len(got["message_ids"])}


def run(args: argparse.Namespace, backend: Backend, work: Path) -> dict[str, Any]:
    port = free_port()
    data_dir = work / f"nexthop-{backend.kind}"
    url = backend.database("bench_nexthop", data_dir)
    pop = populate(backend.url_for(data_dir, url), data_dir, args.portals, smtp_host="127.0.0.1", smtp_port=port,
                   enable_auth=False, enable_ssl=False)
    box = Outbox.open(backend.url_for(data_dir, url), args.portals)
    runs: list[dict[str, Any]] = []
    try:
        env = SERVER_ENV if args.per_host is None else {**SERVER_ENV, "SMTPSETTINGS_OUTBOX_CONNECTIONS_PER_HOST": str(args.per_host)}
        with Server(data_dir, url, extra_env=env) as server:
            warm = side(server, box, pop.creds[0], port, None, data_dir, args)
            log(f"warm-up, uncapped: {warm['per_s']:.0f} messages/s")
            for rep in range(args.runs):
                one: dict[str, Any] = {}
                for name in (("capped", "uncapped") if rep % 2 == 0 else ("uncapped", "capped")):
                    one[name] = side(server, box, pop.creds[0], port, args.cap if name == "capped" else None, data_dir, args)
                    log(f"run {rep + 1} {name}: {one[name]['per_s']:.0f} messages/s in {one[name]['seconds']:.1f} s,"
                        f" {one[name]['refused']} connections refused, at most {one[name]['most_connected']} open")
                one["ratio"] = one["capped"]["per_s"] / one["uncapped"]["per_s"]
                log(f"run {rep + 1}: capped ÷ uncapped {one['ratio']:.2f}")
                runs.append(one)
        if args.unlimited:
            with Server(data_dir, url, extra_env=UNLIMITED_ENV) as server:
                for rep in range(args.runs):
                    runs[rep]["unlimited"] = side(server, box, pop.creds[0], port, None, data_dir, args)
                    runs[rep]["ratio_unlimited"] = runs[rep]["uncapped"]["per_s"] / runs[rep]["unlimited"]["per_s"]
                    log(f"run {rep + 1} no per-host limit, uncapped: {runs[rep]['unlimited']['per_s']:.0f} messages/s,"
                        f" at most {runs[rep]['unlimited']['most_connected']} open")
    finally:
        box.close()
    res: dict[str, Any] = {"backend": backend.kind, "portals": args.portals, "per_portal": args.per_portal, "cap": args.cap,
                           "per_host": args.per_host or 20,
                           "runs": runs, "ratio": summary(r["ratio"] for r in runs)}
    for name in ("capped", "uncapped", "unlimited"):
        if name in runs[0]:
            res[name] = {k: summary(r[name][k] for r in runs) for k in ("per_s", "seconds", "refused", "most_connected")}
    if args.unlimited:
        res["ratio_unlimited"] = summary(r["ratio_unlimited"] for r in runs)
    return res


def table(res: dict[str, Any]) -> str:
    n = res["portals"] * res["per_portal"] + 1
    rows = [
        (f"Connections per next hop ({res['backend']}, {res['portals']:,} portals × {res['per_portal']} messages + 1, one upstream,"
         f" SMTPSETTINGS_OUTBOX_CONNECTIONS_PER_HOST={res['per_host']}):"
         f" median (min–max) of {len(res['runs'])} runs, every message delivered exactly once ({n:,} Message-IDs checked a side)"),
        "",
        "| side | messages/s | seconds | connections refused | most open at once |",
        "|---|---|---|---|---|",
    ]
    names = {"capped": f"upstream answers 421 beyond {res['cap']} connections",
             "uncapped": "same upstream, no limit",
             "unlimited": "same upstream, no limit; no per-host limit in the service (as before)"}
    for name, said in names.items():
        if name in res:
            k = res[name]
            rows.append(f"| {said} | {fmt_range(k['per_s'], digits=0)} | {fmt_range(k['seconds'], digits=1)} "
                        f"| {fmt_range(k['refused'], digits=0)} | {fmt_range(k['most_connected'], digits=0)} |")
    ratio = res["ratio"]["median"]
    verdict = "PASS" if ratio >= TARGET_RATIO else "FAIL"
    rows += ["", f"capped ÷ uncapped: {fmt_range(res['ratio'], digits=2)} (target ≥ {TARGET_RATIO}: {verdict})"]
    if "ratio_unlimited" in res:
        rows.append(f"uncapped with the limit ÷ without it: {fmt_range(res['ratio_unlimited'], digits=2)}")
    return "\n".join(rows)


def main() -> None:
    p = base_parser(__doc__ or "")
    p.add_argument("--portals", type=int, default=1000)
    p.add_argument("--per-portal", type=int, default=5, help="messages per portal a side (default 5)")
    p.add_argument("--cap", type=int, default=50, help="connections the capped upstream allows (default 50)")
    p.add_argument("--text-bytes", type=int, default=1000)
    p.add_argument("--html-bytes", type=int, default=2000)
    p.add_argument("--timeout", type=float, default=600, help="seconds a side may take before the run fails")
    p.add_argument("--per-host", type=int, default=None,
                   help="the server's SMTPSETTINGS_OUTBOX_CONNECTIONS_PER_HOST (default: its default, 20)")
    p.add_argument("--unlimited", action="store_true", help="also a side without the service's per-host limit")
    run_figure(p.parse_args(), run, table)


if __name__ == "__main__":
    main()
