"""Figure 2: the authenticated GET with 1, 1 000 and 100 000 portals in the database.

    python bench/scale.py [--db sqlite|postgres] [--runs 3] [--sizes 1,1000,100000] [--duration 6]

Each size has its own database, every portal with an admin, a live token and its own settings. Each run
starts a server on each database in turn (rotating order) and measures ``GET /api/2.0/smtpsettings/smtp``
with ``wrk -t1 -c32``, every request for a random portal of that database (its Host and token), so the
large database is really read all over, not one hot row. Reported: req/s, p50, p99 per size and the
ratios p50(size)/p50(1 portal) and p99(size)/p99(1 portal), taken within each run. The worker's peak RSS
at the largest size is figure 4's second value.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    GET_PATH,
    Backend,
    Server,
    base_parser,
    check_call,
    fmt_range,
    http,
    log,
    measure,
    populate,
    run_figure,
    summary,
)


def run(args: Any, backend: Backend, work: Path) -> dict[str, Any]:
    sizes = [int(s) for s in str(getattr(args, "sizes", "1,1000,100000")).split(",")]
    dbs = {}
    for size in sizes:
        data_dir = work / f"scale-{backend.kind}-{size}"
        url = backend.database(f"bench_scale_{size}", data_dir)
        pop = populate(backend.url_for(data_dir, url), data_dir, size)
        dbs[size] = (data_dir, url, pop, pop.write_creds(data_dir / "creds.txt"))
    runs: list[dict[str, Any]] = []
    for rep in range(args.runs):
        order = sizes[rep % len(sizes) :] + sizes[: rep % len(sizes)]
        one: dict[str, Any] = {}
        for size in order:
            data_dir, url, pop, creds = dbs[size]
            with Server(data_dir, url) as server:
                host, token = pop.creds[-1]
                check_call(lambda: http(server, "GET", GET_PATH, host, token), "GET")
                r = measure(
                    server.url(GET_PATH), creds_file=creds, warmup=args.warmup, duration=args.duration, connections=args.connections, server=server
                )
                one[str(size)] = {**r.as_dict(), "peak_rss_mb": server.peak_rss_mb()}
                log(f"{backend.kind} run {rep + 1} {size:>7} portals {r.rps:9.1f} req/s  p50 {r.p50_ms:7.2f} ms  p99 {r.p99_ms:7.2f} ms  cpu {r.cpu_us_per_req} µs/req")
        base = one[str(sizes[0])]
        for size in sizes:
            one[str(size)]["ratio_p50"] = one[str(size)]["p50_ms"] / base["p50_ms"]
            one[str(size)]["ratio_p99"] = one[str(size)]["p99_ms"] / base["p99_ms"]
            one[str(size)]["ratio_cpu"] = one[str(size)]["cpu_us_per_req"] / base["cpu_us_per_req"]
        runs.append(one)
    result: dict[str, Any] = {"backend": backend.kind, "sizes": sizes, "connections": args.connections, "runs": runs}
    for size in sizes:
        result[str(size)] = {
            m: summary(r[str(size)][m] for r in runs)
            for m in ("rps", "p50_ms", "p99_ms", "cpu_us_per_req", "ratio_p50", "ratio_p99", "ratio_cpu", "peak_rss_mb")
        }
    return result


def table(res: dict[str, Any]) -> str:
    rows = [
        f"Figure 2 ({res['backend']}, GET, {res['connections']} connections): median (min–max) of {len(res['runs'])} runs",
        "",
        "| portals | req/s | p50 ms | p99 ms | server CPU µs/req | p50 / p50(1) | p99 / p99(1) | worker peak RSS MB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for size in res["sizes"]:
        k = res[str(size)]
        rows.append(
            f"| {size:,} | {fmt_range(k['rps'], digits=0)} | {fmt_range(k['p50_ms'], digits=2)} | {fmt_range(k['p99_ms'], digits=2)} "
            f"| {fmt_range(k['cpu_us_per_req'], digits=0)} | {fmt_range(k['ratio_p50'], digits=2)} | {fmt_range(k['ratio_p99'], digits=2)} "
            f"| {fmt_range(k['peak_rss_mb'])} |"
        )
    return "\n".join(rows)


def main() -> None:
    p = base_parser(__doc__ or "")
    p.add_argument("--sizes", default="1,1000,100000", help="comma-separated portal counts; the first is the baseline")
    run_figure(p.parse_args(), run, table)


if __name__ == "__main__":
    main()
