"""Two server processes on one PostgreSQL database behave as one service, and survive the database going away."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pgcluster import PgCluster
from serverkit import VALID_SETTINGS, Portal, Server, make_portal, start_server, wait_for_result
from smtp_peers import smtp_peer, tarpit

from smtpsettings.domain.accounts import Role

SETTINGS = "/api/2.0/smtpsettings/smtp"
TEST = SETTINGS + "/test"
STATUS = TEST + "/status"
AUTH = "/api/2.0/authentication"


@pytest.fixture(scope="module")
def pair(pg_cluster: PgCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Server]]:
    """Instances A and B: separate processes and data dirs sharing one database and one key ring."""
    url = pg_cluster.create_database()
    base = tmp_path_factory.mktemp("pair")
    env = {
        "SMTPSETTINGS_DATABASE_URL": url,
        "SMTPSETTINGS_DATABASE_TIMEOUT": "2",
        "SMTPSETTINGS_LOGIN_MAX_FAILURES_PER_ACCOUNT": "4",
        "SMTPSETTINGS_SMTP_TEST_LIMIT": "3",
        "SMTPSETTINGS_SMTP_CONNECT_TIMEOUT": "3",
        "SMTPSETTINGS_SMTP_COMMAND_TIMEOUT": "3",
        "SMTPSETTINGS_SMTP_JOB_TIMEOUT": "6",
    }
    a = start_server(base / "a", env)
    # Every instance needs the same key ring: B gets a copy of A's, as an operator would deploy it.
    (base / "b").mkdir(mode=0o700)
    (base / "b" / "keys.json").write_bytes((base / "a" / "keys.json").read_bytes())
    b = start_server(base / "b", env)
    a.pg = b.pg = pg_cluster
    yield a, b
    a.stop()
    b.stop()


def on(portal: Portal, server: Server, role: Role | None = Role.ADMIN, **kwargs: Any) -> httpx.Client:
    """A client of ``portal`` talking to one particular instance."""
    original = portal.server
    portal.server = server
    try:
        return portal.client(role, **kwargs)
    finally:
        portal.server = original


def test_a_save_on_a_is_what_b_returns_next(pair: tuple[Server, Server]) -> None:
    a, b = pair
    portal = make_portal(a)
    with on(portal, a) as ca, on(portal, b) as cb:
        for port in (2501, 2502, 2503):
            assert ca.post(SETTINGS, json={**VALID_SETTINGS, "port": port}).status_code == 200
            assert cb.get(SETTINGS).json()["response"]["port"] == port
        assert cb.delete(SETTINGS).status_code == 200
        assert ca.get(SETTINGS).json()["response"]["isDefaultSettings"] is True


def test_a_token_from_a_works_on_b_and_logout_on_b_ends_it_on_a(pair: tuple[Server, Server]) -> None:
    a, b = pair
    portal = make_portal(a)
    with on(portal, a) as ca:
        token = ca.headers["Authorization"]
    with on(portal, b, None, headers={"Authorization": token}) as cb:
        assert cb.get(SETTINGS).status_code == 200
        assert cb.post(AUTH + "/logout").status_code == 200
    with on(portal, a, None, headers={"Authorization": token}) as ca:
        assert ca.get(SETTINGS).status_code == 401


def test_a_password_saved_through_a_is_kept_by_a_save_through_b(pair: tuple[Server, Server]) -> None:
    a, b = pair
    portal = make_portal(a)
    with on(portal, a) as ca, on(portal, b) as cb:
        ca.post(SETTINGS, json=VALID_SETTINGS)
        without = {k: v for k, v in VALID_SETTINGS.items() if k != "credentialsUserPassword"}
        assert cb.post(SETTINGS, json={**without, "senderDisplayName": "B"}).status_code == 200


def test_sign_in_failures_are_counted_across_instances(pair: tuple[Server, Server]) -> None:
    a, b = pair
    portal = make_portal(a)
    email = portal.emails[Role.OWNER]
    statuses = []
    for server in (a, b, a, b, a):
        with on(portal, server, None) as c:
            statuses.append(c.post(AUTH, json={"userName": email, "password": "guess"}).status_code)
    assert statuses == [401, 401, 401, 401, 429]


def test_a_job_started_on_a_is_reported_by_b_and_not_started_twice(pair: tuple[Server, Server]) -> None:
    a, b = pair
    portal = make_portal(a)
    with tarpit() as port, on(portal, a) as ca, on(portal, b) as cb:
        ca.post(SETTINGS, json={**VALID_SETTINGS, "host": "127.0.0.1", "port": port, "enableAuth": False, "enableSSL": False})
        started = ca.get(TEST).json()["response"]
        from_b = cb.get(TEST).json()["response"]
        assert from_b["id"] == started["id"] and from_b["completed"] is False
        assert cb.get(STATUS).json()["response"]["id"] == started["id"]
        result = wait_for_result(cb)
    assert result["id"] == started["id"] and "No answer" in result["error"]


def test_the_test_limit_is_shared_across_instances(pair: tuple[Server, Server]) -> None:
    a, b = pair
    portal = make_portal(a)
    with smtp_peer() as (port, _), on(portal, a) as ca, on(portal, b) as cb:
        ca.post(SETTINGS, json={**VALID_SETTINGS, "host": "127.0.0.1", "port": port, "enableAuth": False, "enableSSL": False})
        statuses = []
        for client in (ca, cb, ca, cb):
            statuses.append(client.get(TEST).status_code)
            wait_for_result(client)
    assert statuses == [200, 200, 200, 429]


def test_concurrent_saves_on_both_leave_one_consistent_record_and_an_audit_row_each(pair: tuple[Server, Server]) -> None:
    a, b = pair
    portal = make_portal(a)
    ca, cb = on(portal, a), on(portal, b)
    barrier = threading.Barrier(2)
    statuses: list[int] = []

    def save(client: httpx.Client, tag: str) -> None:
        barrier.wait()
        for i in range(10):
            body = {**VALID_SETTINGS, "host": f"{tag}.example.com", "senderAddress": f"{tag}@example.com", "senderDisplayName": f"{tag}-{i}"}
            statuses.append(client.post(SETTINGS, json=body).status_code)

    threads = [threading.Thread(target=save, args=(ca, "alpha")), threading.Thread(target=save, args=(cb, "beta"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert statuses == [200] * 20
    final = ca.get(SETTINGS).json()["response"]
    tag = final["host"].split(".")[0]
    assert final["senderAddress"] == f"{tag}@example.com" and final["senderDisplayName"].startswith(tag)
    assert cb.get(SETTINGS).json()["response"] == final
    rows = a.query(
        "SELECT count(*) FROM audit_log l JOIN portals p ON p.id = l.portal_id WHERE p.hostname = :h AND l.action = 'save'",
        h=portal.hostname,
    )
    assert rows[0][0] == 20
    ca.close()
    cb.close()


def test_database_outage_gives_503_quickly_and_the_service_recovers(pair: tuple[Server, Server], pg_cluster: PgCluster) -> None:
    a, b = pair
    portal = make_portal(a)
    with on(portal, a) as ca, on(portal, b) as cb:
        assert ca.get(SETTINGS).status_code == 200
        pg_cluster.stop()
        try:
            for client in (ca, cb):
                started = time.monotonic()
                r = client.get(SETTINGS)
                elapsed = time.monotonic() - started
                assert r.status_code == 503, r.text
                assert r.json()["statusCode"] == 503 and "database" in r.json()["error"]["message"].lower()
                assert "retry-after" in r.headers
                assert elapsed < 6, f"a 503 took {elapsed:.1f} s"
        finally:
            pg_cluster.start()
        deadline = time.monotonic() + 20
        while True:
            statuses = [ca.get(SETTINGS).status_code, cb.get(SETTINGS).status_code]
            if statuses == [200, 200]:
                break
            assert time.monotonic() < deadline, f"no recovery: {statuses}"
            time.sleep(0.2)


def test_pool_exhaustion_answers_503_instead_of_piling_up(pg_cluster: PgCluster, tmp_path: Path) -> None:
    import psycopg

    url = pg_cluster.create_database()
    server = start_server(
        tmp_path / "small",
        {"SMTPSETTINGS_DATABASE_URL": url, "SMTPSETTINGS_DATABASE_POOL_SIZE": "1", "SMTPSETTINGS_DATABASE_TIMEOUT": "1"},
    )
    try:
        portal = make_portal(server)
        with on(portal, server) as c:
            assert c.get(SETTINGS).status_code == 200
            # Hold a lock on the portal's settings row so the one pooled connection is stuck behind it.
            c.post(SETTINGS, json=VALID_SETTINGS)
            tokens = [portal.sign_in(Role.ADMIN) for _ in range(4)]
            with psycopg.connect(url) as blocker:
                blocker.execute("SELECT * FROM smtp_settings FOR UPDATE")
                results: list[int] = []

                def call(token: str) -> None:
                    with on(portal, server, None, headers={"Authorization": token}) as other:
                        results.append(other.post(SETTINGS, json={**VALID_SETTINGS, "port": 2600}).status_code)

                threads = [threading.Thread(target=call, args=(token,)) for token in tokens]
                started = time.monotonic()
                for t in threads:
                    t.start()
                for t in threads:
                    t.join(30)
                elapsed = time.monotonic() - started
                blocker.rollback()
            assert results and set(results) == {503}, results
            assert elapsed < 10
            assert c.get(SETTINGS).status_code == 200
    finally:
        server.stop()


def test_a_database_that_stops_answering_gives_503_within_twice_the_timeout(pg_cluster: PgCluster, tmp_path: Path) -> None:
    url = pg_cluster.create_database()
    server = start_server(tmp_path / "frozen", {"SMTPSETTINGS_DATABASE_URL": url, "SMTPSETTINGS_DATABASE_TIMEOUT": "1"})
    try:
        portal = make_portal(server)
        with on(portal, server) as c, pg_cluster.frozen():
            # The request lookups (asyncio pool) and a sign-in's password check (a transaction in a worker
            # thread) each wait on a connection nothing answers on.
            for method, path, body in (("GET", SETTINGS, None), ("POST", AUTH, {"userName": "x@example.com", "password": "y"})):
                started = time.monotonic()
                r = c.request(method, path, json=body)
                elapsed = time.monotonic() - started
                assert r.status_code == 503, (path, r.text)
                assert "database" in r.json()["error"]["message"].lower()
                assert elapsed < 4, f"{method} {path}: a 503 took {elapsed:.1f} s"
        deadline = time.monotonic() + 20
        with on(portal, server) as c:
            while c.get(SETTINGS).status_code != 200:
                assert time.monotonic() < deadline, "no recovery after the database answered again"
                time.sleep(0.2)
    finally:
        server.stop()
