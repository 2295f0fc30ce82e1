"""Acceptance writes on PostgreSQL: one transaction per write against group commit, in the same run.

    python bench/pg_group_commit.py [--writers 8] [--writes 300] [--runs 3]

A throwaway cluster with durability as shipped (fsync and ``synchronous_commit`` on, bench/common.py's
``PgCluster``). ``--writers`` concurrent tasks on one event loop each write ``--writes`` rows of about 600
bytes (an outbox message's size), one at a time, each awaiting its answer as a session awaits its 250:

- **per-write**: ``Database.write`` (a transaction of its own on a worker thread: what acceptance did on
  PostgreSQL before group commit);
- **grouped**: ``Database.write_grouped`` (the group-commit thread: one transaction and one commit for the
  writes that arrive together).

Figures per variant: writes/s (median of ``--runs``, order alternating), the process's CPU per write, and
commits per write (``pg_stat_database.xact_commit`` of the bench's database, read once its sessions ended).
The ratio grouped / per-write is taken within each run.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from common import PgCluster, log

from smtpsettings.store.database import Database

PAYLOAD = "x" * 600


def insert(i: int) -> object:
    def fn(conn: sa.engine.Connection) -> None:
        conn.execute(sa.text("INSERT INTO accepted (n, body) VALUES (:n, :b)"), {"n": i, "b": PAYLOAD})

    return fn


def commits(cluster: PgCluster, name: str) -> int:
    import psycopg

    with psycopg.connect(cluster.url(), autocommit=True) as conn:
        for _ in range(100):
            (sessions,) = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (name,)).fetchone()  # type: ignore[misc]
            if sessions == 0:
                break
            time.sleep(0.05)
        time.sleep(0.3)  # the last session's counts reach the statistics as it exits
        conn.execute("SELECT pg_stat_clear_snapshot()")
        (value,) = conn.execute("SELECT xact_commit FROM pg_stat_database WHERE datname = %s", (name,)).fetchone()  # type: ignore[misc]
    return int(value)


async def load(db: Database, grouped: bool, writers: int, writes: int) -> None:
    write = db.write_grouped if grouped else db.write

    async def writer(w: int) -> None:
        for i in range(writes):
            await write(insert(w * writes + i))  # type: ignore[arg-type]

    await asyncio.gather(*(writer(w) for w in range(writers)))


def run(cluster: PgCluster, url: str, grouped: bool, writers: int, writes: int) -> dict[str, float]:
    name = sa.make_url(url).database or ""
    before = commits(cluster, name)
    db = Database(url, timeout=10, pool_size=max(10, writers))
    cpu, wall = time.process_time(), time.perf_counter()
    try:
        asyncio.run(load(db, grouped, writers, writes))
    finally:
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        db.dispose()
    n = writers * writes
    return {"per_s": n / wall, "cpu_ms": 1000 * cpu / n, "commits": (commits(cluster, name) - before) / n}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--writers", type=int, default=8)
    p.add_argument("--writes", type=int, default=300, help="writes per writer and run")
    p.add_argument("--runs", type=int, default=3)
    args = p.parse_args()
    with PgCluster() as cluster:
        url = cluster.create_database("bench_group_commit")
        setup = Database(url)
        setup.write_sync(lambda c: c.execute(sa.text("CREATE TABLE accepted (id BIGSERIAL PRIMARY KEY, n INT, body TEXT)")))
        setup.dispose()
        results: dict[str, list[dict[str, float]]] = {"per-write": [], "grouped": []}
        ratios = []
        version = cluster.version()
        for r in range(args.runs):
            order = ("per-write", "grouped") if r % 2 == 0 else ("grouped", "per-write")
            this: dict[str, dict[str, float]] = {}
            for variant in order:
                this[variant] = run(cluster, url, variant == "grouped", args.writers, args.writes)
                results[variant].append(this[variant])
                log(f"run {r + 1} {variant}: {this[variant]['per_s']:.0f} writes/s, CPU {this[variant]['cpu_ms']:.2f} ms/write, "
                    f"{this[variant]['commits']:.2f} commits/write")
            ratios.append(this["grouped"]["per_s"] / this["per-write"]["per_s"])
    print(f"\n{args.writers} writers × {args.writes} writes, {args.runs} runs, {version}\n")
    print("| variant | writes/s (median, min–max) | CPU ms/write | commits/write |")
    print("|---|---|---|---|")
    for variant, rows in results.items():
        rates = [row["per_s"] for row in rows]
        print(f"| {variant} | {statistics.median(rates):.0f} ({min(rates):.0f}–{max(rates):.0f}) | "
              f"{statistics.median(row['cpu_ms'] for row in rows):.2f} | {statistics.median(row['commits'] for row in rows):.2f} |")
    print(f"\ngrouped ÷ per-write within each run: {', '.join(f'{x:.2f}' for x in ratios)} (median {statistics.median(ratios):.2f})")


if __name__ == "__main__":
    main()
