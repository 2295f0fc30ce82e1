"""The raw ASGI ceiling: the smallest ASGI app granian can serve, started the way ``smtpsettings serve`` starts.

    python bench/asgi_hello.py --port 8099            # serve it (one worker, HTTP/1.1 only, no access log)

It answers every request with the liveness body (55 bytes of JSON) and does nothing else: no routing, no
request log, no framework. Whatever a served request costs beyond this is the application's; figure 1 puts
its throughput first, as the ceiling the smtpsettings routes are measured against. ``HelloServer`` starts
it pinned to the server core, like ``common.Server``.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

_BODY = b'{"response":"ok","count":1,"status":0,"statusCode":200}'
_START = {
    "type": "http.response.start",
    "status": 200,
    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(_BODY)).encode())],
}
_MESSAGE = {"type": "http.response.body", "body": _BODY}


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """ASGI: lifespan acknowledged, every HTTP request answered 200 with the same body."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    await send(_START)
    await send(_MESSAGE)


class HelloServer:
    """This module served by granian (one worker) on ``port``, pinned to ``cpu``; a context manager."""

    def __init__(self, port: int, cpu: str) -> None:
        self.port = port
        self.cpu = cpu
        self.process: subprocess.Popen[bytes] | None = None

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def worker_pid(self) -> int:
        import psutil

        assert self.process is not None
        children = psutil.Process(self.process.pid).children(recursive=True)
        if not children:
            raise RuntimeError("no worker process found")
        return max(children, key=lambda c: c.memory_info().rss).pid

    def __enter__(self) -> HelloServer:
        here = Path(__file__).resolve()
        self.process = subprocess.Popen(
            ["taskset", "-c", self.cpu, sys.executable, str(here), "--port", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            # granian's worker imports "asgi_hello:app" on its own: it must find this directory
            env={**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (str(here.parent), os.environ.get("PYTHONPATH"))))},
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError("the raw ASGI server exited early")
            try:
                with urllib.request.urlopen(self.url("/"), timeout=1) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.05)
        self.__exit__()
        raise RuntimeError("the raw ASGI server did not answer within 30 s")

    def __exit__(self, *exc: object) -> None:
        if self.process is None:
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(self.process.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.process.wait(10)
                break
            except subprocess.TimeoutExpired:
                continue
        try:
            os.killpg(self.process.pid, signal.SIGKILL)  # a worker left behind
        except ProcessLookupError:
            pass


def main() -> None:
    from granian.constants import HTTPModes, Interfaces
    from granian.server import MPServer

    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--port", type=int, required=True)
    args = p.parse_args()
    MPServer(
        target="asgi_hello:app",
        interface=Interfaces.ASGI,
        address="127.0.0.1",
        port=args.port,
        workers=1,
        http=HTTPModes.http1,
        log_enabled=False,
    ).serve()


if __name__ == "__main__":
    main()
