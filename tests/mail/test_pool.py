"""ConnectionPool against real aiosmtpd servers on 127.0.0.1."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from mailservers import CountingSMTP, Recorder, StartServer

from smtpsettings.mail import (
    ConnectError,
    ConnectionPool,
    MailTimeout,
    MailPolicy,
    SendError,
    SmtpConnection,
    SmtpTarget,
    TLSError,
    TokenCache,
)
from smtpsettings.mail.client import STEP_AUTHENTICATE, STEP_CONNECT
from smtpsettings.mail.nexthop import is_congestion

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
    with pytest.raises(ValueError):
        pool(per_host=0)


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


# -- connections per next hop ----------------------------------------------------------------------------


async def until(condition: Callable[[], bool]) -> None:
    for _ in range(100):  # generous: up to 5 s
        if condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the condition did not come true within 5 s")


async def settle() -> None:
    """Let every task started so far run up to its first real wait (here: its place in a queue)."""
    for _ in range(10):
        await asyncio.sleep(0)


async def test_connections_to_one_host_are_limited_across_keys(start_server: StartServer) -> None:
    sink = Recorder(data_delay=0.05)
    server = await start_server(sink, protocol=CountingSMTP)
    other = Recorder(data_delay=0.05)
    elsewhere = await start_server(other, protocol=CountingSMTP)  # another port: another next hop
    p = pool(per_key=2, per_host=3)
    sends = [send(p, f"portal{i}", server.port, f"user{i}.{n}@example.org") for i in range(10) for n in range(2)]
    sends += [send(p, f"away{i}", elsewhere.port) for i in range(3)]
    await asyncio.gather(*sends)
    await p.close()
    assert len(sink.messages) == 20
    assert sink.most_connected == 3  # every slot was used, and never a fourth connection
    assert sink.refused == 0
    assert other.most_connected == 3  # not held up by the busy host's limit


async def test_waiting_keys_get_the_slots_round_robin(start_server: StartServer) -> None:
    sink = Recorder()
    server = await start_server(sink, protocol=CountingSMTP)
    p = pool(per_key=4, per_host=1)
    async with p.connection("z", target(server.port)) as held:  # the only slot
        await held.send(SENDER, ["z@example.org"], CONTENT)
        waiting = [asyncio.create_task(send(p, "a", server.port, f"a{n}@example.org")) for n in range(3)]
        await settle()
        waiting.append(asyncio.create_task(send(p, "b", server.port, "b0@example.org")))
        await settle()
    await asyncio.wait_for(asyncio.gather(*waiting), 10)
    await p.close()
    order = [envelope.rcpt_tos[0] for envelope in sink.messages]
    # First in, first out would be z a0 a1 a2 b0: b would wait for all of a's messages.
    assert order == ["z@example.org", "a0@example.org", "b0@example.org", "a1@example.org", "a2@example.org"]
    assert sink.most_connected == 1
    # z's idle connection closed for a, a's for b, b's for a; a's last message took over a's connection.
    assert len(sink.peers) == 4


async def test_an_idle_connection_of_another_key_is_closed_when_the_host_is_at_its_limit(
    start_server: StartServer,
) -> None:
    sink = Recorder()
    server = await start_server(sink, protocol=CountingSMTP)
    p = pool(per_host=2, idle_seconds=30)
    first = await send(p, "a", server.port)
    second = await send(p, "b", server.port)
    assert first.usable and second.usable  # both kept for reuse: the host is at its limit
    third = await asyncio.wait_for(send(p, "c", server.port), 10)
    assert not first.usable  # the longest idle made room
    assert second.usable and third.usable
    again = await send(p, "b", server.port)
    await p.close()
    assert again is second
    assert len(sink.messages) == 4
    assert sink.most_connected == 2
    assert sink.refused == 0


async def test_a_waiter_that_gives_up_leaves_no_slot_behind(start_server: StartServer) -> None:
    server = await start_server(Recorder(), protocol=CountingSMTP)
    p = pool(per_host=1)
    async with p.connection("z", target(server.port)):
        gives_up = asyncio.create_task(send(p, "a", server.port))
        await settle()
        gives_up.cancel()
        with pytest.raises(asyncio.CancelledError):
            await gives_up
    await asyncio.wait_for(send(p, "b", server.port), 10)  # with the slot lost, this would wait for ever
    await p.close()


async def test_421_at_the_greeting_lowers_the_window_and_the_refused_wait_for_a_slot(
    start_server: StartServer,
) -> None:
    stall = asyncio.Event()
    sink = Recorder(max_connections=2, stall_data=stall)  # Postfix's client limit, scaled down
    server = await start_server(sink, protocol=CountingSMTP)
    p = pool(per_host=10)
    assert p.window("127.0.0.1", server.port) is None  # nothing learned before the first connection
    sends = [asyncio.create_task(send(p, f"k{i}", server.port, f"k{i}@example.org")) for i in range(2)]
    await until(lambda: sink.connected == 2)
    before = p.window("127.0.0.1", server.port)
    assert before is not None and before >= 5  # the initial window, raised by the two that opened
    sends += [asyncio.create_task(send(p, f"k{i}", server.port, f"k{i}@example.org")) for i in range(2, 5)]
    await until(lambda: sink.refused == 3)
    lowered = p.window("127.0.0.1", server.port)
    assert lowered is not None and lowered <= before - 3  # one less for each refusal
    assert 2 <= lowered < 3  # two connections are open: the window now allows just those
    await asyncio.sleep(0.3)
    assert not any(task.done() for task in sends)  # the refused wait for a slot: no error, no new attempt
    assert sink.refused == 3
    stall.set()
    await asyncio.wait_for(asyncio.gather(*sends), 10)
    await p.close()
    assert sorted(envelope.rcpt_tos[0] for envelope in sink.messages) == [f"k{i}@example.org" for i in range(5)]
    assert sink.refused <= 4  # at most one more: the window, raised by two opens past 3, probes once


async def test_a_421_with_nothing_else_open_reaches_the_caller(start_server: StartServer) -> None:
    sink = Recorder(max_connections=0)  # full with other clients' connections
    server = await start_server(sink, protocol=CountingSMTP)
    p = pool(per_host=10)
    for attempt in range(2):
        with pytest.raises(ConnectError) as info:
            await asyncio.wait_for(send(p, "k", server.port), 10)
        assert info.value.code == 421
        assert p.window("127.0.0.1", server.port) == 5 - (attempt + 1)  # from the initial 5, one less each
    await p.close()
    assert sink.refused == 2


async def test_connections_that_open_raise_the_window_up_to_per_host(start_server: StartServer) -> None:
    sink = Recorder()
    server = await start_server(sink, protocol=CountingSMTP)
    p = pool(per_host=7)
    for i in range(40):  # each key its own connection: 40 connections that opened
        await send(p, f"k{i}", server.port)
    assert p.window("127.0.0.1", server.port) == 7
    busy = Recorder(data_delay=0.1)
    server = await start_server(busy, protocol=CountingSMTP)
    p2 = pool(per_host=7)
    await asyncio.gather(*(send(p2, f"k{i}", server.port) for i in range(7)))
    assert busy.most_connected == 5  # a fresh next hop starts at 5 ...
    await asyncio.gather(*(send(p2, f"j{i}", server.port) for i in range(40)))
    await asyncio.gather(*(send(p2, f"m{i}", server.port) for i in range(14)))
    await p.close()
    await p2.close()
    assert busy.most_connected == 7  # ... and reaches per_host once connections keep opening


@pytest.mark.parametrize(
    ("error", "congestion"),
    [
        (ConnectError("Server refused the connection: 421 too many", step=STEP_CONNECT, code=421), True),
        (ConnectError("Connection refused", step=STEP_CONNECT), True),
        (ConnectError("Server refused the connection: 554 no service", step=STEP_CONNECT, code=554), False),
        (TLSError("Certificate verify failed", step=STEP_CONNECT), False),
        (ConnectError("closed the connection unexpectedly", step=STEP_AUTHENTICATE), False),
    ],
)
def test_only_refusals_before_the_session_count_as_congestion(error: ConnectError, congestion: bool) -> None:
    assert is_congestion(error) is congestion


async def test_a_server_that_never_let_a_connection_in_fails_every_request_once() -> None:
    """A tarpit (or a server refusing everyone) is not "up but full": each request fails after one try.

    Had the refusals been taken for congestion while the other request was still opening, the requests would
    go round in the pool for ever instead of reporting the dead server to the dispatcher.
    """
    accepted: list[asyncio.StreamWriter] = []

    async def silent(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)  # held open, never a greeting

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    p = pool(per_host=10)
    try:
        results = await asyncio.wait_for(
            asyncio.gather(*(send(p, "k" if i % 2 else "j", port) for i in range(4)), return_exceptions=True), 30
        )
    finally:
        await p.close()
        for writer in accepted:
            writer.close()
        server.close()
    assert all(isinstance(r, MailTimeout) for r in results), results
    assert len(accepted) == 4  # one connection a request: none tried again
