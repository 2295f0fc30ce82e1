"""Connection exhaustion: authenticated GETs while thousands of connections send nothing or headers byte by byte.

    python bench/connections.py [--idle 2000] [--slow 2000] [--duration 30] [--trickle 2] [--env K=V ...]

One server worker (``smtpsettings serve --workers 1``, default settings unless ``--env`` says otherwise) on
one core. On the other core an attacker process holds ``--idle`` connections that send nothing and
``--slow`` connections that send a request line and then one header byte every ``--trickle`` seconds; each
one the server closes is opened again at once, as an attacker would. Meanwhile this process sends
authenticated ``GET /api/2.0/smtpsettings/smtp``, each on a new connection (a new client: a kept-alive
connection opened before the attack would say nothing about the cap), ``--rate`` a second with a
``--timeout`` second bound. First the same GETs without the attack (the normal latency), then with it.
Reported: GETs answered and failed, p50/p99/max, the attack's connections established (lowest during the
run) and how many of them the server closed, and the worker's open files and resident memory. One run:
``--db`` applies, ``--runs``, ``--warmup`` and ``--connections`` (wrk's) do not.
"""

from __future__ import annotations

import errno
from http.client import HTTPConnection
import multiprocessing
import multiprocessing.connection
import os
import resource
import selectors
import socket
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import GET_PATH, LOAD_CPU, Backend, Server, base_parser, check_call, fmt, http, log, populate, run_figure  # noqa: E402

SLOW_HEAD = b"GET /api/2.0/smtpsettings/smtp HTTP/1.1\r\nHost: attacker.bench\r\nX-Pad: "


def _raise_nofile(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(needed, hard), hard))
    if resource.getrlimit(resource.RLIMIT_NOFILE)[0] < needed:
        raise RuntimeError(f"the open-file limit ({hard}) is below the {needed} this run needs (ulimit -n)")


class Attacker:
    """Holds ``idle`` silent and ``slow`` trickling connections to a port, reopening each one that closes.

    One selector loop, non-blocking connects (when the server's accept queue is full a blocking connect
    would stall the loop on SYN retries). ``stats()`` is sent over ``pipe`` every 0.2 s.
    """

    def __init__(self, port: int, idle: int, slow: int, trickle: float) -> None:
        self.port, self.want, self.trickle = port, {"idle": idle, "slow": slow}, trickle
        self.sel = selectors.DefaultSelector()
        self.kind: dict[socket.socket, str] = {}
        self.established: dict[socket.socket, bool] = {}
        self.slow_ring: list[socket.socket] = []
        self.closed_by_server = 0

    def open(self, kind: str) -> None:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        err = s.connect_ex(("127.0.0.1", self.port))
        if err not in (0, errno.EINPROGRESS):
            s.close()
            return
        self.kind[s], self.established[s] = kind, False
        self.sel.register(s, selectors.EVENT_WRITE)

    def drop(self, s: socket.socket) -> None:
        self.sel.unregister(s)
        kind = self.kind.pop(s)
        if self.established.pop(s):
            self.closed_by_server += 1
        if s in self.slow_ring:
            self.slow_ring.remove(s)
        s.close()
        self.open(kind)

    def stats(self) -> dict[str, int]:
        counts = {f"{k}_{state}": 0 for k in ("idle", "slow") for state in ("open", "pending")}
        for s, kind in self.kind.items():
            counts[f"{kind}_{'open' if self.established[s] else 'pending'}"] += 1
        counts["closed_by_server"] = self.closed_by_server
        return counts

    def run(self, pipe: multiprocessing.connection.Connection) -> None:
        for kind, n in self.want.items():
            for _ in range(n):
                self.open(kind)
        next_report, sent_at, ring_pos = 0.0, time.monotonic(), 0
        while not pipe.poll():
            for key, _ in self.sel.select(0.02):
                s = key.fileobj
                assert isinstance(s, socket.socket)
                if not self.established[s]:
                    if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                        self.drop(s)
                        continue
                    self.established[s] = True
                    self.sel.modify(s, selectors.EVENT_READ)
                    if self.kind[s] == "slow":
                        try:
                            s.send(SLOW_HEAD)
                        except OSError:
                            self.drop(s)
                            continue
                        self.slow_ring.append(s)
                    continue
                try:
                    data = s.recv(4096)
                except OSError:
                    data = b""
                if not data:  # closed by the server (an answer, e.g. 408, is drained on the next pass)
                    self.drop(s)
            # one header byte to each slow connection every `trickle` seconds, spread evenly over that time
            now = time.monotonic()
            due = int(len(self.slow_ring) * (now - sent_at) / self.trickle)
            if due:
                sent_at = now
                for _ in range(min(due, len(self.slow_ring))):
                    ring_pos %= len(self.slow_ring)
                    s = self.slow_ring[ring_pos]
                    ring_pos += 1
                    try:
                        s.send(b"a")
                    except OSError:
                        self.drop(s)
            if now >= next_report:
                pipe.send(self.stats())
                next_report = now + 0.2
        for s in list(self.kind):
            s.close()


