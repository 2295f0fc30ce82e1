"""Figure 3: what a test mail costs.

    python bench/mailtest.py [--db sqlite|postgres] [--runs 3] [--jobs 20] [--concurrent 50] [--delay 1.0]

(a) Wall time of a full test job as a client sees it: ``GET /api/2.0/smtpsettings/smtp/test``, then
    ``GET /test/status`` every millisecond until ``completed``, against a local aiosmtpd (``bench/smtpsink.py``,
    answering at once). Baseline, in the same run and interleaved job/bare/job/bare: a bare
    ``aiosmtplib.send`` of the same message (``bench/bare_send.py``) from a process pinned to the server's
    core. Per run: median of ``--jobs`` of each, and their ratio.
(b) GET p99 (``wrk -c32``, figure 1's GET) while ``--concurrent`` portals each run test jobs back to back
    (start, poll the status every 250 ms as a web page does, start the next one once completed), against
    GET p99 with no job running, back to back in each run. Their SMTP server holds DATA ``--delay``
    seconds, as a remote one would, so the jobs overlap: the report gives the mean number running.

The SMTP sink(s), the polling clients and wrk run on the load core; the server on its own core.
"""

from __future__ import annotations

import http.client as httpclient
import json
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    GET_PATH,
    LOAD_CPU,
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

TEST_PATH = "/api/2.0/smtpsettings/smtp/test"
STATUS_PATH = TEST_PATH + "/status"
BENCH = Path(__file__).resolve().parent


class Client:
    """A keep-alive HTTP/1.1 connection speaking for one portal."""

    def __init__(self, port: int, host: str, token: str) -> None:
        self.conn = httpclient.HTTPConnection("127.0.0.1", port, timeout=60)
        self.headers = {"Host": host, "Cookie": f"asc_auth_key={token}"}

    def get(self, path: str) -> dict[str, Any]:
        self.conn.request("GET", path, headers=self.headers)
        resp = self.conn.getresponse()
        data = json.loads(resp.read())
        if resp.status != 200:
            raise RuntimeError(f"GET {path}: {resp.status} {data}")
        return data

    def run_job(self, poll_interval: float, stop: threading.Event | None = None) -> tuple[float, int, dict[str, Any]]:
        """Start a test and poll until completed: (wall seconds, polls, final status)."""
        started = time.perf_counter()
        status = self.get(TEST_PATH)["response"]
        polls = 0
        while not status["completed"]:
            time.sleep(poll_interval)
            status = self.get(STATUS_PATH).get("response") or {"completed": False}
            polls += 1
            if time.perf_counter() - started > 90:
                raise RuntimeError(f"test job did not complete within 90 s: {status}")
        return time.perf_counter() - started, polls, status

    def close(self) -> None:
        self.conn.close()


