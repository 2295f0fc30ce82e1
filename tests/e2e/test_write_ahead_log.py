"""A running server on SQLite cuts its write-ahead log back once a burst of outgoing mail is over.

While the burst is accepted and delivered, a read transaction on a connection of the test's own is held
open, as a long reader (an online backup) would: no frame can be copied meanwhile, so the log grows with
every message. Once it ends, the server alone has to bring the file back to its limit.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from serverkit import make_portal, start_server
from smtp_peers import smtp_peer

from smtpsettings.domain.accounts import Role
from smtpsettings.store.database import WAL_SIZE_LIMIT


def test_the_log_a_burst_grew_is_cut_back_to_the_limit_once_the_burst_is_over(tmp_path: Path) -> None:
    with smtp_peer() as (port, inbox):
        server = start_server(tmp_path / "data", {"SMTPSETTINGS_OUTBOX_MESSAGES_PER_MINUTE": "1000000"})
        wal = server.db_path.with_name(server.db_path.name + "-wal")
        try:
            portal = make_portal(server)
            with portal.client(Role.ADMIN) as c:
                settings = {"host": "127.0.0.1", "port": port, "senderAddress": "noreply@example.com"}
                assert c.post("/api/2.0/smtpsettings/smtp", json=settings).status_code == 200
                reader = sqlite3.connect(server.db_path, isolation_level=None)
                try:
                    reader.execute("BEGIN")
                    reader.execute("SELECT count(*) FROM portals").fetchall()
                    sent = 0
                    while wal.stat().st_size <= 2 * WAL_SIZE_LIMIT:
                        assert sent < 3000, f"{sent} messages grew the log to {wal.stat().st_size} bytes only"
                        message = {"to": [f"m{sent}@x.test"], "subject": f"Burst {sent}", "text": "Hello."}
                        response = c.post("/api/2.0/smtpsettings/messages", json=message)
                        assert response.status_code == 202, response.text
                        sent += 1
                    grown = wal.stat().st_size
                    reader.execute("COMMIT")
                finally:
                    reader.close()
            deadline = time.monotonic() + 60
            while len(inbox.messages) < sent or wal.stat().st_size > WAL_SIZE_LIMIT:
                assert time.monotonic() < deadline, (
                    f"{len(inbox.messages)} of {sent} delivered, log {wal.stat().st_size} bytes (was {grown})"
                )
                time.sleep(0.1)
        finally:
            server.stop()
