"""ConnectionPool against real aiosmtpd servers on 127.0.0.1."""

from __future__ import annotations

import asyncio

import pytest
from mailservers import Recorder, StartServer

from smtpsettings.mail import (
    ConnectError,
    ConnectionPool,
    MailPolicy,
    SendError,
    SmtpConnection,
    SmtpTarget,
    TokenCache,
)

FAST = MailPolicy(connect_timeout=2, command_timeout=2, total_timeout=10, helo_name="client.test")
SENDER = "noreply@example.com"
CONTENT = b"From: noreply@example.com\r\nTo: ann@example.org\r\nSubject: Hi\r\n\r\nBody\r\n"


def target(port: int) -> SmtpTarget:
    return SmtpTarget(host="127.0.0.1", port=port, enable_ssl=False, enable_auth=False)


def pool(**kw: float) -> ConnectionPool:
    return ConnectionPool(FAST, TokenCache(), **kw)  # type: ignore[arg-type]


async def send(p: ConnectionPool, key: object, port: int, recipient: str = "ann@example.org") -> SmtpConnection:
    async with p.connection(key, target(port)) as connection:
        await connection.send(SENDER, [recipient], CONTENT)
        return connection


async def test_sequential_messages_with_one_key_share_a_connection(start_server: StartServer) -> None:
    sink = Recorder()
    server = await start_server(sink)
    p = pool()
    used = {id(await send(p, ("portal", "v1"), server.port)) for _ in range(5)}
    await p.close()
    assert len(sink.messages) == 5
    assert len(sink.peers) == 1
    assert len(used) == 1


async def test_a_different_key_gets_its_own_connection(start_server: StartServer) -> None:
    sink = Recorder()
    server = await start_server(sink)
    p = pool()
    first = await send(p, ("portal", "v1"), server.port)
    second = await send(p, ("portal", "v2"), server.port)  # the settings were saved: a new fingerprint
    again = await send(p, ("portal", "v1"), server.port)
    await p.close()
    assert first is again and second is not first
    assert len(sink.peers) == 2


async def test_never_more_than_per_key_connections_at_once(start_server: StartServer) -> None:
    sink = Recorder(data_delay=0.05)
    server = await start_server(sink)
    p = pool(per_key=2)
    await asyncio.gather(*(send(p, "k", server.port, f"user{i}@example.org") for i in range(8)))
    await p.close()
    assert len(sink.messages) == 8
    assert sink.most_active == 2  # both slots were used, and never a third
    assert len(sink.peers) == 2


async def test_keys_do_not_wait_for_each_other(start_server: StartServer) -> None:
    sink = Recorder(data_delay=0.1)
    server = await start_server(sink)
    p = pool(per_key=1)
    await asyncio.gather(*(send(p, key, server.port) for key in ("a", "b", "c")))
    await p.close()
    assert sink.most_active == 3


async def test_idle_connections_are_closed_after_idle_seconds(start_server: StartServer) -> None:
    sink = Recorder()
    server = await start_server(sink)
    p = pool(idle_seconds=0.1)
    first = await send(p, "k", server.port)
    assert first.usable  # kept for the next message
    for _ in range(100):  # generous: up to 5 s for a 0.1 s idle time
        if not first.usable:
            break
        await asyncio.sleep(0.05)
    assert not first.usable
    second = await send(p, "k", server.port)
    await p.close()
    assert second is not first
    assert len(sink.peers) == 2


async def test_a_connection_is_replaced_after_max_messages(start_server: StartServer) -> None:
    sink = Recorder()
    server = await start_server(sink)
    p = pool(max_messages=2)
    for _ in range(5):
        await send(p, "k", server.port)
    await p.close()
    assert len(sink.messages) == 5
    assert len(sink.peers) == 3


async def test_a_refusal_keeps_the_connection_but_a_421_drops_it(start_server: StartServer) -> None:
    sink = Recorder(
        rcpt_replies={"gone@example.org": "550 5.1.1 No such user", "busy@example.org": "421 4.3.2 Closing"}
    )
    server = await start_server(sink)
    p = pool()
    refused = await send(p, "k", server.port, "gone@example.org")  # refused alone: no DATA, the session stays
    assert refused.usable and refused.messages_sent == 0
    await send(p, "k", server.port)
    assert len(sink.peers) == 1
    with pytest.raises(SendError) as info:
        await send(p, "k", server.port, "busy@example.org")
    assert info.value.code == 421
    await send(p, "k", server.port)
    await p.close()
    assert len(sink.peers) == 2
    assert len(sink.messages) == 2


async def test_a_failed_open_frees_its_slot(closed_port: int, start_server: StartServer) -> None:
    p = pool(per_key=1)
    for _ in range(3):  # with the slot kept, the second attempt would wait for ever
        with pytest.raises(ConnectError):
            await asyncio.wait_for(send(p, "k", closed_port), 5)
    await p.close()


async def test_close_closes_idle_connections_and_refuses_new_requests(start_server: StartServer) -> None:
    sink = Recorder()
    server = await start_server(sink)
    p = pool()
    a = await send(p, "a", server.port)
    b = await send(p, "b", server.port)
    assert a.usable and b.usable
    await p.close()
    assert not a.usable and not b.usable
    with pytest.raises(RuntimeError, match="closed"):
        await send(p, "a", server.port)


async def test_a_connection_in_use_at_close_is_closed_when_given_back(start_server: StartServer) -> None:
    server = await start_server(Recorder())
    p = pool()
    async with p.connection("k", target(server.port)) as connection:
        await p.close()
        await connection.send(SENDER, ["ann@example.org"], CONTENT)  # its holder may finish
    for _ in range(100):
        if not connection.usable:
            break
        await asyncio.sleep(0.05)
    assert not connection.usable


def test_bad_limits_are_refused() -> None:
    with pytest.raises(ValueError):
        pool(per_key=0)
    with pytest.raises(ValueError):
        pool(idle_seconds=0)


async def test_an_idle_connection_the_server_closed_is_replaced(start_server: StartServer) -> None:
    sink = Recorder()
    server = await start_server(sink, timeout=0.2)  # aiosmtpd hangs up on clients idle this long
    p = pool(idle_seconds=30)
    first = await send(p, "k", server.port)
    for _ in range(100):
        if not first.usable:
            break
        await asyncio.sleep(0.05)
    assert not first.usable
    second = await send(p, "k", server.port)  # not an error: a fresh connection
    await p.close()
    assert second is not first
    assert len(sink.messages) == 2
