"""A local SMTP server for the benchmarks: aiosmtpd on 127.0.0.1 that accepts and drops every message.

    python bench/smtpsink.py --port 2525 [--delay 1.0] [--max-connections 50] [--report FILE]
                             [--answer accept|silent|421]

``--delay`` holds the answer to DATA that many seconds, as a remote server over a real network does, so
that test jobs stay running long enough to overlap. ``--max-connections`` answers ``421`` to every
connection beyond that many open at once and hangs up, as Postfix does beyond its client connection limit
(``smtpd_client_connection_count_limit``, 50 by default). ``--report`` writes, when the sink stops, one JSON
object: messages delivered, connections refused, the most open at once, and the Message-ID of every message
delivered (in arrival order, duplicates included). ``--answer silent`` accepts connections and never says
a word (a tarpit); ``--answer 421`` greets with 421 and hangs up. Prints ``READY <port>`` once listening, and
``connections <n>`` (connections accepted) when it stops; stops on SIGTERM/SIGINT, and with ``--watch-stdin``
when its stdin closes (so it never outlives the benchmark).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import signal
import sys
import threading
from pathlib import Path

from aiosmtpd.smtp import SMTP, Envelope

_MESSAGE_ID = re.compile(rb"^message-id:[ \t]*(\S+)", re.IGNORECASE | re.MULTILINE)


class Sink:
    def __init__(self, delay: float, max_connections: int | None, keep_ids: bool) -> None:
        self.delay = delay
        self.count = 0
        self.max_connections = max_connections
        self.connected = 0
        self.most_connected = 0
        self.refused = 0
        self.message_ids: list[str] | None = [] if keep_ids else None

    async def handle_DATA(self, server: SMTP, session: object, envelope: Envelope) -> str:
        if self.delay:
            await asyncio.sleep(self.delay)
        self.count += 1
        if self.message_ids is not None:
            content = envelope.original_content or b""
            found = _MESSAGE_ID.search(content.split(b"\r\n\r\n", 1)[0])
            self.message_ids.append(found.group(1).decode("ascii", "replace") if found else "")
        return "250 2.0.0 OK: queued"


class CountingSMTP(SMTP):
    """Counts open connections on the sink; beyond its limit, 421 before the greeting and hang up."""

    _refused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        sink = self.event_handler
        if self.transport is None:  # the second call, after STARTTLS, is the same connection
            if sink.max_connections is not None and sink.connected >= sink.max_connections:
                self._refused = True
                sink.refused += 1
                assert isinstance(transport, asyncio.WriteTransport)
                transport.write(b"421 4.7.0 sink.localhost Error: too many connections\r\n")
                transport.close()
                return
            sink.connected += 1
            sink.most_connected = max(sink.most_connected, sink.connected)
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        if self._refused:
            return
        self.event_handler.connected -= 1
        super().connection_lost(error)


class Unwelcoming(asyncio.Protocol):
    """Below SMTP: says ``greeting`` and hangs up, or without one holds the connection and says nothing."""

    def __init__(self, greeting: bytes | None) -> None:
        self.greeting = greeting

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self.greeting is not None:
            assert isinstance(transport, asyncio.WriteTransport)
            transport.write(self.greeting)
            transport.close()


async def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--delay", type=float, default=0.0)
    p.add_argument("--max-connections", type=int, default=None, help="answer 421 beyond this many open connections")
    p.add_argument("--report", type=Path, default=None, help="write counts and Message-IDs here when stopping")
    p.add_argument("--answer", choices=("accept", "silent", "421"), default="accept")
    p.add_argument("--watch-stdin", action="store_true", help="stop when stdin reaches its end")
    args = p.parse_args()
    loop = asyncio.get_running_loop()
    handler = Sink(args.delay, args.max_connections, args.report is not None)
    connections = 0

    def protocol() -> asyncio.BaseProtocol:
        nonlocal connections
        connections += 1
        if args.answer == "silent":
            return Unwelcoming(None)
        if args.answer == "421":
            return Unwelcoming(b"421 4.3.2 Service not available\r\n")
        # hostname given, so aiosmtpd does not look up this machine's FQDN
        return CountingSMTP(handler, hostname="sink.localhost", ident="bench sink", enable_SMTPUTF8=True)

    server = await loop.create_server(protocol, "127.0.0.1", args.port, backlog=1024)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if args.watch_stdin:  # the benchmark holds our stdin open: when it goes away, so do we
        threading.Thread(target=lambda: (sys.stdin.buffer.read(), loop.call_soon_threadsafe(stop.set)), daemon=True).start()
    print(f"READY {args.port}", flush=True)
    await stop.wait()
    server.close()
    if args.report is not None:
        report = {"delivered": handler.count, "refused": handler.refused, "most_connected": handler.most_connected,
                  "message_ids": handler.message_ids}
        args.report.write_text(json.dumps(report))
    print(f"delivered {handler.count}", file=sys.stderr, flush=True)
    print(f"connections {connections}", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
