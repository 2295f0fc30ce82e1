"""Acceptance with one and two workers: many SMTP sessions at once, messages a second and syncs per message.

    python bench/workers.py [--sessions 16] [--runs 3] [--duration 6] [--baseline-src DIR] [--syncs]

``smtpsettings serve --workers N --submission-port`` on SQLite (``synchronous=full``), N = 1 and 2, both
allowed onto ``--cpus`` (default ``0,1``: the two-worker server needs two cores, and the one-worker server
gets the same two, so that only the worker count differs). ``--sessions`` STARTTLS sessions, in this process
(on the same cores: the machine has no third), each sends messages back to back; the rate is all sessions'
accepted messages over ``--duration`` s after ``--warmup`` s. The instance's outbox lock is held by this
process, so no server dispatches: this is acceptance alone. Runs alternate the variants; figures are medians,
and the ratio two workers / one worker is taken within each run. Each window also measures the CPU the server
(serve and its workers) and the clients (this process) spent per message: the clients share the cores, so
``cores × 1000 / (server + clients ms)`` is the most messages a second any number of workers could reach here,
and that ceiling over the one-worker rate bounds what a second worker can add on this machine.

``--baseline-src DIR``: also the same two servers running the code in ``DIR`` (a checkout's ``src``,
put first on ``PYTHONPATH``), for a before/after in one run. ``--syncs``: one more window per variant under
``strace -f -c -e trace=fsync,fdatasync`` attached to its workers: syncs per accepted message.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import ssl
import statistics
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiosmtplib
import trustme
from common import Backend, Server, Workdir, cpu_seconds, log

from submission import MESSAGE, PORTAL, SENDER, our_server


async def session(port: int, ca: trustme.CA, login: tuple[str, str], until: float, start: float, counted: list[int]) -> None:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, tls_context=context, start_tls=True, timeout=60)
    async with client:
        await client.login(*login)
        while (now := time.perf_counter()) < until:
            errors, reply = await client.sendmail(SENDER, ["user@example.test"], MESSAGE)
            if errors or not reply.startswith("2.0.0"):
                raise RuntimeError(f"not accepted: {errors} {reply}")
            if now >= start:
                counted[0] += 1


@dataclass
class Window:
    """What one measured window cost: messages accepted, and the CPU seconds of the server and of the clients."""

    duration: float
    messages: int = 0
    server_cpu: float = 0.0
    client_cpu: float = 0.0

    @property
    def rate(self) -> float:
        return self.messages / self.duration


def server_cpu(server: Server) -> float:
    assert server.process is not None
    return sum(cpu_seconds(pid) for pid in [server.process.pid, *server.worker_pids()])


async def accept_rate(server: Server, port: int, ca: trustme.CA, login: tuple[str, str], sessions: int, warmup: float, duration: float) -> Window:
    """Messages a second accepted over ``sessions`` concurrent sessions, and the CPU both sides spent on them.

    The clients are this process (``time.process_time``: all its threads); the server is serve and its workers.
    """
    counted = [0]
    start = time.perf_counter() + warmup
    window = Window(duration)

    async def meter() -> None:
        await asyncio.sleep(max(0.0, start - time.perf_counter()))
        s0, c0, m0 = server_cpu(server), time.process_time(), counted[0]
        await asyncio.sleep(duration)
        window.server_cpu, window.client_cpu = server_cpu(server) - s0, time.process_time() - c0
        window.messages = counted[0] - m0

    await asyncio.gather(meter(), *(session(port, ca, login, start + duration, start, counted) for _ in range(sessions)))
    return window


def syncs_per_message(server: Server, port: int, ca: trustme.CA, login: tuple[str, str], args: argparse.Namespace) -> float:
    """fsync + fdatasync calls of the server's workers per message accepted in one window."""
    pids = server.worker_pids()
    strace = subprocess.Popen(
        ["strace", "-f", "-c", "-e", "trace=fsync,fdatasync", *(f"-p{pid}" for pid in pids)],
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(1.0)  # attached
    counted = [0]
    asyncio.run(_window(port, ca, login, args, counted))
    strace.send_signal(2)
    _, report = strace.communicate(timeout=30)
    calls = sum(int(m.group(1)) for m in re.finditer(r"^\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?f(?:data)?sync$", report, re.MULTILINE))
    if not calls:
        log(f"no syncs counted; strace said:\n{report}")
    return calls / max(counted[0], 1)


async def _window(port: int, ca: trustme.CA, login: tuple[str, str], args: argparse.Namespace, counted: list[int]) -> None:
    # No warm-up: every message of the window is counted, as every sync is; sessions set up within it
    # (slow under strace), so it is longer than the rate's.
    end = time.perf_counter() + args.duration + 5
    await asyncio.gather(*(session(port, ca, login, end, 0.0, counted) for _ in range(args.sessions)))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sessions", type=int, default=16)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--duration", type=float, default=6.0)
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--cpus", default="0,1")
    p.add_argument("--baseline-src", type=Path, default=None)
    p.add_argument("--syncs", action="store_true")
    p.add_argument("--workdir", type=Path, default=None)
    p.add_argument("--keep", action="store_true")
    args = p.parse_args()
    if args.syncs and not shutil.which("strace"):
        raise SystemExit("--syncs needs strace")

    ca = trustme.CA()
    codes = {"now": {}} if args.baseline_src is None else {"base": {"PYTHONPATH": str(args.baseline_src.resolve())}, "now": {}}
    with Workdir(args.workdir, args.keep) as work, Backend("sqlite") as backend:
        issued = ca.issue_cert("localhost", "127.0.0.1")
        tls = (str(work / "cert.pem"), str(work / "key.pem"))
        issued.cert_chain_pems[0].write_to_path(tls[0])
        issued.private_key_pem.write_to_path(tls[1])
        servers: list[Server] = []
        variants: dict[str, tuple[Server, int, tuple[str, str]]] = {}
        try:
            for code, env in codes.items():
                for workers in (1, 2):
                    name = f"{code}-w{workers}"
                    original = Server.start

                    def start(self: Server, workers: int = workers, original: Any = original) -> Server:
                        self.workers, self.cpus = workers, args.cpus
                        return original(self)

                    Server.start = start  # type: ignore[method-assign]
                    try:
                        # Nothing is delivered here: the queue's cap is lifted so that every run's messages fit.
                        server, port, key = our_server(work, name.replace("-", "_"), backend, tls, hold_dispatcher=True,
                                                       SMTPSETTINGS_OUTBOX_MAX_QUEUED_MESSAGES="1000000", **env)
                    finally:
                        Server.start = original  # type: ignore[method-assign]
                    servers.append(server)
                    variants[name] = (server, port, (PORTAL, key))
            names = list(variants)
            runs: list[dict[str, float]] = []
            windows: dict[str, list[Window]] = {name: [] for name in names}
            for i in range(args.runs):
                order = names[i % len(names) :] + names[: i % len(names)]
                result = {}
                for name in order:
                    server, port, login = variants[name]
                    window = asyncio.run(accept_rate(server, port, ca, login, args.sessions, args.warmup, args.duration))
                    windows[name].append(window)
                    result[name] = window.rate
                    log(f"run {i + 1} {name}: {result[name]:.0f} messages/s, CPU ms/message: server "
                        f"{window.server_cpu / max(window.messages, 1) * 1000:.2f}, clients {window.client_cpu / max(window.messages, 1) * 1000:.2f}")
                runs.append(result)
            syncs = {}
            if args.syncs:
                for name in names:
                    server, port, login = variants[name]
                    syncs[name] = syncs_per_message(server, port, ca, login, args)
                    log(f"{name}: {syncs[name]:.3f} syncs/message")
        finally:
            for server in servers:
                server.stop()

    print(f"\nAcceptance over {args.sessions} concurrent STARTTLS sessions, SQLite synchronous=full, cpus {args.cpus}, "
          f"{args.runs} run(s) of {args.duration:g} s")
    print("| variant | messages/s (median, min–max) | × its one-worker (median of per-run ratios) | syncs/message |")
    print("|---|---|---|---|")
    for name in names:
        rates = [r[name] for r in runs]
        one = name.rsplit("-", 1)[0] + "-w1"
        ratio = statistics.median(r[name] / r[one] for r in runs)
        sync = f"{syncs[name]:.3f}" if name in syncs else "–"
        print(f"| {name} | {statistics.median(rates):,.0f} ({min(rates):,.0f}–{max(rates):,.0f}) | {ratio:.2f} | {sync} |")
    # What two cores allow at best: every message costs the server's and the clients' CPU, and both share the
    # machine's cores. A second worker can add throughput only up to that ceiling.
    cores = len(args.cpus.split(","))
    print(f"\nCPU per message and the ceiling of {cores} cores shared by the server and its clients")
    print("| variant | server CPU ms/msg | clients CPU ms/msg | cores busy | ceiling msg/s | ceiling ÷ its one-worker rate |")
    print("|---|---|---|---|---|---|")
    for name in names:
        ws = windows[name]
        srv = statistics.median(w.server_cpu / max(w.messages, 1) * 1000 for w in ws)
        cli = statistics.median(w.client_cpu / max(w.messages, 1) * 1000 for w in ws)
        busy = statistics.median((w.server_cpu + w.client_cpu) / w.duration for w in ws)
        ceiling = cores * 1000 / (srv + cli)
        one = name.rsplit("-", 1)[0] + "-w1"
        print(f"| {name} | {srv:.2f} | {cli:.2f} | {busy:.2f} | {ceiling:,.0f} | {ceiling / statistics.median(r[one] for r in runs):.2f} |")
    if "base-w1" in names:
        for w in (1, 2):
            ratio = statistics.median(r[f"now-w{w}"] / r[f"base-w{w}"] for r in runs)
            print(f"now / base, {w} worker(s): {ratio:.2f}")


if __name__ == "__main__":
    main()
