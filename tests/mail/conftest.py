"""Real SMTP servers for the mail tests: aiosmtpd in the test's own event loop.

Every server listens on 127.0.0.1 (port 0: a free port), certificates come
from a trustme CA generated at run time, and everything is closed at teardown.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trustme
from aiosmtpd.smtp import SMTP
from mailservers import NTLM_DOMAIN, NTLM_USER, PASSWORD, SERVER_NAME, RunningServer, Sink, StartServer

from oauthkit import oauth_provider, oauth_provider_tls, xoauth2_smtp  # noqa: F401 - fixtures for the suite


@pytest.fixture(scope="session")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="session")
def server_tls_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(context)
    return context


@pytest.fixture
def ca_file(ca: trustme.CA, tmp_path: Path) -> str:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


@pytest.fixture
async def start_server() -> AsyncIterator[StartServer]:
    """Factory: ``await start_server(handler, host=..., port=0, implicit_tls=ctx, protocol=SMTP, **smtp_kwargs)``."""
    loop = asyncio.get_running_loop()
    servers: list[asyncio.Server] = []

    async def start(
        handler: Sink | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        implicit_tls: ssl.SSLContext | None = None,
        protocol: type[SMTP] = SMTP,
        **smtp_kwargs: Any,
    ) -> RunningServer:
        sink = handler if handler is not None else Sink()
        smtp_kwargs.setdefault("hostname", SERVER_NAME)
        server = await loop.create_server(
            lambda: protocol(sink, loop=loop, **smtp_kwargs), host, port, ssl=implicit_tls
        )
        servers.append(server)
        bound_port = server.sockets[0].getsockname()[1]
        return RunningServer(host, bound_port, sink)

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()


@pytest.fixture
async def tarpit() -> AsyncIterator[int]:
    """A server that accepts TCP connections and never says anything."""
    writers: list[asyncio.StreamWriter] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        await reader.read()  # returns when the client gives up
        writer.close()

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    server.close()
    for writer in writers:
        writer.close()
    await server.wait_closed()


@pytest.fixture
def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def ntlm_user_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "ntlm_users"
    path.write_text(f"{NTLM_DOMAIN}:{NTLM_USER}:{PASSWORD}\n", encoding="utf-8")
    monkeypatch.setenv("NTLM_USER_FILE", str(path))
