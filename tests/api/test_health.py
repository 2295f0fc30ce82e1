"""``/api/2.0/health/ready`` follows the database, ``/health/live`` does not; ``/metrics`` survives an outage."""

from __future__ import annotations

import time
import warnings
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from litestar.exceptions import LitestarDeprecationWarning
from prometheus_client.parser import text_string_to_metric_families

from pgcluster import PgCluster
from serverkit import Server, start_server
from smtpsettings.app import create_app
from smtpsettings.config import load_settings

READY = "/api/2.0/health/ready"
LIVE = "/api/2.0/health/live"
OK = {"response": "ok", "count": 1, "status": 0, "statusCode": 200}


def _gauges(text: str) -> dict[str, float]:
    return {
        s.name + "".join(f"{{{v}}}" for v in s.labels.values()): s.value
        for f in text_string_to_metric_families(text)
        if f.type == "gauge"
        for s in f.samples
    }


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    """The app built in this process on SQLite, called without a network in between."""
    with warnings.catch_warnings():
        # The API docs' routes use a parameter style Litestar now warns about; not what is tested here.
        warnings.simplefilter("ignore", LitestarDeprecationWarning)
        app = create_app(load_settings({"SMTPSETTINGS_DATA_DIR": str(tmp_path / "data")}))
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://localhost") as c:
            yield c
    finally:
        await app.app.state.services.close()  # type: ignore[attr-defined]


async def test_ready_answers_the_live_envelope_without_credentials_or_json_accept(client: httpx.AsyncClient) -> None:
    for accept in (None, "text/html"):
        r = await client.get(READY, headers={"Accept": accept} if accept else {})
        assert r.status_code == 200, r.text
        assert r.headers["content-type"] == "application/json"
        assert r.json() == OK == (await client.get(LIVE)).json()


async def test_metrics_in_process_read_the_queue_from_the_database(client: httpx.AsyncClient) -> None:
    r = await client.get("/metrics", headers={"Accept": "text/html"})
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    gauges = _gauges(r.text)
    assert gauges["smtpsettings_database_up"] == 1
    assert gauges["smtpsettings_outbox_messages{queued}"] == 0


def _until(server: Server, path: str, status: int, within: float = 30) -> httpx.Response:
    """Ask (on new connections, so either worker may answer) until ``path`` answers ``status``."""
    deadline = time.monotonic() + within
    while True:
        with httpx.Client(base_url=server.base_url, timeout=20) as c:
            r = c.get(path)
        if r.status_code == status or time.monotonic() > deadline:
            return r
        time.sleep(0.2)


def test_ready_follows_the_database_live_does_not_and_metrics_keep_answering(tmp_path: Path, own_cluster: PgCluster) -> None:
    server = start_server(
        tmp_path / "data",
        {"SMTPSETTINGS_DATABASE_URL": own_cluster.create_database(), "SMTPSETTINGS_DATABASE_TIMEOUT": "2"},
        workers=2,
    )
    try:
        for _ in range(6):
            assert _until(server, READY, 200, within=0).json() == OK
        assert _gauges(_until(server, "/metrics", 200).text)["smtpsettings_database_up"] == 1

        own_cluster.stop()
        for _ in range(6):  # each worker, whichever answers, finds the database gone
            r = _until(server, READY, 503, within=0)
            assert r.status_code == 503, r.text
            body = r.json()
            assert body["status"] == 1 and body["statusCode"] == 503
            assert body["error"]["type"] == "ServiceUnavailable" and body["error"]["stack"] is None
            assert "postgres" not in r.text.lower()  # no connection string or driver text
            assert r.headers["retry-after"] == "5"
            live = _until(server, LIVE, 200, within=0)
            assert live.status_code == 200 and live.json() == OK

            scrape = _until(server, "/metrics", 200, within=0)
            assert scrape.status_code == 200
            gauges = _gauges(scrape.text)
            assert gauges["smtpsettings_database_up"] == 0
            assert not any(name.startswith("smtpsettings_outbox_messages") for name in gauges)

        own_cluster.start()
        # A worker may spend one answer finding its pooled connections dead; then it is ready again.
        for _ in range(6):
            r = _until(server, READY, 200)
            assert r.status_code == 200 and r.json() == OK
    finally:
        server.stop()
