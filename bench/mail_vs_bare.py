"""The mail library against a bare aiosmtplib send of the same message, interleaved in one event loop.

    python bench/mail_vs_bare.py      # median of 40 sends each to a local aiosmtpd; prints both and the ratio

Separates the cost of smtpsettings.mail (resolution, deny-network check, transcript, diagnostics) from the
cost of the test job around it (figure 3). Loopback only.
"""

from __future__ import annotations

import asyncio
import socket
import statistics
import time

import aiosmtplib
from aiosmtpd.controller import Controller

from smtpsettings.mail import MailPolicy, SmtpTarget, build_test_message, send_message


class Sink:
    async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
        return "250 OK"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def main() -> None:
    port = free_port()
    c = Controller(Sink(), hostname="127.0.0.1", port=port)
    c.start()
    msg = build_test_message(
        sender_address="a@example.com", sender_display_name="A", recipient="b@example.com"
    )
    t = SmtpTarget(host="127.0.0.1", port=port, enable_ssl=False, enable_auth=False)
    pol = MailPolicy(helo_name="bench.localhost")
    lib, bare = [], []
    for _ in range(40):
        s = time.perf_counter()
        await send_message(t, msg, pol)
        lib.append(time.perf_counter() - s)
        s = time.perf_counter()
        await aiosmtplib.send(msg, hostname="127.0.0.1", port=port, local_hostname="bench.localhost")
        bare.append(time.perf_counter() - s)
    library_ms, bare_ms = statistics.median(lib) * 1000, statistics.median(bare) * 1000
    print(
        f"library {library_ms:.2f} ms, bare aiosmtplib.send {bare_ms:.2f} ms, ratio {library_ms / bare_ms:.2f}"
    )
    c.stop()


asyncio.run(main())
