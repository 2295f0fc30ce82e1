"""Where a served request's CPU goes between the worker's threads (not a figure: the tool behind a finding).

    python bench/thread_cpu.py [--db sqlite|postgres] [--portals 1000] [--duration 4]

Puts figure 1's ceiling and GET loads on a server (``wrk -c32``, as figure 1) and reads, per thread of the
worker, the CPU time and the voluntary / involuntary context switches per request from
``/proc/PID/task/*/{stat,status}``. It shows what in-process profiles cannot: the cost of granian's I/O
thread and of the hand-offs between it and the event-loop thread, which share the server's core.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import GET_PATH, LIVE_PATH, LOAD_CPU, Backend, Server, Workdir, base_parser, populate, wrk


def thread_counters(pid: int) -> dict[str, tuple[str, int, int, int]]:
    """tid -> (name, CPU ticks, voluntary switches, involuntary switches)."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        status = dict(line.split(":\t", 1) for line in Path(f"/proc/{pid}/task/{tid}/status").read_text().splitlines() if ":\t" in line)
        out[tid] = (name, int(fields[11]) + int(fields[12]), int(status["voluntary_ctxt_switches"]), int(status["nonvoluntary_ctxt_switches"]))
    return out


def main() -> None:
    p = base_parser(__doc__ or "")
    p.add_argument("--portals", type=int, default=1000)
    args = p.parse_args()
    os.sched_setaffinity(0, {int(LOAD_CPU)})
    tick_us = 1e6 / os.sysconf("SC_CLK_TCK")
    with Workdir(args.workdir, args.keep) as work, Backend(args.db) as backend:
        data_dir = work / "threads"
        url = backend.database("bench_threads", data_dir)
        pop = populate(backend.url_for(data_dir, url), data_dir, args.portals)
        creds = pop.write_creds(data_dir / "creds.txt")
        with Server(data_dir, url) as server:
            pid = server.worker_pid()
            for kind in ("ceiling", "get"):
                kw = {"host": pop.creds[0][0]} if kind == "ceiling" else {"creds_file": creds}
                path = LIVE_PATH if kind == "ceiling" else GET_PATH
                wrk(server.url(path), duration=args.warmup, connections=args.connections, **kw)
                before = thread_counters(pid)
                result = wrk(server.url(path), duration=args.duration, connections=args.connections, **kw)
                after = thread_counters(pid)
                print(f"{kind}: {result.rps:,.0f} req/s")
                for tid, (name, cpu, vol, invol) in after.items():
                    if tid not in before:
                        continue
                    _, cpu0, vol0, invol0 = before[tid]
                    if cpu == cpu0 and vol == vol0:
                        continue
                    n = result.requests
                    print(
                        f"  {name:16s} {(cpu - cpu0) * tick_us / n:6.1f} µs CPU/req"
                        f"  {(vol - vol0) / n:5.2f} voluntary, {(invol - invol0) / n:5.2f} involuntary switches/req"
                    )


if __name__ == "__main__":
    main()