def _attack(port: int, idle: int, slow: int, trickle: float, pipe: multiprocessing.connection.Connection) -> None:
    os.sched_setaffinity(0, {int(LOAD_CPU)})
    _raise_nofile(idle + slow + 100)
    Attacker(port, idle, slow, trickle).run(pipe)


def get_once(port: int, host: str, token: str, timeout: float) -> float | None:
    """Milliseconds for one authenticated GET on a new connection, or None when it failed or timed out."""
    started = time.perf_counter()
    conn = HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", GET_PATH, headers={"Host": host, "Cookie": f"asc_auth_key={token}"})
        resp = conn.getresponse()
        resp.read()
        if resp.status != 200:
            return None
    except OSError:
        return None
    finally:
        conn.close()
    return (time.perf_counter() - started) * 1000


def probe(server: Server, host: str, token: str, args: Any, attack: multiprocessing.connection.Connection | None) -> dict[str, Any]:
    """``--rate`` GETs a second for ``--duration`` seconds; the attack's lowest counts while they ran."""
    latencies: list[float] = []
    failed = 0
    lowest: dict[str, int] = {}
    last: dict[str, int] = {}
    fds, rss = 0, 0.0
    started = time.monotonic()
    while time.monotonic() - started < args.duration:
        tick = time.monotonic()
        ms = get_once(server.port, host, token, args.timeout)
        if ms is None:
            failed += 1
        else:
            latencies.append(ms)
        while attack is not None and attack.poll():
            last = attack.recv()
            lowest = {k: min(v, lowest.get(k, v)) for k, v in last.items()}
        pid = server.worker_pid()
        fds = max(fds, len(os.listdir(f"/proc/{pid}/fd")))
        rss = max(rss, server.rss_mb() or 0.0)
        time.sleep(max(0.0, 1 / args.rate - (time.monotonic() - tick)))
    latencies.sort()
    return {
        "answered": len(latencies),
        "failed": failed,
        "p50_ms": statistics.median(latencies) if latencies else None,
        "p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] if latencies else None,
        "max_ms": latencies[-1] if latencies else None,
        "attack_lowest": lowest,
        "attack_last": last,
        "worker_open_files_max": fds,
        "worker_rss_mb_max": round(rss, 1),
    }


