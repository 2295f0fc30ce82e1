"""Figure 4: peak RSS of one server worker under figure 1's load and at 100 000 portals.

    python bench/memory.py [--db sqlite|postgres] [--runs 1] [--duration 6] [--warmup 2]

Runs figure 1 (ceiling, GET, POST at 32 connections on a 1 000-portal database) and figure 2's GET at
``--portals`` portals (default 100 000), and reports the worker's VmHWM (the kernel's high-water mark of
its resident set) at the end of each server's life. ``bench/run_all.py`` does not run this separately:
it reads the same VmHWM from the servers of figures 1 and 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import http_load  # noqa: E402
import scale  # noqa: E402
from common import LOAD_CPU, Backend, Workdir, base_parser, environment, fmt_range, write_json  # noqa: E402


def table(load: dict[str, Any], large: dict[str, Any], size: int) -> str:
    return "\n".join(
        [
            f"Figure 4 ({load['backend']}): worker peak RSS (VmHWM), MB, median (min–max)",
            "",
            "| situation | peak RSS MB |",
            "|---|---|",
            f"| figure 1 load (ceiling, GET, POST at {load['connections']} connections, {load['portals']:,} portals) | {fmt_range(load['peak_rss_mb'])} |",
            f"| GET at {size:,} portals | {fmt_range(large[str(size)]['peak_rss_mb'])} |",
        ]
    )


def main() -> None:
    p = base_parser(__doc__ or "")
    p.set_defaults(runs=1)
    p.add_argument("--portals", type=int, default=100000)
    args = p.parse_args()
    os.sched_setaffinity(0, {int(LOAD_CPU)})
    with Workdir(args.workdir, args.keep) as work, Backend(args.db) as backend:
        load = http_load.run(argparse.Namespace(**{**vars(args), "portals": 1000}), backend, work)
        large = scale.run(argparse.Namespace(**{**vars(args), "sizes": str(args.portals)}), backend, work)
        env = environment(backend)
    print(table(load, large, args.portals))
    write_json(args.json, {"figure1": load, "large": large, "environment": env})


if __name__ == "__main__":
    main()
