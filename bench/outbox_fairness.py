"""Tenant isolation in the dispatcher: healthy portals' latency beside a tarpit portal and a 421 portal.

    python bench/outbox_fairness.py [--db sqlite|postgres|both] [--bad 1000] [--healthy 100] [--horizon 120]

One ``smtpsettings serve --workers 1`` per backend, seven portals: five whose settings point at
``bench/smtpsink.py`` (accepting everything), one at a sink run with ``--answer silent`` (accepts TCP, never
greets: a tarpit) and one at a sink run with ``--answer 421``. Production timeouts and back-off (connect
10 s, greeting 30 s, first back-off 30 s); the retry horizon shortened to ``--horizon`` so the run ends.

1. **Baseline**: ``--healthy`` messages for each healthy portal, POSTed (one thread per portal); latency is
   ``sent_at - created_at`` of each.
2. **Beside the bad portals**: ``--bad`` messages each for the tarpit and the 421 portal, accepted in one
   transaction (the backlog is older than every healthy message), then the healthy POSTs of step 1 again.
   The same latencies, and the check: the largest is at most 2 s above step 1's largest.
3. **The bad portals**: the connections each bad server saw, per minute of the run, and the run's end: the
   time until every bad message has failed (the horizon and the probe after it).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import sqlalchemy as sa
from common import LOAD_CPU, Backend, Server, Workdir, free_port, http, log, populate, write_json
from outbox import MESSAGES_PATH, Outbox, message_body

BENCH = Path(__file__).resolve().parent
SETTINGS_PATH = "/api/2.0/smtpsettings/smtp"
HEALTHY_PORTALS = 5


def start_peer(answer: str) -> tuple[subprocess.Popen[str], int]:
    port = free_port()
    proc = subprocess.Popen(
        ["taskset", "-c", LOAD_CPU, sys.executable, str(BENCH / "smtpsink.py"), "--port", str(port), "--answer", answer,
         "--watch-stdin"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    assert proc.stdout is not None
    if not proc.stdout.readline().startswith("READY"):
        raise RuntimeError(f"the {answer} peer did not start")
    return proc, port


def stop_peer(proc: subprocess.Popen[str]) -> int:
    """Stops the peer; the connections it accepted."""
    out, _ = proc.communicate(input="", timeout=10)
    return next((int(line.split()[1]) for line in out.splitlines() if line.startswith("connections ")), -1)


def point_at(server: Server, creds: tuple[str, str], port: int) -> None:
    body = {"host": "127.0.0.1", "port": port, "senderAddress": f"docspace@{creds[0]}", "senderDisplayName": "DocSpace",
            "enableSSL": False, "enableAuth": False}
    status, answer = http(server, "POST", SETTINGS_PATH, creds[0], creds[1], json.dumps(body).encode())
    if status != 200:
        raise RuntimeError(f"saving the settings: HTTP {status} {answer}")


def post_each(server: Server, creds: list[tuple[str, str]], count: int, args: argparse.Namespace) -> None:
    body = json.dumps(message_body(args)).encode()

    def run(c: tuple[str, str]) -> None:
        for _ in range(count):
            status, answer = http(server, "POST", MESSAGES_PATH, c[0], c[1], body)
            if status != 202:
                raise RuntimeError(f"POST /messages: HTTP {status} {answer}")

    with ThreadPoolExecutor(len(creds)) as pool:
        list(pool.map(run, creds))


def latencies(box: Outbox, portal_ids: list[int], since: Any) -> list[float]:
    from smtpsettings.store.database import utc
    from smtpsettings.store.tables import outbox_messages as o

    rows = box.db.read_sync(
        lambda c: c.execute(
            sa.select(o.c.created_at, o.c.sent_at).where(o.c.portal_id.in_(portal_ids), o.c.created_at >= since)
        ).all()
    )
    if any(sent is None for _, sent in rows):
        raise RuntimeError("a healthy message was not sent")
    return sorted((utc(sent) - utc(created)).total_seconds() for created, sent in rows)


def wait_for(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not within {timeout:.0f} s")
        time.sleep(0.1)


def shape(values: list[float]) -> dict[str, float]:
    return {"p50": statistics.median(values), "p99": values[max(0, int(len(values) * 0.99) - 1)], "max": values[-1]}


def run(args: argparse.Namespace, backend: Backend, work: Path) -> dict[str, Any]:
    from smtpsettings.store.database import utcnow

    sink, sink_port = start_peer("accept")
    tarpit, tarpit_port = start_peer("silent")
    closing, closing_port = start_peer("421")
    peers_stopped = False
    try:
        data_dir = work / f"fairness-{backend.kind}"
        url = backend.database("bench_fairness", data_dir)
        pop = populate(backend.url_for(data_dir, url), data_dir, HEALTHY_PORTALS + 2, smtp_host="127.0.0.1",
                       smtp_port=sink_port, enable_auth=False, enable_ssl=False)
        healthy, bad = pop.creds[:HEALTHY_PORTALS], pop.creds[HEALTHY_PORTALS:]
        everyone = Outbox.open(backend.url_for(data_dir, url), HEALTHY_PORTALS + 2)
        ids = [everyone.portal_ids[i] for i in range(HEALTHY_PORTALS + 2)]
        env = {"SMTPSETTINGS_OUTBOX_MESSAGES_PER_MINUTE": "100000000",
               "SMTPSETTINGS_OUTBOX_RETRY_HORIZON_SECONDS": str(args.horizon)}
        try:
            with Server(data_dir, url, extra_env=env) as server:
                point_at(server, bad[0], tarpit_port)
                point_at(server, bad[1], closing_port)
                healthy_ids = ids[:HEALTHY_PORTALS]
                healthy_total = lambda: everyone.count(  # noqa: E731
                    f"status = 'sent' AND portal_id IN ({','.join(map(str, healthy_ids))})"
                )

                since = utcnow()
                post_each(server, healthy, args.healthy, args)
                wait_for(lambda: healthy_total() == HEALTHY_PORTALS * args.healthy, 120, "baseline delivery")
                alone = latencies(everyone, healthy_ids, since)
                log(f"{backend.kind} alone: p50 {statistics.median(alone):.3f} s, max {alone[-1]:.3f} s")

                started = time.monotonic()
                for portal_id in ids[HEALTHY_PORTALS:]:
                    one = Outbox(everyone.db.engine.url.render_as_string(hide_password=False), {0: portal_id})
                    one.accept(one.build(args.bad, args))
                    one.close()
                since = utcnow()
                post_each(server, healthy, args.healthy, args)
                wait_for(lambda: healthy_total() == 2 * HEALTHY_PORTALS * args.healthy, 300, "delivery beside the bad portals")
                beside = latencies(everyone, healthy_ids, since)
                log(f"{backend.kind} beside: p50 {statistics.median(beside):.3f} s, max {beside[-1]:.3f} s")

                bad_ids = ",".join(map(str, ids[HEALTHY_PORTALS:]))
                wait_for(lambda: everyone.count(f"status = 'failed' AND portal_id IN ({bad_ids})") == 2 * args.bad,
                         args.horizon + 600, "every bad message failed")
                ended = time.monotonic() - started
                sent_bad = everyone.count(f"status = 'sent' AND portal_id IN ({bad_ids})")
                log_text = server.log_path.read_text() if server.log_path else ""
        finally:
            everyone.close()
        connections = {"tarpit": stop_peer(tarpit), "421": stop_peer(closing)}
        peers_stopped = True
        minutes = ended / 60
        result = {
            "alone": shape(alone),
            "beside": shape(beside),
            "within_2s": beside[-1] <= alone[-1] + 2,
            "bad_failed_after_s": ended,
            "bad_sent": sent_bad,
            "connections": connections,
            "connections_per_minute": {k: v / minutes for k, v in connections.items()},
            "unavailable_log_lines": log_text.count('"outbox_destination_unavailable"'),
        }
        log(f"{backend.kind}: {json.dumps(result)}")
        return result
    finally:
        if not peers_stopped:
            for proc in (tarpit, closing):
                stop_peer(proc)
        stop_peer(sink)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--db", choices=("sqlite", "postgres", "both"), default="both")
    p.add_argument("--bad", type=int, default=1000, help="messages for each bad portal (default 1000)")
    p.add_argument("--healthy", type=int, default=100, help="messages for each healthy portal (default 100)")
    p.add_argument("--horizon", type=int, default=120, help="the retry horizon, seconds (default 120)")
    p.add_argument("--text-bytes", type=int, default=1000)
    p.add_argument("--html-bytes", type=int, default=2000)
    p.add_argument("--workdir", type=Path, default=None)
    p.add_argument("--keep", action="store_true")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    kinds = ("sqlite", "postgres") if args.db == "both" else (args.db,)
    out: dict[str, Any] = {"args": {k: str(v) for k, v in vars(args).items()}}
    with Workdir(args.workdir, args.keep) as work:
        for kind in kinds:
            with Backend(kind) as backend:
                out[kind] = run(args, backend, work)
    write_json(args.json, out)
    print(json.dumps(out, indent=2, default=str))


if __name__ == "__main__":
    main()