def run(args: Any, backend: Backend, work: Path) -> dict[str, Any]:
    data_dir = work / f"connections-{backend.kind}"
    url = backend.database("bench_connections", data_dir)
    pop = populate(backend.url_for(data_dir, url), data_dir, 1)
    host, token = pop.creds[0]
    extra_env = dict(item.split("=", 1) for item in args.env)
    with Server(data_dir, url, extra_env=extra_env) as server:
        check_call(lambda: http(server, "GET", GET_PATH, host, token), "GET")
        log(f"baseline: {args.rate} GETs/s for {args.duration:.0f} s, no attack")
        baseline = probe(server, host, token, args, None)
        log(f"baseline: {baseline['answered']} answered, {baseline['failed']} failed, p99 {fmt(baseline['p99_ms'], ' ms', 2)}")
        ours, theirs = multiprocessing.Pipe()
        attacker = multiprocessing.get_context("fork").Process(
            target=_attack, args=(server.port, args.idle, args.slow, args.trickle, theirs), daemon=True
        )
        attacker.start()
        try:
            deadline = time.monotonic() + 15
            state: dict[str, int] = {}
            while time.monotonic() < deadline:  # until the attack's connections are all up (or 15 s passed)
                if ours.poll(0.5):
                    state = ours.recv()
                    if state["idle_open"] + state["slow_open"] >= args.idle + args.slow:
                        break
            log(f"attack: {state}")
            log(f"under attack: {args.rate} GETs/s for {args.duration:.0f} s")
            attacked = probe(server, host, token, args, ours)
            log(f"under attack: {attacked['answered']} answered, {attacked['failed']} failed, p99 {fmt(attacked['p99_ms'], ' ms', 2)}; attack {attacked['attack_last']}")
        finally:
            ours.send("stop")
            attacker.join(10)
            if attacker.is_alive():
                attacker.kill()
    return {
        "backend": backend.kind,
        "idle": args.idle,
        "slow": args.slow,
        "trickle_s": args.trickle,
        "duration_s": args.duration,
        "rate": args.rate,
        "timeout_s": args.timeout,
        "server_env": extra_env,
        "baseline": baseline,
        "attacked": attacked,
    }


def table(res: dict[str, Any]) -> str:
    env = ", ".join(f"{k}={v}" for k, v in res["server_env"].items()) or "default settings"
    rows = [
        f"Connections ({res['backend']}, {env}): {res['idle']:,} idle + {res['slow']:,} slow-header connections "
        f"(one byte every {res['trickle_s']:g} s), {res['rate']:g} authenticated GETs/s on new connections for "
        f"{res['duration_s']:g} s, {res['timeout_s']:g} s client timeout",
        "",
        "| situation | GETs answered | failed | p50 ms | p99 ms | max ms | attack connections up (lowest) | closed by the server | worker open files | worker RSS MB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, key in (("no attack", "baseline"), ("under attack", "attacked")):
        r = res[key]
        low = r["attack_lowest"]
        up = f"{low['idle_open']:,} idle + {low['slow_open']:,} slow" if low else "–"
        closed = f"{r['attack_last'].get('closed_by_server', 0):,}" if low else "–"
        rows.append(
            f"| {name} | {r['answered']} | {r['failed']} | {fmt(r['p50_ms'], digits=2)} | {fmt(r['p99_ms'], digits=2)} "
            f"| {fmt(r['max_ms'], digits=2)} | {up} | {closed} | {r['worker_open_files_max']:,} | {fmt(r['worker_rss_mb_max'])} |"
        )
    return "\n".join(rows)


def main() -> None:
    p = base_parser(__doc__ or "")
    p.set_defaults(runs=1, duration=30.0)
    p.add_argument("--idle", type=int, default=2000, help="connections that send nothing (default 2000)")
    p.add_argument("--slow", type=int, default=2000, help="connections that send a header byte now and then (default 2000)")
    p.add_argument("--trickle", type=float, default=2.0, help="seconds between a slow connection's bytes (default 2)")
    p.add_argument("--rate", type=float, default=20.0, help="GETs a second (default 20)")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds a GET may take before it counts as failed (default 5)")
    p.add_argument("--env", action="append", default=[], metavar="K=V", help="a server setting, e.g. SMTPSETTINGS_HTTP_MAX_CONNECTIONS=1024")
    run_figure(p.parse_args(), run, table)


if __name__ == "__main__":
    main()
