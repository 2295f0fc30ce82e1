"""Where a request's time goes: the ASGI application driven in-process, without HTTP server or network.

    python bench/profile_app.py                         # µs per request of live / GET / POST (SQLite)
    python bench/profile_app.py --db postgres           # the same on a throwaway PostgreSQL cluster
    python bench/profile_app.py --profile get --portals 100000   # pyinstrument tree of GET at 100 000 portals
    python bench/profile_app.py --cprofile post         # cProfile, top functions by own time
    python bench/profile_app.py --db postgres --kind lookup   # one database lookup alone (Database.fetch_one)
    SHOW_ALL=1 python bench/profile_app.py --profile get # the pyinstrument tree with library frames too

This is the tool behind the "where the time goes" sections of docs/benchmarks.md: the same application
object granian serves (``create_app``), called with hand-built ASGI scopes, so the figures are the app's
own CPU cost per request, free of the load generator and of socket I/O. The JSON log goes to a file,
as in the HTTP benchmarks.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import GET_PATH, LIVE_PATH, POST_BODY, Backend, Workdir, log, populate  # noqa: E402


def make_scope(method: str, path: str, host: str, token: str | None, body: bool) -> dict[str, Any]:
    headers = [(b"host", host.encode()), (b"user-agent", b"bench"), (b"accept", b"*/*")]
    if token:
        headers.append((b"cookie", f"asc_auth_key={token}".encode()))
    if body:
        headers += [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8080),
        "state": {},
    }


BODY = json.dumps(POST_BODY).encode()


async def call(app: Any, scope: dict[str, Any], body: bytes) -> int:
    status = 0

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(dict(scope, state={}), receive, send)
    return status


async def run_many(app: Any, kind: str, creds: list[tuple[str, str]], n: int) -> float:
    """Mean µs per request over ``n`` sequential requests (one at a time: pure CPU cost)."""
    scopes = []
    for host, token in creds[: min(len(creds), 5000)] if kind != "live" else [("p000000.bench", "")]:
        if kind == "live":
            scopes.append(make_scope("GET", LIVE_PATH, host, None, False))
        else:
            scopes.append(make_scope("POST" if kind == "post" else "GET", GET_PATH, host, token, kind == "post"))
    body = BODY if kind == "post" else b""
    status = await call(app, scopes[0], body)
    if status != 200:
        raise RuntimeError(f"{kind}: status {status}")
    started = time.process_time()
    for i in range(n):
        await call(app, scopes[random.randrange(len(scopes))], body)
    return (time.process_time() - started) / n * 1e6


async def run_lookups(db: Any, n: int) -> float:
    """Mean µs per lookup over ``n`` sequential ``Database.fetch_one`` calls of a one-row statement."""
    import sqlalchemy as sa

    from smtpsettings.store.database import Prepared

    statement = Prepared(sa.select(sa.literal_column("1") + sa.bindparam("n", type_=sa.Integer)))
    started = time.process_time()
    for i in range(n):
        await db.fetch_one(statement, n=i)
    return (time.process_time() - started) / n * 1e6


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite")
    p.add_argument("--portals", type=int, default=1000)
    p.add_argument("-n", type=int, default=3000, help="requests per kind (default 3000)")
    p.add_argument("--profile", choices=("live", "get", "post"), help="pyinstrument tree of one kind")
    p.add_argument("--cprofile", choices=("live", "get", "post"), help="cProfile of one kind, top 40 by own time")
    p.add_argument(
        "--kind",
        choices=("live", "get", "post", "lookup"),
        help="time this kind only (e.g. under py-spy); lookup: the request path's database lookup alone",
    )
    p.add_argument("--log-format", default="json", choices=("json", "console"))
    p.add_argument("--workdir", type=Path, default=None)
    p.add_argument("--keep", action="store_true")
    args = p.parse_args()

    with Workdir(args.workdir, args.keep) as work, Backend(args.db) as backend:
        data_dir = work / f"profile-{args.portals}"
        url = backend.database(f"profile_{args.portals}", data_dir)
        pop = populate(backend.url_for(data_dir, url), data_dir, args.portals)
        for k in [k for k in os.environ if k.startswith("SMTPSETTINGS_")]:
            del os.environ[k]
        os.environ.update(SMTPSETTINGS_DATA_DIR=str(data_dir), SMTPSETTINGS_LOG_FORMAT=args.log_format)
        if url:
            os.environ["SMTPSETTINGS_DATABASE_URL"] = url
        logfile = open(data_dir / "app.log", "w")  # noqa: SIM115
        os.dup2(logfile.fileno(), 2)  # the app's JSON log, as when served

        from smtpsettings.app import create_app

        app = create_app()

        async def go() -> None:
            # run the lifespan so PostgreSQL's pool is closed at the end
            only = args.profile or args.cprofile or args.kind
            kinds = [only] if only else ["live", "get", "post"]
            results = {}
            db = app.app.state.services.db  # type: ignore[attr-defined]
            for kind in kinds:
                if kind == "lookup":
                    await run_lookups(db, min(300, args.n))  # warm-up
                    results[kind] = await run_lookups(db, args.n)
                    continue
                await run_many(app, kind, pop.creds, min(300, args.n))  # warm-up
                if args.profile:
                    from pyinstrument import Profiler

                    prof = Profiler(interval=0.0002, async_mode="disabled")
                    prof.start()
                    results[kind] = await run_many(app, kind, pop.creds, args.n)
                    prof.stop()
                    print(prof.output_text(unicode=True, color=False, show_all=os.environ.get("SHOW_ALL") == "1"), file=sys.stdout)
                elif args.cprofile:
                    import cProfile
                    import pstats

                    pr = cProfile.Profile()
                    pr.enable()
                    results[kind] = await run_many(app, kind, pop.creds, args.n)
                    pr.disable()
                    pstats.Stats(pr, stream=sys.stdout).sort_stats("tottime").print_stats(int(os.environ.get("PROFILE_ROWS", "40")))
                else:
                    results[kind] = await run_many(app, kind, pop.creds, args.n)
            for kind, us in results.items():
                what = "lookup" if kind == "lookup" else "request"
                print(f"{kind:5s} {us:8.1f} µs CPU per {what} (in-process, {args.db}, {args.portals} portals)")
            await app.app.state.services.close()  # type: ignore[attr-defined]

        asyncio.run(go())
        log("done")


if __name__ == "__main__":
    main()
