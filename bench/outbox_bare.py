"""The baseline of the outbox figure: a bare aiosmtplib loop, one connection per portal, as fast as it goes.

    python bench/outbox_bare.py --port 2525 --portals 100 --messages 5000 --text-bytes 1000 --html-bytes 2000

Builds the messages first, untimed (the server builds its messages at acceptance, before the clock starts),
with the service's own ``build_message`` and ``flatten`` so they are the same size as the outbox's. Then,
timed: each portal's task opens one connection (EHLO), sends its share of the messages one after another
with ``sendmail`` and says QUIT, all portals at once, as the dispatcher's lanes do. Prints one JSON line:
wall seconds, this process's CPU seconds, messages sent. ``bench/outbox.py`` runs it pinned to the
server's core, so both sides pay the same CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import NamedTuple

import aiosmtplib

from smtpsettings.mail.message import build_message, flatten, new_message_id


def body_of(size: int, kind: str) -> str:
    """Filler text of about ``size`` characters, in lines a mail reader would show (none over 78)."""
    line = "The quick brown fox jumps over the lazy dog, again and again. " if kind == "text" else "<p>The quick brown fox jumps over the lazy dog.</p>\n"
    return (line * (size // len(line) + 1))[:size]


class Built(NamedTuple):
    sender: str
    to: str
    subject: str
    message_id: str
    content: bytes
    smtputf8: bool


def one_message(portal: int, i: int, text_bytes: int, html_bytes: int) -> Built:
    """Message ``i`` of portal number ``portal`` (``p000123.bench``, as bench/common.py names them)."""
    sender = f"docspace@p{portal:06d}.bench"
    to = f"user{i}@example.test"
    subject = f"Notification {i}"
    message_id = new_message_id(sender.rpartition("@")[2])
    content, smtputf8 = flatten(
        build_message(
            sender_address=sender,
            sender_display_name="DocSpace",
            to=[to],
            subject=subject,
            text=body_of(text_bytes, "text") if text_bytes else None,
            html=body_of(html_bytes, "html") if html_bytes else None,
            message_id=message_id,
        )
    )
    return Built(sender, to, subject, message_id, content, smtputf8)


def messages_for(portal: int, count: int, text_bytes: int, html_bytes: int) -> list[tuple[str, list[str], bytes]]:
    """(sender, recipients, content) of ``count`` messages of portal ``portal``."""
    return [(b.sender, [b.to], b.content) for b in (one_message(portal, i, text_bytes, html_bytes) for i in range(count))]


async def portal_loop(port: int, messages: list[tuple[str, list[str], bytes]]) -> int:
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, local_hostname="bench.localhost", timeout=30, start_tls=False)
    await client.connect()
    for sender, recipients, content in messages:
        await client.sendmail(sender, recipients, content)
    await client.quit()
    return len(messages)


async def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--portals", type=int, default=100)
    p.add_argument("--messages", type=int, default=5000, help="in all, shared evenly among the portals")
    p.add_argument("--text-bytes", type=int, default=1000)
    p.add_argument("--html-bytes", type=int, default=2000)
    args = p.parse_args()
    shares = [args.messages // args.portals + (1 if i < args.messages % args.portals else 0) for i in range(args.portals)]
    batches = [messages_for(i, n, args.text_bytes, args.html_bytes) for i, n in enumerate(shares) if n]
    size = len(batches[0][0][2])
    cpu0, wall0 = time.process_time(), time.perf_counter()
    sent = sum(await asyncio.gather(*(portal_loop(args.port, b) for b in batches)))
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    print(json.dumps({"seconds": wall, "cpu_seconds": cpu, "sent": sent, "message_bytes": size}), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
