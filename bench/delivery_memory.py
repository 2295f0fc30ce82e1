"""The delivery process's memory: PSS, RSS and anonymous memory of ``smtpsettings deliver`` under ``serve``.

    python bench/delivery_memory.py [--runs 3] [--settle 3] [--baseline-src DIR]

Starts ``smtpsettings serve --workers 1`` on a fresh SQLite data directory, waits until its delivery process has
started its dispatcher and ``--settle`` seconds more, then reads ``/proc/PID/smaps_rollup`` of that process, of
the worker and of serve itself (idle: no mail sent). ``--baseline-src DIR`` also runs the code in ``DIR`` (a
checkout's ``src``, put first on ``PYTHONPATH``), alternating with this tree in each run, the order rotated.
PSS splits the pages shared with the other processes (libraries, the interpreter); the anonymous memory is
the delivery process's own, since it is a fresh interpreter and not a fork.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import Server, Workdir, log

FIELDS = ("Pss", "Rss", "Anonymous")


def rollup(pid: int) -> dict[str, float]:
    """The process's smaps_rollup fields, in MiB."""
    values = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in FIELDS:
            values[name] = int(rest.split()[0]) / 1024
    return values


def delivery_pid(server: Server, timeout: float = 60) -> int:
    """The pid of serve's delivery process, once its dispatcher has started (its event is in serve's log)."""
    import psutil

    assert server.process is not None and server.log_path is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for child in psutil.Process(server.process.pid).children():
            if "deliver" in child.cmdline():
                for line in server.log_path.read_text().splitlines():
                    started = line.startswith("{") and '"outbox_dispatcher_started"' in line
                    if started and json.loads(line).get("owner", "").startswith(f"{child.pid}-"):
                        return int(child.pid)
        time.sleep(0.1)
    raise RuntimeError(f"no delivery process started:\n{server.log_path.read_text()[-3000:]}")


def measure(work: Path, name: str, env: dict[str, str], settle: float) -> dict[str, dict[str, float]]:
    data = work / name
    data.mkdir(mode=0o700, exist_ok=True)
    extra = {"SMTPSETTINGS_OWNER_EMAIL": "owner@example.com", **env}
    with Server(data, extra_env=extra, cpus="0,1") as server:
        deliverer = delivery_pid(server)
        time.sleep(settle)
        assert server.process is not None
        worker = next(pid for pid in server.worker_pids() if pid != deliverer)
        return {"deliver": rollup(deliverer), "worker": rollup(worker), "serve": rollup(server.process.pid)}


def main() -> None:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--settle", type=float, default=3.0, help="seconds after the dispatcher started (default 3)")
    p.add_argument("--baseline-src", type=Path, default=None)
    p.add_argument("--workdir", type=Path, default=None)
    p.add_argument("--keep", action="store_true")
    args = p.parse_args()
    codes: dict[str, dict[str, str]] = {"now": {}}
    if args.baseline_src is not None:
        codes = {"base": {"PYTHONPATH": str(args.baseline_src.resolve())}, "now": {}}
    names = list(codes)
    results: dict[str, list[dict[str, dict[str, float]]]] = {name: [] for name in names}
    with Workdir(args.workdir, args.keep) as work:
        for i in range(args.runs):
            for name in names[i % len(names) :] + names[: i % len(names)]:
                one = measure(work, f"{name}-{i}", codes[name], args.settle)
                results[name].append(one)
                log(f"run {i + 1} {name}: " + ", ".join(f"{p} PSS {m['Pss']:.1f} MiB" for p, m in one.items()))
    print(f"Delivery process under `serve --workers 1`, idle, MiB, median (min–max) of {args.runs} runs\n")
    print("| code | process | " + " | ".join(FIELDS) + " |")
    print("|---|---|" + "---|" * len(FIELDS))
    for name in names:
        for process in ("deliver", "worker", "serve"):
            cells = []
            for f in FIELDS:
                values = [run[process][f] for run in results[name]]
                cells.append(f"{statistics.median(values):.1f} ({min(values):.1f}–{max(values):.1f})")
            print(f"| {name} | {process} | " + " | ".join(cells) + " |")
    if "base" in results:
        print()
        for f in FIELDS:
            ratios = [now["deliver"][f] / base["deliver"][f] for base, now in zip(results["base"], results["now"], strict=True)]
            print(f"delivery process {f}, now ÷ base per run: " + ", ".join(f"{r:.3f}" for r in ratios))
    print(f"\n# load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
