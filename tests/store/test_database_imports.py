"""What opening a database loads: psycopg only for PostgreSQL (a SQLite server or CLI command pays nothing for it)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from pgcluster import PgCluster

PROGRAM = """
import asyncio, sys
import sqlalchemy as sa
from smtpsettings.store.database import Database

db = Database(sys.argv[1])
db.write_sync(lambda c: c.execute(sa.text("CREATE TABLE t (x INTEGER)")))
asyncio.run(db.write_grouped(lambda c: c.execute(sa.text("INSERT INTO t VALUES (1)"))))
assert db.read_sync(lambda c: c.execute(sa.text("SELECT count(*) FROM t")).scalar()) == 1
db.dispose()
print(sorted(name for name in sys.modules if name.split(".")[0] in ("psycopg", "psycopg_binary")))
"""


def loaded(url: str) -> str:
    result = subprocess.run([sys.executable, "-c", PROGRAM, url], check=False, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_a_sqlite_database_never_imports_psycopg(tmp_path: Path) -> None:
    assert loaded(f"sqlite:///{tmp_path / 'db.sqlite'}") == "[]"


def test_a_postgresql_database_does(pg_cluster: PgCluster) -> None:
    assert "'psycopg'" in loaded(pg_cluster.create_database())