def start_sink(delay: float) -> tuple[subprocess.Popen[str], int]:
    port = free_port()
    proc = subprocess.Popen(
        ["taskset", "-c", LOAD_CPU, sys.executable, str(BENCH / "smtpsink.py"), "--port", str(port), "--delay", str(delay), "--watch-stdin"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    if not proc.stdout.readline().startswith("READY"):
        raise RuntimeError("SMTP sink did not start")
    return proc, port


def stop_proc(proc: subprocess.Popen[str]) -> None:
    try:
        if proc.stdin:
            proc.stdin.close()
        proc.wait(5)
    except (subprocess.TimeoutExpired, OSError):
        proc.kill()
        proc.wait(5)


def single_jobs(server: Server, creds: tuple[str, str], sink_port: int, n: int) -> dict[str, Any]:
    host, token = creds
    bare = subprocess.Popen(
        ["taskset", "-c", SERVER_CPU, sys.executable, str(BENCH / "bare_send.py"), "--port", str(sink_port),
         "--sender", f"docspace@{host}", "--recipient", f"admin@{host}"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert bare.stdin and bare.stdout
    if bare.stdout.readline().strip() != "READY":
        raise RuntimeError("bare sender did not start")

    def bare_send() -> float:
        assert bare.stdin and bare.stdout
        bare.stdin.write("\n")
        bare.stdin.flush()
        return float(bare.stdout.readline()) / 1000

    client = Client(server.port, host, token)
    jobs: list[float] = []
    bares: list[float] = []
    polls: list[int] = []
    try:
        for i in range(n + 3):  # 3 warm-ups of each
            wall, npolls, status = client.run_job(0.001)
            if status.get("error") or status.get("percents") != 100:
                raise RuntimeError(f"test job failed: {status}")
            b = bare_send()
            if i >= 3:
                jobs.append(wall)
                bares.append(b)
                polls.append(npolls)
    finally:
        client.close()
        stop_proc(bare)
    job_ms, bare_ms = statistics.median(jobs) * 1000, statistics.median(bares) * 1000
    return {"job_ms": job_ms, "bare_ms": bare_ms, "ratio": job_ms / bare_ms, "polls": statistics.median(polls),
            "job_all_ms": [j * 1000 for j in jobs], "bare_all_ms": [b * 1000 for b in bares]}


class JobLoops:
    """``count`` portals each running test jobs back to back until stopped."""

    def __init__(self, port: int, creds: list[tuple[str, str]], poll_interval: float) -> None:
        self.stop = threading.Event()
        self.running = 0
        self.completed = 0
        self.failures: list[str] = []
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._loop, args=(port, h, t, poll_interval), daemon=True) for h, t in creds]

    def _loop(self, port: int, host: str, token: str, poll_interval: float) -> None:
        client = Client(port, host, token)
        try:
            while not self.stop.is_set():
                with self.lock:
                    self.running += 1
                try:
                    _, _, status = client.run_job(poll_interval)
                finally:
                    with self.lock:
                        self.running -= 1
                with self.lock:
                    self.completed += 1
                    if status.get("error"):
                        self.failures.append(status["error"])
        except Exception as exc:  # noqa: BLE001 - reported, not swallowed
            self.failures.append(repr(exc))
        finally:
            client.close()

    def __enter__(self) -> JobLoops:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(120)


def concurrent_get(server: Server, args: Any, creds_file: Path, job_creds: list[tuple[str, str]], order: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for mode in order:
        kw = dict(creds_file=creds_file, warmup=args.warmup, duration=args.duration, connections=args.connections, server=server)
        if mode == "idle":
            r = measure(server.url(GET_PATH), **kw)
            out["idle"] = r.as_dict()
        else:
            with JobLoops(server.port, job_creds, 0.25) as loops:
                samples: list[int] = []
                done = threading.Event()

                def sample() -> None:
                    while not done.wait(0.1):
                        samples.append(loops.running)

                time.sleep(1.0)
                sampler = threading.Thread(target=sample, daemon=True)
                sampler.start()
                before = loops.completed
                r = measure(server.url(GET_PATH), **kw)
                done.set()
                sampler.join()
                out["busy"] = {**r.as_dict(), "jobs_running_mean": statistics.mean(samples) if samples else 0,
                               "jobs_completed": loops.completed - before}
            if loops.failures:
                raise RuntimeError(f"test jobs failed under load: {loops.failures[:3]}")
        log(f"  GET with {mode}: {r.rps:.0f} req/s p50 {r.p50_ms:.2f} ms p99 {r.p99_ms:.2f} ms")
    out["ratio_p99"] = out["busy"]["p99_ms"] / out["idle"]["p99_ms"]
    return out


def run(args: Any, backend: Backend, work: Path) -> dict[str, Any]:
    n_concurrent = getattr(args, "concurrent", 50)
    fast, fast_port = start_sink(0.0)
    slow, slow_port = start_sink(getattr(args, "delay", 1.0))
    try:
        data_dir = work / f"mailtest-{backend.kind}"
        url = backend.database("bench_mailtest", data_dir)
        portals = n_concurrent + 14
        pop = populate(backend.url_for(data_dir, url), data_dir, portals, smtp_host="127.0.0.1", smtp_port=fast_port,
                       enable_auth=False, enable_ssl=False)
        creds_file = pop.write_creds(data_dir / "creds.txt")
        job_creds = pop.creds[1 : 1 + n_concurrent]
        runs: list[dict[str, Any]] = []
        for rep in range(args.runs):
            with Server(data_dir, url) as server:
                # the concurrent jobs' portals send to the slow sink: saved through the API
                for host, token in job_creds:
                    body = {"host": "127.0.0.1", "port": slow_port, "senderAddress": f"docspace@{host}", "senderDisplayName": "DocSpace",
                            "enableSSL": False, "enableAuth": False}
                    check_call(lambda: http(server, "POST", GET_PATH, host, token, json.dumps(body).encode()), "POST")
                one = {"single": single_jobs(server, pop.creds[0], fast_port, getattr(args, "jobs", 20))}
                log(f"{backend.kind} run {rep + 1} test job {one['single']['job_ms']:.2f} ms, bare send {one['single']['bare_ms']:.2f} ms,"
                    f" ratio {one['single']['ratio']:.2f} ({one['single']['polls']} polls)")
                one["concurrent"] = concurrent_get(server, args, creds_file, job_creds, ["idle", "busy"] if rep % 2 == 0 else ["busy", "idle"])
                runs.append(one)
    finally:
        stop_proc(fast)
        stop_proc(slow)
    return {
        "backend": backend.kind,
        "concurrent": n_concurrent,
        "delay_s": getattr(args, "delay", 1.0),
        "runs": runs,
        "job_ms": summary(r["single"]["job_ms"] for r in runs),
        "bare_ms": summary(r["single"]["bare_ms"] for r in runs),
        "ratio_job": summary(r["single"]["ratio"] for r in runs),
        "idle_p99_ms": summary(r["concurrent"]["idle"]["p99_ms"] for r in runs),
        "busy_p99_ms": summary(r["concurrent"]["busy"]["p99_ms"] for r in runs),
        "idle_rps": summary(r["concurrent"]["idle"]["rps"] for r in runs),
        "busy_rps": summary(r["concurrent"]["busy"]["rps"] for r in runs),
        "ratio_p99": summary(r["concurrent"]["ratio_p99"] for r in runs),
        "jobs_running_mean": summary(r["concurrent"]["busy"]["jobs_running_mean"] for r in runs),
        "jobs_completed": summary(r["concurrent"]["busy"]["jobs_completed"] for r in runs),
    }


def table(res: dict[str, Any]) -> str:
    return "\n".join(
        [
            f"Figure 3 ({res['backend']}): median (min–max) of {len(res['runs'])} runs",
            "",
            "| measure | value | baseline | ratio |",
            "|---|---|---|---|",
            f"| test job wall time (start + poll to completed), ms | {fmt_range(res['job_ms'], digits=2)} | bare aiosmtplib send: {fmt_range(res['bare_ms'], digits=2)} | {fmt_range(res['ratio_job'], digits=2)} |",
            f"| GET p99 with {res['concurrent']} portals running test jobs, ms | {fmt_range(res['busy_p99_ms'], digits=2)} | no job: {fmt_range(res['idle_p99_ms'], digits=2)} | {fmt_range(res['ratio_p99'], digits=2)} |",
            f"| GET req/s with / without the jobs | {fmt_range(res['busy_rps'], digits=0)} | {fmt_range(res['idle_rps'], digits=0)} | |",
            "",
            f"Jobs running at once during the busy measurement (mean of 10 Hz samples): {fmt_range(res['jobs_running_mean'])};"
            f" jobs completed during it: {fmt_range(res['jobs_completed'], digits=0)} (SMTP DATA held {res['delay_s']:g} s).",
        ]
    )


def main() -> None:
    p = base_parser(__doc__ or "")
    p.add_argument("--jobs", type=int, default=20, help="measured test jobs (and bare sends) per run (default 20)")
    p.add_argument("--concurrent", type=int, default=50, help="portals running jobs at once in (b) (default 50)")
    p.add_argument("--delay", type=float, default=1.0, help="seconds the SMTP server of (b) holds DATA (default 1.0)")
    run_figure(p.parse_args(), run, table)


if __name__ == "__main__":
    main()
