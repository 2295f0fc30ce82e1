"""Reads under load while PostgreSQL restarts: every answer is 200 or a 503 envelope, and reads recover by themselves.

The request path's lookups run on connections of their own (store/database.py's lookup pool); a restart
kills all of them at once, idle and busy. What a client may see meanwhile is a 503 with Retry-After, never
a 500, a hang or a dropped connection, and once the database is back the same server answers again without
being restarted.
"""

from __future__ import annotations

import collections
import threading
import time
from pathlib import Path

import httpx

from pgcluster import PgCluster
from serverkit import VALID_SETTINGS, Server, make_portal, start_server
from smtpsettings.domain.accounts import Role

PATH = "/api/2.0/smtpsettings/smtp"


def test_reads_under_load_answer_200_or_503_across_a_restart_and_recover(tmp_path: Path, own_cluster: PgCluster) -> None:
    server: Server = start_server(
        tmp_path / "data",
        {"SMTPSETTINGS_DATABASE_URL": own_cluster.create_database(), "SMTPSETTINGS_DATABASE_TIMEOUT": "2"},
    )
    try:
        portal = make_portal(server)
        token = portal.sign_in(Role.ADMIN)
        with portal.client(Role.ADMIN) as c:
            assert c.post(PATH, json=VALID_SETTINGS).status_code == 200
        headers = {"Host": portal.hostname, "Cookie": f"asc_auth_key={token}"}
        answers: collections.Counter[int] = collections.Counter()
        problems: list[str] = []
        stop = threading.Event()
        counting = threading.Lock()

        def reader() -> None:
            with httpx.Client(base_url=server.base_url, headers=headers, timeout=15) as client:
                while not stop.is_set():
                    r = client.get(PATH)
                    with counting:
                        answers[r.status_code] += 1
                    if r.status_code == 200:
                        if r.json()["response"]["host"] != VALID_SETTINGS["host"]:
                            problems.append(r.text)
                    elif r.status_code == 503:
                        body = r.json()
                        if body["statusCode"] != 503 or r.headers.get("retry-after") != "5" or body["error"]["stack"] is not None:
                            problems.append(r.text)
                    else:
                        problems.append(f"{r.status_code} {r.text}")

        threads = [threading.Thread(target=reader) for _ in range(8)]
        for t in threads:
            t.start()
        time.sleep(1)
        before = answers[200]
        own_cluster.stop()  # every lookup connection dies, idle or busy
        time.sleep(1.5)
        own_cluster.start()
        deadline = time.monotonic() + 30
        recovered_at = answers[200]
        while answers[200] < recovered_at + 200 and time.monotonic() < deadline:
            time.sleep(0.1)
        stop.set()
        for t in threads:
            t.join(30)

        assert not problems, problems[:3]
        assert set(answers) <= {200, 503}, answers
        assert before > 0 and answers[503] > 0, answers  # the outage was seen, and answered as one
        assert answers[200] >= recovered_at + 200, answers  # reads came back without a server restart
    finally:
        server.stop()
