"""Figure 1: HTTP throughput and latency of GET and POST /api/2.0/smtpsettings/smtp against the ceiling.

    python bench/http_load.py [--db sqlite|postgres] [--runs 3] [--duration 6] [--warmup 2] [--portals 1000]

One server worker (``smtpsettings serve --workers 1``) on one core, ``wrk -t1 -c32`` on the other. In each
run a fresh server answers, back to back and in a rotating order:

- ceiling: ``GET /api/2.0/health/live`` (same server, framework, middleware and request log; no database);
- GET:  the portal's settings, authenticated by the ``asc_auth_key`` cookie (token lookup + settings read);
- POST: a full save (validation, AES-GCM of the password, upsert and audit row in one transaction).

Each GET/POST goes to a random one of ``--portals`` portals (Host header and that portal's token), so
saves do not all queue on one portal's row lock. Figures are medians over the runs (min–max beside them);
the ratios GET/ceiling and POST/ceiling are taken within each run, then their median. The worker's peak
RSS (VmHWM) after each run is figure 4's "under load" value.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    GET_PATH,
    LIVE_PATH,
    POST_BODY,
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

KINDS = ("ceiling", "get", "post")


def run(args: Any, backend: Backend, work: Path) -> dict[str, Any]:
    portals = getattr(args, "portals", 1000)
    data_dir = work / f"http-{backend.kind}"
    url = backend.database(f"bench_http_{portals}", data_dir)
    pop = populate(backend.url_for(data_dir, url), data_dir, portals)
    creds = pop.write_creds(data_dir / "creds.txt")
    body = data_dir / "post.json"
    body.write_text(json.dumps(POST_BODY))
    runs: list[dict[str, Any]] = []
    for rep in range(args.runs):
        with Server(data_dir, url) as server:
            host, token = pop.creds[0]
            check_call(lambda: http(server, "GET", GET_PATH, host, token), "GET")
            check_call(lambda: http(server, "POST", GET_PATH, host, token, body.read_bytes()), "POST")
            order = KINDS[rep % 3 :] + KINDS[: rep % 3]
            one: dict[str, Any] = {}
            for kind in order:
                common_kw = dict(warmup=args.warmup, duration=args.duration, connections=args.connections, server=server)
                if kind == "ceiling":
                    r = measure(server.url(LIVE_PATH), host=host, **common_kw)
                elif kind == "get":
                    r = measure(server.url(GET_PATH), creds_file=creds, **common_kw)
                else:
                    r = measure(server.url(GET_PATH), creds_file=creds, method="POST", body_file=body, **common_kw)
                one[kind] = r.as_dict()
                log(f"{backend.kind} run {rep + 1} {kind:7s} {r.rps:9.1f} req/s  p50 {r.p50_ms:7.2f} ms  p99 {r.p99_ms:7.2f} ms  cpu {r.cpu_us_per_req} µs/req")
            one["peak_rss_mb"] = server.peak_rss_mb()
            one["ratio_get"] = one["get"]["rps"] / one["ceiling"]["rps"]
            one["ratio_post"] = one["post"]["rps"] / one["ceiling"]["rps"]
            runs.append(one)
    result: dict[str, Any] = {"backend": backend.kind, "portals": portals, "connections": args.connections, "runs": runs}
    for kind in KINDS:
        result[kind] = {m: summary(r[kind][m] for r in runs) for m in ("rps", "p50_ms", "p99_ms", "cpu_us_per_req")}
    result["ratio_get"] = summary(r["ratio_get"] for r in runs)
    result["ratio_post"] = summary(r["ratio_post"] for r in runs)
    result["ratio_get_cpu"] = summary(r["ceiling"]["cpu_us_per_req"] / r["get"]["cpu_us_per_req"] for r in runs)
    result["ratio_post_cpu"] = summary(r["ceiling"]["cpu_us_per_req"] / r["post"]["cpu_us_per_req"] for r in runs)
    result["peak_rss_mb"] = summary(r["peak_rss_mb"] for r in runs)
    return result


def table(res: dict[str, Any]) -> str:
    rows = [
        f"Figure 1 ({res['backend']}, {res['portals']} portals, {res['connections']} connections): median (min–max) of {len(res['runs'])} runs",
        "",
        "| request | req/s | p50 ms | p99 ms | server CPU µs/req | ratio to ceiling (req/s) | ratio (CPU/req) |",
        "|---|---|---|---|---|---|---|",
    ]
    names = {"ceiling": "GET /health/live (ceiling)", "get": "GET /smtpsettings/smtp", "post": "POST /smtpsettings/smtp"}
    for kind in KINDS:
        k = res[kind]
        ratio = "1" if kind == "ceiling" else fmt_range(res[f"ratio_{kind}"], digits=3)
        ratio_cpu = "1" if kind == "ceiling" else fmt_range(res[f"ratio_{kind}_cpu"], digits=3)
        rows.append(
            f"| {names[kind]} | {fmt_range(k['rps'], digits=0)} | {fmt_range(k['p50_ms'], digits=2)} | {fmt_range(k['p99_ms'], digits=2)} "
            f"| {fmt_range(k['cpu_us_per_req'], digits=0)} | {ratio} | {ratio_cpu} |"
        )
    rows.append("")
    rows.append(f"Worker peak RSS under this load: {fmt_range(res['peak_rss_mb'])} MB")
    return "\n".join(rows)


def main() -> None:
    p = base_parser(__doc__ or "")
    p.add_argument("--portals", type=int, default=1000, help="portals in the database, requests spread over all (default 1000)")
    run_figure(p.parse_args(), run, table)


if __name__ == "__main__":
    main()
