"""py-spy on a real server worker under load: where a served request's time goes, granian included.

    python bench/profile_server.py get   [--db sqlite|postgres] [--portals 1000] [--seconds 5]
    python bench/profile_server.py post
    python bench/profile_server.py live
    python bench/profile_server.py testjob            # test jobs back to back against a local SMTP sink

Starts a server as the benchmarks do, puts figure 1's load on it (or, for ``testjob``, one client running
test jobs back to back, polling every millisecond), samples the worker with ``py-spy record`` at 250 Hz and
prints the functions with the most samples, own and inclusive, as a share of the event-loop thread's
samples (idle time excluded). ``--raw FILE`` keeps py-spy's collapsed stacks (e.g. for a flame graph).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import GET_PATH, LIVE_PATH, LOAD_CPU, POST_BODY, Backend, Server, Workdir, populate, wrk  # noqa: E402


def aggregate(raw: Path, top: int) -> str:
    total = 0
    own: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        frames = [f for f in stack.split(";") if f and not f.startswith("thread (")]
        if not frames:
            continue
        count = int(n)
        total += count
        own[frames[-1]] += count
        for f in set(frames):
            incl[f] += count
    out = [f"{total} samples of busy Python threads", "", "own time:"]
    out += [f"  {100 * c / total:5.1f}%  {f}" for f, c in own.most_common(top)]
    out += ["", "inclusive (smtpsettings, sqlalchemy, psycopg, litestar, structlog, aiosmtplib frames):"]
    keep = ("smtpsettings", "sqlalchemy", "psycopg", "litestar", "structlog", "aiosmtplib", "json/")
    out += [f"  {100 * c / total:5.1f}%  {f}" for f, c in incl.most_common() if any(k in f for k in keep)][: top * 2]
    return "\n".join(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("kind", choices=("live", "get", "post", "testjob"))
    p.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite")
    p.add_argument("--portals", type=int, default=1000)
    p.add_argument("--seconds", type=int, default=5)
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--raw", type=Path, default=None)
    p.add_argument("--workdir", type=Path, default=None)
    p.add_argument("--keep", action="store_true")
    args = p.parse_args()
    pyspy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if not pyspy:
        sys.exit("py-spy is not installed (pip install py-spy)")
    os.sched_setaffinity(0, {int(LOAD_CPU)})
    with Workdir(args.workdir, args.keep) as work, Backend(args.db) as backend:
        data_dir = work / "profile"
        url = backend.database("bench_profile", data_dir)
        sink = None
        if args.kind == "testjob":
            import mailtest

            sink, sink_port = mailtest.start_sink(0.0)
            pop = populate(backend.url_for(data_dir, url), data_dir, 2, smtp_host="127.0.0.1", smtp_port=sink_port,
                           enable_auth=False, enable_ssl=False)
        else:
            pop = populate(backend.url_for(data_dir, url), data_dir, args.portals)
        creds = pop.write_creds(data_dir / "creds.txt")
        body = data_dir / "post.json"
        body.write_text(json.dumps(POST_BODY))
        raw = args.raw or (work / "pyspy.txt")
        try:
            with Server(data_dir, url) as server:
                stop = threading.Event()
                kw: dict[str, object] = {}
                if args.kind == "testjob":
                    import mailtest

                    def loop() -> None:
                        client = mailtest.Client(server.port, *pop.creds[0])
                        while not stop.is_set():
                            client.run_job(0.001)
                        client.close()

                    t = threading.Thread(target=loop, daemon=True)
                    t.start()
                else:
                    path = LIVE_PATH if args.kind == "live" else GET_PATH
                    if args.kind != "live":
                        kw["creds_file"] = creds
                    if args.kind == "post":
                        kw.update(method="POST", body_file=body)
                    wrk(server.url(path), duration=2, connections=32, **kw)  # warm-up
                    load = threading.Thread(target=lambda: wrk(server.url(path), duration=args.seconds + 3, connections=32, **kw), daemon=True)
                    load.start()
                spy = subprocess.run(
                    ["taskset", "-c", LOAD_CPU, pyspy, "record", "-p", str(server.worker_pid()), "-d", str(args.seconds), "-r", "250",
                     "-f", "raw", "-o", str(raw), "--nonblocking"],
                    capture_output=True, text=True, timeout=args.seconds + 60,
                )
                stop.set()
                if args.kind == "testjob":
                    t.join(30)
                if spy.returncode != 0:
                    sys.exit(f"py-spy failed: {spy.stderr}")
        finally:
            if sink is not None:
                import mailtest

                mailtest.stop_proc(sink)
        print(f"# py-spy of the worker: {args.kind}, {args.db}, {pop.count} portals, {args.seconds} s")
        print(aggregate(raw, args.top))


if __name__ == "__main__":
    main()
