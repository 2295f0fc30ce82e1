"""Figure 1: HTTP throughput and latency of GET and POST /api/2.0/smtpsettings/smtp against the ceiling.

    python bench/http_load.py [--db sqlite|postgres] [--runs 3] [--duration 6] [--warmup 2] [--portals 1000]
                              [--sqlite-synchronous normal]

One server worker (``smtpsettings serve --workers 1``) on one core, ``wrk -t1 -c32`` on the other. In each
run a fresh server answers, back to back and in a rotating order:

- raw: a minimal ASGI app served by granian (``bench/asgi_hello.py``, one worker on the same core): the
  ceiling, what the HTTP server itself can do; started before the smtpsettings server in each run;
- ceiling (routed): ``GET /api/2.0/health/live`` on the smtpsettings server (its request log, no database);
- GET:  the portal's settings, authenticated by the ``asc_auth_key`` cookie (token lookup + settings read);
- POST: a full save (validation, AES-GCM of the password, upsert and audit row in one transaction).

Each GET/POST goes to a random one of ``--portals`` portals (Host header and that portal's token), so
saves do not all queue on one portal's row lock. Figures are medians over the runs (min–max beside them);
the ratios GET/raw and POST/raw (and live/raw) are taken within each run, then their median. The worker's peak
RSS (VmHWM) after each run is figure 4's "under load" value.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from asgi_hello import HelloServer  # noqa: E402
from common import (  # noqa: E402
    GET_PATH,
    LIVE_PATH,
    POST_BODY,
    SERVER_CPU,
    Backend,
    Server,
    base_parser,
    check_call,
    fmt_range,
    free_port,
    http,
    log,
    measure,
    populate,
    run_figure,
    summary,
)

KINDS = ("raw", "ceiling", "get", "post")
"""``ceiling`` is the routed /health/live row (its key kept for older result files); ``raw`` is the ceiling."""


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
        one: dict[str, Any] = {}
        common_kw = dict(warmup=args.warmup, duration=args.duration, connections=args.connections)
        with HelloServer(free_port(), SERVER_CPU) as hello:
            r = measure(hello.url(LIVE_PATH), server=hello, **common_kw)  # type: ignore[arg-type]
            one["raw"] = r.as_dict()
            log(f"{backend.kind} run {rep + 1} raw     {r.rps:9.1f} req/s  p50 {r.p50_ms:7.2f} ms  p99 {r.p99_ms:7.2f} ms  cpu {r.cpu_us_per_req} µs/req  {r.switches_per_req} switches/req")
        with Server(data_dir, url, extra_env=_server_env(args)) as server:
            host, token = pop.creds[0]
            check_call(lambda: http(server, "GET", GET_PATH, host, token), "GET")
            check_call(lambda: http(server, "POST", GET_PATH, host, token, body.read_bytes()), "POST")
            served = KINDS[1:]
            order = served[rep % 3 :] + served[: rep % 3]
            for kind in order:
                if kind == "ceiling":
                    r = measure(server.url(LIVE_PATH), host=host, server=server, **common_kw)  # type: ignore[arg-type]
                elif kind == "get":
                    r = measure(server.url(GET_PATH), creds_file=creds, server=server, **common_kw)  # type: ignore[arg-type]
                else:
                    r = measure(server.url(GET_PATH), creds_file=creds, method="POST", body_file=body, server=server, **common_kw)  # type: ignore[arg-type]
                one[kind] = r.as_dict()
                log(f"{backend.kind} run {rep + 1} {kind:7s} {r.rps:9.1f} req/s  p50 {r.p50_ms:7.2f} ms  p99 {r.p99_ms:7.2f} ms  cpu {r.cpu_us_per_req} µs/req  {r.switches_per_req} switches/req")
            one["peak_rss_mb"] = server.peak_rss_mb()
            for kind in ("ceiling", "get", "post"):
                one[f"ratio_{kind}"] = one[kind]["rps"] / one["raw"]["rps"]
            runs.append(one)
    result: dict[str, Any] = {"backend": backend.kind, "portals": portals, "connections": args.connections, "runs": runs}
    for kind in KINDS:
        result[kind] = {m: summary(r[kind][m] for r in runs) for m in ("rps", "p50_ms", "p99_ms", "cpu_us_per_req")}
    for kind in ("ceiling", "get", "post"):
        result[f"ratio_{kind}"] = summary(r[f"ratio_{kind}"] for r in runs)
        result[f"ratio_{kind}_cpu"] = summary(r["raw"]["cpu_us_per_req"] / r[kind]["cpu_us_per_req"] for r in runs)
    result["peak_rss_mb"] = summary(r["peak_rss_mb"] for r in runs)
    return result


def _server_env(args: Any) -> dict[str, str]:
    """``--sqlite-synchronous`` as the server's setting; none by default (the server's default, ``full``)."""
    sync = getattr(args, "sqlite_synchronous", None)
    return {"SMTPSETTINGS_SQLITE_SYNCHRONOUS": sync} if sync else {}


def table(res: dict[str, Any]) -> str:
    rows = [
        f"Figure 1 ({res['backend']}, {res['portals']} portals, {res['connections']} connections): median (min–max) of {len(res['runs'])} runs",
        "",
        "| request | req/s | p50 ms | p99 ms | server CPU µs/req | ratio to ceiling (req/s) | ratio (CPU/req) |",
        "|---|---|---|---|---|---|---|",
    ]
    names = {
        "raw": "raw ASGI hello on granian (ceiling)",
        "ceiling": "GET /health/live (routed)",
        "get": "GET /smtpsettings/smtp",
        "post": "POST /smtpsettings/smtp",
    }
    for kind in KINDS:
        k = res[kind]
        ratio = "1" if kind == "raw" else fmt_range(res[f"ratio_{kind}"], digits=3)
        ratio_cpu = "1" if kind == "raw" else fmt_range(res[f"ratio_{kind}_cpu"], digits=3)
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
    p.add_argument(
        "--sqlite-synchronous",
        choices=("full", "normal"),
        help="the server's SMTPSETTINGS_SQLITE_SYNCHRONOUS (default: unset, the server's default full); "
        "normal shows what the sync at each commit costs POST",
    )
    run_figure(p.parse_args(), run, table)


if __name__ == "__main__":
    main()
