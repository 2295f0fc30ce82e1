"""A local SMTP server for the test-mail benchmark: aiosmtpd on 127.0.0.1 that accepts and drops every message.

    python bench/smtpsink.py --port 2525 [--delay 1.0] [--answer accept|silent|421]

``--delay`` holds the answer to DATA that many seconds, as a remote server over a real network does, so
that test jobs stay running long enough to overlap. ``--answer silent`` accepts connections and never says
a word (a tarpit); ``--answer 421`` greets with 421 and hangs up. Prints ``READY <port>`` once listening,
and ``connections <n>`` when it stops; stops on SIGTERM/SIGINT, and with ``--watch-stdin`` when its stdin
closes (so it never outlives the benchmark).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import threading

from aiosmtpd.smtp import SMTP


class Sink:
    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.count = 0

    async def handle_DATA(self, server: SMTP, session: object, envelope: object) -> str:
        if self.delay:
            await asyncio.sleep(self.delay)
        self.count += 1
        return "250 2.0.0 OK: queued"


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
    p.add_argument("--answer", choices=("accept", "silent", "421"), default="accept")
    p.add_argument("--watch-stdin", action="store_true", help="stop when stdin reaches its end")
    args = p.parse_args()
    loop = asyncio.get_running_loop()
    handler = Sink(args.delay)
    connections = 0

    def protocol() -> asyncio.BaseProtocol:
        nonlocal connections
        connections += 1
        if args.answer == "silent":
            return Unwelcoming(None)
        if args.answer == "421":
            return Unwelcoming(b"421 4.3.2 Service not available\r\n")
        # hostname given, so aiosmtpd does not look up this machine's FQDN
        return SMTP(handler, hostname="sink.localhost", ident="bench sink", enable_SMTPUTF8=True)

    server = await loop.create_server(protocol, "127.0.0.1", args.port, backlog=1024)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if args.watch_stdin:  # the benchmark holds our stdin open: when it goes away, so do we
        threading.Thread(target=lambda: (sys.stdin.buffer.read(), loop.call_soon_threadsafe(stop.set)), daemon=True).start()
    print(f"READY {args.port}", flush=True)
    await stop.wait()
    server.close()
    print(f"delivered {handler.count}", file=sys.stderr, flush=True)
    print(f"connections {connections}", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
