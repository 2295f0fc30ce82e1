"""The baseline of the test-mail figure: one plain aiosmtplib send of the test message, per line on stdin.

    python bench/bare_send.py --port 2525 --sender docspace@p000000.bench --recipient admin@p000000.bench

For every line read it builds the same message the service's test job sends (``build_test_message``),
sends it over a new connection with ``aiosmtplib.send`` and prints the wall time in milliseconds.
The benchmark runs it pinned to the server's core, so the baseline and the job pay the same CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

import aiosmtplib

from smtpsettings.mail import build_test_message


async def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--sender", required=True)
    p.add_argument("--recipient", required=True)
    args = p.parse_args()
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    print("READY", flush=True)
    while await reader.readline():
        started = time.perf_counter()
        message = build_test_message(sender_address=args.sender, sender_display_name="DocSpace", recipient=args.recipient)
        await aiosmtplib.send(message, hostname="127.0.0.1", port=args.port, local_hostname="bench.localhost", timeout=30)
        print(f"{(time.perf_counter() - started) * 1000:.3f}", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
