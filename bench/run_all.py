"""The whole benchmark suite in one command: figures 1–5, a results JSON and the markdown of docs/benchmarks.md.

    python bench/run_all.py                       # everything, 3 runs each (about 12–15 minutes)
    python bench/run_all.py --runs 5              # more runs per figure
    python bench/run_all.py --skip-postgres       # SQLite only (figures 1–4)
    python bench/run_all.py --quick               # 1 run, 3 s measurements: a smoke test of the suite, not figures

Order: SQLite figure 1, 2, 3; then one throwaway PostgreSQL cluster for figures 1 and 2 again (figure 5).
Figure 4 (peak RSS) is read from the servers of figures 1 and 2. Writes ``bench/results/latest.json``
(or ``--json``) and prints the tables and the target check as markdown.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import http_load  # noqa: E402
import mailtest  # noqa: E402
import scale  # noqa: E402
from common import LOAD_CPU, Backend, Workdir, base_parser, environment, fmt, log, write_json  # noqa: E402

DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "latest.json"


def targets(res: dict[str, Any]) -> list[tuple[str, str, str, bool | None]]:
    """(target, measured, backend, met?) for each target of the issue that this run measured."""
    out: list[tuple[str, str, str, bool | None]] = []

    def add(name: str, value: float | None, ok: bool | None, backend: str, fmtv: str) -> None:
        out.append((name, fmtv if value is not None else "–", backend, ok))

    for backend in ("sqlite", "postgres"):
        f1 = res.get(f"figure1_{backend}")
        f2 = res.get(f"figure2_{backend}")
        if f1:
            # Issue 15's targets, against the raw ASGI ceiling of the same run.
            get_min, post_min, p99_max = (0.35, 0.20, 10.0) if backend == "sqlite" else (0.15, None, 15.0)
            g, p = f1["ratio_get"]["median"], f1["ratio_post"]["median"]
            add(f"GET ≥ {get_min:.2f} × raw ASGI ceiling (req/s)", g, g >= get_min, backend, fmt(g, digits=3))
            if post_min is not None:
                add(f"POST ≥ {post_min:.2f} × raw ASGI ceiling (req/s)", p, p >= post_min, backend, fmt(p, digits=3))
            p99 = f1["get"]["p99_ms"]["median"]
            add(f"GET p99 < {p99_max:g} ms at 32 connections", p99, p99 < p99_max, backend, fmt(p99, " ms", 2))
        if f2:
            big = str(max(f2["sizes"]))
            r = f2[big]["ratio_p50"]["median"]
            add(f"p50 at {int(big):,} portals ≤ 1.2 × 1 portal", r, r <= 1.2, backend, fmt(r, "×", 2))
        rss = [x for x in ((f1 or {}).get("peak_rss_mb", {}).get("max"), (f2 or {}).get(str(max((f2 or {"sizes": [0]})["sizes"])), {}).get("peak_rss_mb", {}).get("max")) if x]
        if rss:
            add("worker RSS < 150 MB (max of figure 1 load and the largest scale size)", max(rss), max(rss) < 150, backend, fmt(max(rss), " MB"))
    f3 = res.get("figure3_sqlite")
    if f3:
        r = f3["ratio_job"]["median"]
        add("test job ≤ 1.5 × bare send", r, r <= 1.5, "sqlite", fmt(r, "×", 2))
        r = f3["ratio_p99"]["median"]
        add("GET p99 with 50 running jobs ≤ 2 × idle", r, r <= 2, "sqlite", fmt(r, "×", 2))
    return out


def markdown(res: dict[str, Any]) -> str:
    env = res["environment"]
    lines = [
        f"Run of {env['date']} on {env['cpu']} ({env['cores']} cores, {env['memory_gb']} GB), Linux {env['kernel']}; "
        f"server on CPU {env['server_cpu']}, load generator on CPU {env['load_cpu']}.",
        "",
        f"Python {env['python']}, smtpsettings {env['smtpsettings']}, granian {env['granian']}, litestar {env['litestar']}, "
        f"msgspec {env['msgspec']}, SQLAlchemy {env['sqlalchemy']}, psycopg {env['psycopg']}, structlog {env['structlog']}, "
        f"SQLite {env['sqlite']}, {env.get('postgresql', 'PostgreSQL not run')}, aiosmtplib {env['aiosmtplib']}, aiosmtpd {env['aiosmtpd']}, "
        f"{env['wrk']}.",
        "",
        f"Command: `{res['command']}` ({res['elapsed_s'] / 60:.1f} min). Each figure: median (min–max) of {res['runs']} runs, "
        f"{res['duration']:g} s measured after {res['warmup']:g} s of warm-up per load run.",
        "",
    ]
    for key, mod in (
        ("figure1_sqlite", http_load),
        ("figure2_sqlite", scale),
        ("figure3_sqlite", mailtest),
        ("figure1_postgres", http_load),
        ("figure2_postgres", scale),
    ):
        if key in res:
            lines += [mod.table(res[key]), ""]
    lines += ["Targets:", "", "| target | backend | measured (median) | met |", "|---|---|---|---|"]
    for name, value, backend, ok in targets(res):
        lines.append(f"| {name} | {backend} | {value} | {'yes' if ok else 'no' if ok is not None else '–'} |")
    return "\n".join(lines)


def main() -> None:
    p = base_parser(__doc__ or "")
    p.set_defaults(json=DEFAULT_JSON)
    p.add_argument("--skip-postgres", action="store_true")
    p.add_argument("--quick", action="store_true", help="1 run, 3 s runs, 1 s warm-up, smaller scale: checks the suite works")
    p.add_argument("--sizes", default="1,1000,100000")
    p.add_argument("--portals", type=int, default=1000)
    p.add_argument("--jobs", type=int, default=20)
    p.add_argument("--concurrent", type=int, default=50)
    p.add_argument("--delay", type=float, default=1.0)
    args = p.parse_args()
    if args.db != "sqlite":
        p.error("run_all runs both backends; use --skip-postgres for SQLite only")
    if args.quick:
        args.runs, args.duration, args.warmup, args.jobs = 1, 3.0, 1.0, 5
    os.sched_setaffinity(0, {int(LOAD_CPU)})
    started = time.monotonic()
    res: dict[str, Any] = {
        "command": " ".join(["python", "bench/run_all.py", *sys.argv[1:]]),
        "runs": args.runs,
        "duration": args.duration,
        "warmup": args.warmup,
        "connections": args.connections,
    }
    with Workdir(args.workdir, args.keep) as work:
        with Backend("sqlite") as sqlite:
            log("figure 1 (SQLite)")
            res["figure1_sqlite"] = http_load.run(args, sqlite, work)
            log("figure 2 (SQLite)")
            res["figure2_sqlite"] = scale.run(args, sqlite, work)
            log("figure 3 (SQLite)")
            res["figure3_sqlite"] = mailtest.run(args, sqlite, work)
            res["environment"] = environment(sqlite)
        if not args.skip_postgres:
            with Backend("postgres") as pg:
                log("figure 5: figure 1 on PostgreSQL")
                res["figure1_postgres"] = http_load.run(args, pg, work)
                log("figure 5: figure 2 on PostgreSQL")
                res["figure2_postgres"] = scale.run(args, pg, work)
                res["environment"] = environment(pg)
    res["elapsed_s"] = time.monotonic() - started
    res["targets"] = [{"target": t, "measured": v, "backend": b, "met": ok} for t, v, b, ok in targets(res)]
    write_json(args.json, res)
    print(markdown(res))
    log(f"results in {args.json}")


if __name__ == "__main__":
    main()
